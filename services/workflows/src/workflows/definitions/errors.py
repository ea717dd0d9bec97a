"""Why a workflow file was refused: each problem names its line and step when known."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DefinitionError", "Problem"]


@dataclass(frozen=True)
class Problem:
    reason: str
    line: int | None = None
    step: str | None = None  # "step 3 (pm)" or a step id

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.step:
            where.append(self.step)
        return f"{', '.join(where)}: {self.reason}" if where else self.reason

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "step": self.step, "reason": self.reason}


class DefinitionError(Exception):
    """The file cannot be loaded. ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: p.line or 0)
        super().__init__("; ".join(str(p) for p in self.problems))
