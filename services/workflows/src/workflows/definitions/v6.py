"""v6 track files: ``phases:`` each with ``workflows:`` entries that are required, optional or
conditional (a token such as ``if_has_ui``), each done by an ``agent``.

Each entry becomes one step, in file order. An entry produces the document its id names
(``prd`` → prd, ``create-ux-design`` → front-end-spec, ``sprint-planning`` → sprint-status ...); a
readiness/validation entry is a gate; a phase's own ``conditional`` is asked once for the whole phase
(``phase_condition``), and entries of an ``optional`` phase are optional unless marked required.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workflows.definitions.errors import Problem
from workflows.definitions.loader import finish_sequence
from workflows.definitions.marked_yaml import MarkedList, MarkedMap, line_of, plain
from workflows.definitions.model import ArtifactRef, Step, StepKind, WorkflowModel
from workflows.definitions.vocabulary import artifact_kind, slug

__all__ = ["load_track"]

_ENTRY_KEYS = frozenset({"id", "agent", "required", "optional", "conditional", "note", "output"})
_PHASE_KEYS = frozenset({"phase", "name", "optional", "required", "conditional", "note", "workflows"})
_GATE_WORDS = ("readiness", "validate", "check", "review", "gate")


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "on", "1")
    return value is True


def _kind_for(entry_id: str) -> str:
    if "epic" in entry_id:  # epics-and-stories: the epic breakdown, a reference for story creation
        return "reference"
    return artifact_kind(entry_id) or "reference"


def load_track(
    doc: dict[str, Any], problems: list[Problem], role_of: Callable[[str], str | None]
) -> WorkflowModel | None:
    lines: dict[str, int] = doc.key_lines if isinstance(doc, MarkedMap) else {}
    track = doc.get("track")
    field = doc.get("field_type")
    explicit = doc.get("id")
    if isinstance(explicit, str) and explicit.strip():
        wf_id = explicit.strip()
    elif isinstance(track, str) and isinstance(field, str) and track.strip() and field.strip():
        wf_id = f"{slug(track).replace('_', '-')}-{slug(field).replace('_', '-')}"
    else:
        problems.append(Problem("a track needs 'id', or 'track' and 'field_type', to name it", 1))
        return None
    phases = doc["phases"]
    if not isinstance(phases, list) or not phases:
        problems.append(Problem("'phases' must be a non-empty list", lines.get("phases")))
        return None
    steps: list[Step] = []
    item_lines = phases.item_lines if isinstance(phases, MarkedList) else [None] * len(phases)
    for p_index, (phase, p_line) in enumerate(zip(phases, item_lines, strict=True)):
        label = f"phase {p_index + 1}"
        if not isinstance(phase, dict):
            problems.append(Problem("a phase must be a mapping with 'workflows'", p_line, label))
            continue
        p_line = line_of(phase) or p_line
        number = phase.get("phase", p_index)
        name = str(phase.get("name") or f"Phase {number}")
        phase_label = f"{number}: {name}"
        phase_optional = _flag(phase.get("optional")) and not _flag(phase.get("required"))
        phase_condition = phase.get("conditional")
        if phase_condition is not None and not isinstance(phase_condition, str):
            problems.append(Problem("'conditional' must be a condition token", p_line, label))
            phase_condition = None
        entries = phase.get("workflows")
        if not isinstance(entries, list) or not entries:
            problems.append(Problem("'workflows' must be a non-empty list", p_line, label))
            continue
        e_lines = entries.item_lines if isinstance(entries, MarkedList) else [None] * len(entries)
        for entry, e_line in zip(entries, e_lines, strict=True):
            step = _entry(
                entry, e_line, len(steps), phase_label, phase_optional, phase_condition, problems, role_of
            )
            if step is not None:
                steps.append(step)
    seq = finish_sequence("main", steps, lines.get("phases"), problems) if steps else None
    if seq is None:
        if not problems:
            problems.append(Problem("the track has no workflows", lines.get("phases")))
        return None
    documentation = {k: v for k, v in doc.items() if k not in ("phases", "id", "description")}
    return WorkflowModel(
        id=wf_id,
        name=str(doc.get("method_name") or wf_id) + (f" ({field})" if isinstance(field, str) else ""),
        description=str(doc["description"]).strip() if doc.get("description") else None,
        format="bmad-v6-track",
        type=field.strip() if isinstance(field, str) else None,
        project_types=(),
        sequences=(seq,),
        documentation=plain(documentation),
    )


def _entry(
    entry: Any,
    line: int | None,
    index: int,
    phase: str,
    phase_optional: bool,
    phase_condition: str | None,
    problems: list[Problem],
    role_of: Callable[[str], str | None],
) -> Step | None:
    label = f"step {index + 1}"
    if not isinstance(entry, dict):
        problems.append(
            Problem("unknown step shape: a track workflow must be a mapping with 'id'", line, label)
        )
        return None
    line = line_of(entry) or line
    entry_id = entry.get("id")
    if not isinstance(entry_id, str) or not entry_id.strip():
        problems.append(Problem("a track workflow needs an 'id'", line, label))
        return None
    entry_id = entry_id.strip()
    label = f"{label} ({entry_id})"
    agent = entry.get("agent")
    roles: tuple[str, ...] = ()
    if agent is not None:
        if not isinstance(agent, str):
            problems.append(Problem("'agent' must be text", line, label))
            agent = None
        else:
            role = role_of(agent)
            if role is None:
                problems.append(Problem(f"unknown agent role '{agent}'", line, label))
            else:
                roles = (role,)
    condition = entry.get("conditional")
    if condition is not None and not isinstance(condition, str):
        problems.append(Problem("'conditional' must be a condition token", line, label))
        condition = None
    required = _flag(entry.get("required"))
    optional = _flag(entry.get("optional")) or (phase_optional and not required)
    output = entry.get("output")
    gate = any(w in entry_id for w in _GATE_WORDS)
    ref = ArtifactRef(name=entry_id, kind=_kind_for(entry_id), remark=str(output) if output else None)
    note = entry.get("note")
    return Step(
        id=slug(entry_id),
        index=index,
        line=line,
        kind=StepKind.VALIDATION if gate else StepKind.ARTIFACT,
        name=f"{agent}: {entry_id}" if agent else entry_id,
        agent=agent,
        roles=roles,
        action=entry_id,
        creates=() if gate else (ref,),
        validates=(ArtifactRef(name="all_artifacts"),) if gate else (),
        condition=condition.strip() if condition else None,
        phase_condition=phase_condition.strip() if phase_condition else None,
        optional=optional,
        notes=str(note).strip() if note else None,
        phase=phase,
        extra=plain({k: v for k, v in entry.items() if k not in _ENTRY_KEYS}),
    )
