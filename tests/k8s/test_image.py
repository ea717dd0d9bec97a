"""Offline checks of the Dockerfile: what the runtime stage copies from the build stage still works where it
lands. A virtualenv cannot move: uv writes its absolute path into every launcher's shebang (``bin/uvicorn``
starts with ``#!<venv>/bin/python``), so the runtime stage must hold it at the path it was built at."""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stage:
    name: str
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    # (instruction, arguments with variables expanded, working directory at that point)
    instructions: list[tuple[str, str, str]] = field(default_factory=list)


def logical_lines(text: str) -> list[str]:
    """Instructions one per line: comments dropped, continuation lines joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    return lines


def expand(value: str, variables: dict[str, str]) -> str:
    """``$VAR`` and ``${VAR}``; a build argument without a value stays ``<VAR>``."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return variables.get(name, f"<{name}>")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, value)


def key_values(text: str) -> dict[str, str]:
    """``ENV``/``ARG`` arguments: ``K=V K2=V2`` (or the legacy ``K V``); ``ARG K`` has no value."""
    words = shlex.split(text)
    if len(words) >= 2 and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) if "=" in w else (w, "") for w in words)


def parse(text: str) -> list[Stage]:
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for line in logical_lines(text):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name))
            continue
        if not stages:
            if instruction == "ARG":
                global_args.update(key_values(rest))
            continue
        stage = stages[-1]
        variables = {**stage.args, **stage.env}
        if instruction == "ARG":
            for k, v in key_values(rest).items():
                stage.args[k] = expand(v, variables) if v else global_args.get(k, "")
                if not stage.args[k]:
                    del stage.args[k]
        elif instruction == "ENV":
            stage.env.update({k: expand(v, variables) for k, v in key_values(rest).items()})
        elif instruction == "WORKDIR":
            stage.workdir = posixpath.join(stage.workdir, expand(rest, variables))
        stage.instructions.append((instruction, expand(rest, {**stage.args, **stage.env}), stage.workdir))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return {s.name: s for s in parse((ROOT / "Dockerfile").read_text())}


def uv_sync(stage: Stage) -> tuple[str, str, list[list[str]]]:
    """The RUN that builds the virtualenv: (its working directory, the virtualenv's path, its commands)."""
    for instruction, rest, workdir in stage.instructions:
        if instruction == "RUN" and "uv sync" in rest:
            commands = [shlex.split(part) for part in re.split(r"&&|;", rest)]
            venv = stage.env.get("UV_PROJECT_ENVIRONMENT") or ".venv"
            return workdir, posixpath.join(workdir, venv), commands
    pytest.fail(f"no `uv sync` in stage {stage.name}")


def venv_copy(stages: dict[str, Stage]) -> tuple[Stage, Stage, str, str]:
    """The ``COPY --from=<stage>`` that brings a stage's virtualenv into the last stage: (from, to, src, dst)."""
    runtime = list(stages.values())[-1]
    for instruction, rest, workdir in runtime.instructions:
        if instruction != "COPY" or "--from=" not in rest:
            continue
        words = shlex.split(rest)
        source = stages[next(w.split("=", 1)[1] for w in words if w.startswith("--from="))]
        src, dst = (w for w in words if not w.startswith("--"))
        _, venv, _ = uv_sync(source)
        if posixpath.normpath(posixpath.join(source.workdir, src)) == venv:
            return source, runtime, venv, posixpath.normpath(posixpath.join(workdir, dst))
    pytest.fail("the last stage copies no virtualenv from an earlier stage")


def test_virtualenv_runs_at_the_path_it_was_built_at(stages):
    _, runtime, built_at, copied_to = venv_copy(stages)
    assert copied_to == built_at, (
        f"the virtualenv is built at {built_at} but runs at {copied_to}: its launchers' shebangs "
        f"(#!{built_at}/bin/python) point at nothing"
    )
    path = runtime.env.get("PATH", "").split(":")
    assert path[0] == f"{copied_to}/bin", f"PATH does not start with the virtualenv's bin: {path}"


def test_virtualenv_holds_the_code_not_links_to_the_build_stage(stages):
    build, _, _, _ = venv_copy(stages)
    _, _, commands = uv_sync(build)
    sync = next(c for c in commands if c[:2] == ["uv", "sync"])
    # an editable install is a .pth pointing at the build stage's sources, which the runtime stage lacks
    assert "--no-editable" in sync, sync
    assert "--locked" in sync, sync


def test_migrations_are_where_the_image_says(stages):
    build, runtime, built_at, copied_to = venv_copy(stages)
    workdir, _, commands = uv_sync(build)
    copies = [c for c in commands if c and c[0] == "cp"]
    assert copies, "the build stage copies no migrations"
    src, dst = copies[0][-2], posixpath.normpath(posixpath.join(workdir, copies[0][-1]))
    assert src == "services/<SERVICE>/migrations", src
    assert posixpath.commonpath([dst, built_at]) == built_at, f"{dst} is not inside the copied {built_at}"
    in_runtime = posixpath.join(copied_to, posixpath.relpath(dst, built_at))
    assert runtime.env["BATON_MIGRATIONS_DIR"] == in_runtime
    assert runtime.env["BATON_SERVICE"] == "<SERVICE>"


def test_operations_guide_names_what_the_image_sets(stages):
    runtime = list(stages.values())[-1]
    guide = (ROOT / "docs/operations.md").read_text()
    assert f"| `BATON_MIGRATIONS_DIR` | `{runtime.env['BATON_MIGRATIONS_DIR']}`" in guide
    assert "| `BATON_SERVICE` |" in guide
