"""One v4 ``sequence`` item → a normalized ``Step``, whatever shape it was written in.

Shapes accepted: a mapping of step keys (``agent``, ``step``, ``action``, ``creates`` ...); a mapping
with one key that is the step's id (``- workflow_end: ""``, ``- project_setup_guidance: {action: ...}``);
a bare id (``- workflow_end``). Keys that are not step keys (``duration``, ``implements``) are kept in
``extra`` as documentation. Anything else is an unknown step shape and a ``Problem``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workflows.definitions.errors import Problem
from workflows.definitions.marked_yaml import MarkedMap, line_of, plain
from workflows.definitions.model import ArtifactRef, Route, Step, StepKind
from workflows.definitions.vocabulary import parse_artifacts, slug

__all__ = ["STEP_KEYS", "RoleCheck", "StepParser"]

STEP_KEYS = frozenset(
    {
        "agent",
        "step",
        "action",
        "creates",
        "updates",
        "validates",
        "requires",
        "uses",
        "condition",
        "optional",
        "optional_steps",
        "repeats",
        "routes",
        "notes",
    }
)
_IDENTIFYING = frozenset({"agent", "step", "action", "creates", "updates", "validates", "routes"})
_END_IDS = frozenset({"workflow_end", "end", "workflow_complete"})
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})

RoleCheck = Callable[[str], str | None]


def _subset(raw: dict[str, Any], keep: Callable[[str], bool]) -> MarkedMap:
    """The kept keys of a mapping, with their line marks."""
    out = MarkedMap()
    out.line = line_of(raw)
    lines = raw.key_lines if isinstance(raw, MarkedMap) else {}
    for k, v in raw.items():
        if keep(k):
            out[k] = v
            if k in lines:
                out.key_lines[k] = lines[k]
    return out


def _is_end_id(step_id: str) -> bool:
    return step_id in _END_IDS or step_id.endswith("_workflow_end")


def _is_tail_id(step_id: str | None, action: str | None) -> bool:
    return bool(
        (step_id and step_id.startswith("repeat_")) or (action and action.startswith("continue_for_all"))
    )


class StepParser:
    """Parses the items of one sequence; collects problems instead of stopping at the first."""

    def __init__(self, problems: list[Problem], role_of: RoleCheck) -> None:
        self.problems = problems
        self.role_of = role_of

    # -- entry -------------------------------------------------------------------------------------------
    def parse(self, raw: Any, line: int | None, index: int) -> Step | None:
        label = f"step {index + 1}"
        if isinstance(raw, str) and raw.strip():
            return self._build({"step": raw.strip()}, {}, line, index, label)
        if not isinstance(raw, dict):
            shape = "an empty item" if raw is None else f"a {type(raw).__name__}"
            self._problem(
                f"unknown step shape: expected a mapping of step keys or 'id: {{...}}', got {shape}",
                line,
                label,
            )
            return None
        line = line_of(raw) or line
        keys = [k for k in raw if isinstance(k, str)]
        if len(keys) != len(raw):
            self._problem("unknown step shape: step keys must be strings", line, label)
            return None
        if any(k in STEP_KEYS for k in keys):
            body = _subset(raw, lambda k: k in STEP_KEYS)
            extra = {k: v for k, v in raw.items() if k not in STEP_KEYS}
            return self._build(body, extra, line, index, label)
        if len(keys) == 1:
            return self._id_as_key(keys[0], raw[keys[0]], line, index, label)
        self._problem(
            "unknown step shape: none of the step keys "
            f"({', '.join(sorted(_IDENTIFYING))}) and more than one key ({', '.join(keys)})",
            line,
            label,
        )
        return None

    def _id_as_key(self, key: str, value: Any, line: int | None, index: int, label: str) -> Step | None:
        label = f"{label} ({key})"
        if value is None or isinstance(value, str):
            body: dict[str, Any] = {"step": key}
            if isinstance(value, str) and value.strip():
                body["notes"] = value
            return self._build(body, {}, line, index, label)
        if isinstance(value, dict):
            inner_line = line_of(value) or line
            body = _subset(value, lambda k: k in STEP_KEYS and k != "step")
            extra = {k: v for k, v in value.items() if k not in STEP_KEYS or k == "step"}
            body["step"] = key
            return self._build(body, extra, inner_line, index, label)
        self._problem(
            f"unknown step shape: '{key}:' must hold a mapping of step keys or a string, "
            f"not a {type(value).__name__}",
            line,
            label,
        )
        return None

    # -- fields ------------------------------------------------------------------------------------------
    def _problem(self, reason: str, line: int | None, label: str) -> None:
        self.problems.append(Problem(reason, line, label))

    def _line(self, body: dict[str, Any], key: str, default: int | None) -> int | None:
        if isinstance(body, MarkedMap):
            return body.key_lines.get(key, default)
        return default

    def _text(self, body: dict[str, Any], key: str, line: int | None, label: str) -> str | None:
        value = body.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self._problem(f"'{key}' must be text, not a {type(value).__name__}", line, label)
            return None
        text = str(value).strip()
        return text or None

    def _text_or_list(self, body: dict[str, Any], key: str, line: int | None, label: str) -> list[str]:
        value = body.get(key)
        if value is None or value == "":
            return []
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [v for v in value if v.strip()]
        self._problem(f"'{key}' must be a name, a list of names or a comma-separated string", line, label)
        return []

    def _artifacts(
        self, body: dict[str, Any], key: str, line: int | None, label: str
    ) -> tuple[ArtifactRef, ...]:
        values = self._text_or_list(body, key, line, label)
        return parse_artifacts(values) if values else ()

    def _flag(self, body: dict[str, Any], key: str, line: int | None, label: str) -> bool:
        value = body.get(key)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        self._problem(f"'{key}' must be true or false", line, label)
        return False

    def _roles(self, agent: str, line: int | None, label: str) -> tuple[tuple[str, ...], bool]:
        """``pm`` → (pm,); ``analyst/pm`` → either; ``various`` → decided later (owners of documents)."""
        if agent.strip().lower() == "various":
            return (), True
        roles: list[str] = []
        for part in agent.split("/"):
            if not part.strip():
                continue
            role = self.role_of(part)
            if role is None:
                self._problem(f"unknown agent role '{part.strip()}'", line, label)
                continue
            if role not in roles:
                roles.append(role)
        return tuple(roles), False

    def _routes(self, body: dict[str, Any], line: int | None, label: str) -> tuple[Route, ...]:
        raw = body.get("routes")
        if not isinstance(raw, dict) or not raw:
            self._problem("'routes' must be a non-empty mapping of branch name → branch", line, label)
            return ()
        out: list[Route] = []
        for name, branch in raw.items():
            bline = raw.key_lines.get(name, line) if isinstance(raw, MarkedMap) else line
            blabel = f"{label}, route '{name}'"
            if not isinstance(name, str | int) or isinstance(name, bool):
                self._problem("a route name must be text", bline, blabel)
                continue
            if isinstance(branch, str):
                branch = (
                    {"continue": branch}
                    if branch.strip() in ("continue", "to_next_step")
                    else {"notes": branch}
                )
            if not isinstance(branch, dict) or not branch:
                self._problem(
                    "a route must be a mapping (agent/uses/notes or continue: to_next_step)", bline, blabel
                )
                continue
            agent = self._text(branch, "agent", bline, blabel)
            roles: tuple[str, ...] = ()
            if agent:
                roles, _ = self._roles(agent, bline, blabel)
            cont = branch.get("continue")
            continues = cont is True or (isinstance(cont, str) and cont.strip().lower() not in _FALSE)
            ends = bool(branch.get("end") or branch.get("exit")) or not continues
            known = {"agent", "uses", "notes", "continue", "end", "exit"}
            out.append(
                Route(
                    name=str(name),
                    agent=agent,
                    roles=roles,
                    uses=self._text(branch, "uses", bline, blabel),
                    notes=self._text(branch, "notes", bline, blabel),
                    continues=continues,
                    ends_workflow=ends and not continues,
                    extra=plain({k: v for k, v in branch.items() if k not in known}),
                )
            )
        return tuple(out)

    # -- the step ----------------------------------------------------------------------------------------
    def _build(
        self, body: dict[str, Any], extra: dict[str, Any], line: int | None, index: int, label: str
    ) -> Step | None:
        if not any(k in body for k in _IDENTIFYING):
            self._problem(
                "unknown step shape: a step needs one of " + ", ".join(sorted(_IDENTIFYING)), line, label
            )
            return None
        agent = self._text(body, "agent", self._line(body, "agent", line), label)
        step_id = self._text(body, "step", line, label)
        if agent:
            label = f"{label} ({agent})" if "(" not in label else label
        action = self._text(body, "action", line, label)
        roles, any_owner = (
            self._roles(agent, self._line(body, "agent", line), label) if agent else ((), False)
        )
        creates = self._artifacts(body, "creates", self._line(body, "creates", line), label)
        updates = self._artifacts(body, "updates", self._line(body, "updates", line), label)
        validates = self._artifacts(body, "validates", self._line(body, "validates", line), label)
        requires = self._artifacts(body, "requires", self._line(body, "requires", line), label)
        uses_list = self._text_or_list(body, "uses", line, label)
        condition = self._text(body, "condition", self._line(body, "condition", line), label)
        repeats = self._text(body, "repeats", line, label)
        optional = self._flag(body, "optional", line, label)
        optional_steps = tuple(self._text_or_list(body, "optional_steps", line, label))
        notes = body.get("notes")
        notes = str(notes).strip() if notes is not None and str(notes).strip() else None
        routes = self._routes(body, self._line(body, "routes", line), label) if "routes" in body else ()

        if routes:
            kind = StepKind.ROUTER
        elif step_id and _is_end_id(step_id):
            kind = StepKind.END
        elif repeats:
            kind = StepKind.LOOP_HEAD
        elif _is_tail_id(step_id, action):
            kind = StepKind.LOOP_TAIL
        elif creates:
            kind = StepKind.ARTIFACT
        elif validates:
            kind = StepKind.VALIDATION
        elif updates:
            kind = StepKind.UPDATE
        elif agent:
            kind = StepKind.ACTION
        else:
            kind = StepKind.GUIDANCE
        if condition and kind is StepKind.ROUTER:
            extra = {**extra, "router_question": condition}
        return Step(
            id=step_id or "",
            index=index,
            line=line,
            kind=kind,
            name=_step_name(step_id, agent, action, creates, updates, validates),
            agent=agent,
            roles=roles,
            any_owner=any_owner,
            action=action,
            creates=creates,
            updates=updates,
            validates=validates,
            requires=requires,
            uses=", ".join(uses_list) if uses_list else None,
            condition=None if kind is StepKind.ROUTER else condition,
            optional=optional,
            optional_steps=optional_steps,
            repeats=repeats,
            routes=routes,
            notes=notes,
            extra=plain(dict(extra)),
        )


def derived_id(step: Step) -> str:
    """An id for a step written without one: its action, else verb + artifact."""
    if step.action:
        return slug(step.action)[:60] or "step"
    for verb, refs in (("create", step.creates), ("validate", step.validates), ("update", step.updates)):
        if refs:
            return f"{verb}_{slug(refs[0].name.removesuffix('.md'))}"[:60]
    return slug(step.agent or "step")


def _step_name(
    step_id: str | None,
    agent: str | None,
    action: str | None,
    creates: tuple[ArtifactRef, ...],
    updates: tuple[ArtifactRef, ...],
    validates: tuple[ArtifactRef, ...],
) -> str:
    what = []
    for verb, refs in (("create", creates), ("update", updates), ("validate", validates)):
        if refs:
            what.append(f"{verb} {', '.join(r.name for r in refs)}")
    text = "; ".join(what) or (action or step_id or "step").replace("_", " ")
    if action and what and action.replace("_", " ") not in text:
        text = f"{action.replace('_', ' ')}: {text}"
    return f"{agent}: {text}" if agent else text
