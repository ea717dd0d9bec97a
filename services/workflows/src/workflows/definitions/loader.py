"""Load a BMAD workflow file (v4 orchestration or v6 track) into the normalized ``WorkflowModel``.

Pure: text in, model out, ``DefinitionError`` (every problem with its line and step) otherwise.

v4 files hold one ``workflow:`` mapping. Its steps live under ``sequence`` or under alternative keys
ending in ``_sequence``; end markers may be steps (``- step: workflow_end``, ``- workflow_end: ""``) or
top-level keys (``workflow_end:``, ``<name>_workflow_end:``), and a top-level ``{action: ...}`` mapping
between a sequence and its end marker is a trailing step of that sequence. Other top-level keys
(guidance, best practices, criteria) are kept as documentation. v6 track files (``phases:``) are read
by ``workflows.definitions.v6``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from workflows.definitions.errors import DefinitionError, Problem
from workflows.definitions.handoff import match_prompts
from workflows.definitions.marked_yaml import MarkedList, MarkedMap, YamlProblem, line_of, parse, plain
from workflows.definitions.model import Sequence, Step, StepKind, WorkflowModel
from workflows.definitions.v4_steps import StepParser, derived_id
from workflows.definitions.vocabulary import canonical_role

__all__ = ["MAX_SOURCE_BYTES", "content_hash", "finish_sequence", "load_definition"]

MAX_SOURCE_BYTES = 512 * 1024
_KNOWN_TOP = frozenset(
    {
        "id",
        "name",
        "description",
        "type",
        "project_types",
        "flow_diagram",
        "decision_guidance",
        "handoff_prompts",
    }
)


def content_hash(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_definition(text: str, *, role_of: Callable[[str], str | None] = canonical_role) -> WorkflowModel:
    """Parse and normalize; ``role_of`` maps an agent name to a canonical role (None: unknown)."""
    if len(text.encode("utf-8")) > MAX_SOURCE_BYTES:
        raise DefinitionError([Problem(f"the file is larger than {MAX_SOURCE_BYTES} bytes")])
    try:
        doc = parse(text)
    except YamlProblem as exc:
        raise DefinitionError([Problem(exc.reason, exc.line)]) from None
    if not isinstance(doc, dict):
        raise DefinitionError([Problem("the file must be a YAML mapping with 'workflow:' or 'phases:'", 1)])
    problems: list[Problem] = []
    if "workflow" in doc:
        model = _load_v4(doc, problems, role_of)
    elif "phases" in doc:
        from workflows.definitions.v6 import load_track

        model = load_track(doc, problems, role_of)
    else:
        raise DefinitionError(
            [Problem("unknown file format: expected a 'workflow:' (v4) or a 'phases:' (v6 track) key", 1)]
        )
    if problems or model is None:
        raise DefinitionError(problems or [Problem("the file could not be loaded")])
    return model


def _top_line(doc: MarkedMap, key: str) -> int | None:
    return doc.key_lines.get(key) if isinstance(doc, MarkedMap) else None


def _load_v4(
    root: dict[str, Any], problems: list[Problem], role_of: Callable[[str], str | None]
) -> WorkflowModel | None:
    wf = root["workflow"]
    if not isinstance(wf, dict):
        problems.append(Problem("'workflow' must be a mapping", _top_line(root, "workflow")))  # type: ignore[arg-type]
        return None
    wf_id = wf.get("id")
    if not isinstance(wf_id, str) or not wf_id.strip():
        problems.append(Problem("'workflow.id' is required and must be text", line_of(wf)))
        return None
    lines: dict[str, int] = wf.key_lines if isinstance(wf, MarkedMap) else {}

    seq_keys = [k for k in wf if isinstance(k, str) and (k == "sequence" or k.endswith("_sequence"))]
    seq_keys = [k for k in seq_keys if k == "sequence" or isinstance(wf[k], list)]
    if not seq_keys:
        problems.append(Problem("no 'sequence' (or '<name>_sequence') list of steps", line_of(wf)))
        return None
    end_keys = [k for k in wf if isinstance(k, str) and (k == "workflow_end" or k.endswith("_workflow_end"))]
    pairing = _pair_ends(seq_keys, end_keys, lines)

    # Top-level {action: ...} mappings that sit between a sequence and its end marker are its last steps.
    trailing: dict[str, list[tuple[str, Any]]] = {k: [] for k in seq_keys}
    order = sorted((k for k in wf if isinstance(k, str)), key=lambda k: lines.get(k, 0))
    open_seq: str | None = None
    for key in order:
        if key in seq_keys:
            open_seq = key
        elif key in end_keys:
            if open_seq is not None and pairing.get(key) == open_seq:
                open_seq = None
        elif (
            open_seq is not None
            and key not in _KNOWN_TOP
            and isinstance(wf[key], dict)
            and "action" in wf[key]
            and any(pairing.get(e) == open_seq for e in end_keys)
        ):
            trailing[open_seq].append((key, wf[key]))

    used = {key for items in trailing.values() for key, _ in items}
    sequences: list[Sequence] = []
    for key in seq_keys:
        raw = wf[key]
        if not isinstance(raw, list):
            problems.append(Problem(f"'{key}' must be a list of steps", lines.get(key)))
            continue
        items: list[tuple[Any, int | None]] = list(
            zip(raw, raw.item_lines if isinstance(raw, MarkedList) else [None] * len(raw), strict=True)
        )
        items += [({name: value}, line_of(value) or lines.get(name)) for name, value in trailing[key]]
        end = next((e for e in end_keys if pairing.get(e) == key), None)
        if end is not None:
            items.append(({end: wf[end] if wf[end] is not None else ""}, lines.get(end)))
        name = "main" if key == "sequence" else key.removesuffix("_sequence")
        seq = _parse_sequence(name, items, lines.get(key), problems, role_of)
        if seq is not None:
            sequences.append(seq)
    if not sequences:
        if not problems:
            problems.append(Problem("no usable sequence of steps", line_of(wf)))
        return None

    prompts_raw = wf.get("handoff_prompts") or {}
    prompts: dict[str, str] = {}
    if isinstance(prompts_raw, dict):
        prompts = {str(k): str(v).strip() for k, v in prompts_raw.items() if v is not None}
    else:
        problems.append(Problem("'handoff_prompts' must be a mapping", lines.get("handoff_prompts")))
    all_steps = tuple(s for seq in sequences for s in seq.steps)
    handoffs, assigned, completion = match_prompts(prompts, all_steps)
    sequences = [
        seq.model_copy(
            update={
                "steps": tuple(s.model_copy(update={"handoff_prompt": assigned.get(s.id)}) for s in seq.steps)
            }
        )
        for seq in sequences
    ]
    project_types = wf.get("project_types") or []
    if isinstance(project_types, str):
        project_types = [project_types]
    documentation = {
        k: v
        for k, v in wf.items()
        if isinstance(k, str)
        and k not in _KNOWN_TOP
        and k not in seq_keys
        and k not in end_keys
        and k not in used
    }
    flow = wf.get("flow_diagram")
    return WorkflowModel(
        id=wf_id.strip(),
        name=str(wf.get("name") or wf_id).strip(),
        description=_opt_text(wf.get("description")),
        format="bmad-v4",
        type=_opt_text(wf.get("type")),
        project_types=tuple(str(p) for p in project_types if p is not None)
        if isinstance(project_types, list)
        else (),
        sequences=tuple(sequences),
        flow_diagram=flow if isinstance(flow, str) else None,
        decision_guidance=plain(wf.get("decision_guidance")),
        handoff_prompts=handoffs,
        completion_prompt=completion,
        documentation=plain(documentation),
    )


def _pair_ends(seq_keys: list[str], end_keys: list[str], lines: dict[str, int]) -> dict[str, str]:
    """End marker → the sequence it ends: by name first, then the main one, then the nearest before it."""
    pairing: dict[str, str] = {}
    for end in end_keys:
        if end != "workflow_end":
            name = end.removesuffix("_workflow_end")
            if f"{name}_sequence" in seq_keys:
                pairing[end] = f"{name}_sequence"
    for end in end_keys:
        if end in pairing:
            continue
        taken = set(pairing.values())
        if "sequence" in seq_keys and "sequence" not in taken:
            pairing[end] = "sequence"
            continue
        before = [s for s in seq_keys if s not in taken and lines.get(s, 0) < lines.get(end, 0)]
        candidates = before or [s for s in seq_keys if s not in taken]
        if candidates:
            pairing[end] = max(candidates, key=lambda s: lines.get(s, 0)) if before else candidates[0]
    return pairing


def _parse_sequence(
    name: str,
    items: list[tuple[Any, int | None]],
    line: int | None,
    problems: list[Problem],
    role_of: Callable[[str], str | None],
) -> Sequence | None:
    parser = StepParser(problems, role_of)
    steps: list[Step] = []
    for raw, item_line in items:
        step = parser.parse(raw, item_line, len(steps))
        if step is not None:
            steps.append(step)
    return finish_sequence(name, steps, line, problems)


def finish_sequence(
    name: str, steps: list[Step], line: int | None, problems: list[Problem]
) -> Sequence | None:
    """Ids, the end step, the story loop, fix loops, per-epic steps, ``various`` roles, phases."""
    if not steps:
        problems.append(Problem(f"sequence '{name}' has no steps", line))
        return None
    seen: set[str] = set()
    explicit = {s.id for s in steps if s.id}
    fixed: list[Step] = []
    for s in steps:
        sid = s.id
        if sid and sid in seen:
            problems.append(Problem(f"step id '{sid}' is used twice", s.line, f"step {s.index + 1}"))
        if not sid:
            base = derived_id(s)
            sid, n = base, 2
            while sid in seen or sid in explicit:
                sid, n = f"{base}_{n}", n + 1
        seen.add(sid)
        fixed.append(s.model_copy(update={"id": sid}))
    steps = fixed
    # An end step in the sequence and a top-level end marker after it are one end.
    while len(steps) > 1 and steps[-1].kind is StepKind.END and steps[-2].kind is StepKind.END:
        extra = {
            **steps[-2].extra,
            **{k: v for k, v in (("action", steps[-1].action), ("notes", steps[-1].notes)) if v},
        }
        steps = [*steps[:-2], steps[-2].model_copy(update={"extra": extra})]
    ends = [s for s in steps if s.kind is StepKind.END]
    if ends and ends[0].index != len(steps) - 1:
        after = steps[ends[0].index + 1]
        problems.append(
            Problem("a step comes after the end of the workflow", after.line, f"step {after.index + 1}")
        )
    if not ends:
        steps.append(
            Step(id="workflow_end", index=len(steps), kind=StepKind.END, name="workflow end", notes=None)
        )
    heads = [s for s in steps if s.kind is StepKind.LOOP_HEAD]
    tails = [s for s in steps if s.kind is StepKind.LOOP_TAIL]
    if len(heads) > 1:
        problems.append(
            Problem(
                "only one story cycle ('repeats') per sequence", heads[1].line, f"step {heads[1].index + 1}"
            )
        )
    if len(tails) > 1:
        problems.append(
            Problem("only one cycle end per sequence", tails[1].line, f"step {tails[1].index + 1}")
        )
    if heads and not tails:
        problems.append(
            Problem(
                f"step repeats '{heads[0].repeats}' but no repeat_development_cycle step closes the cycle",
                heads[0].line,
                f"step {heads[0].index + 1}",
            )
        )
    if tails and (not heads or tails[0].index < heads[0].index):
        problems.append(
            Problem(
                "this step closes a story cycle that no earlier 'repeats' step opened",
                tails[0].line,
                f"step {tails[0].index + 1}",
            )
        )
    head_i = heads[0].index if heads else None
    tail_i = tails[0].index if tails else None
    out: list[Step] = []
    for s in steps:
        update: dict[str, Any] = {}
        if s.any_owner:  # the owners of the documents that exist by then
            before = steps[: s.index]
            update["roles"] = tuple(
                sorted({r for b in before for ref in b.creates if ref.is_document for r in b.roles})
            )
        if head_i is not None and tail_i is not None:
            if s.index < head_i:
                update["phase"] = s.phase or "planning"
            elif s.index <= tail_i:
                update["phase"] = s.phase or "development"
            else:
                update["phase"] = s.phase or "completion"
                if s.condition and "epic" in s.condition:
                    update["per_epic"] = True
        elif s.phase is None:
            update["phase"] = (out[-1].phase if out else None) or "planning"
        prev = steps[s.index - 1] if s.index > 0 else None
        if prev is not None and s.condition and s.updates and s.kind is not StepKind.ROUTER:
            prev_names = {r.name for r in prev.updates}
            if prev.kind is StepKind.VALIDATION or (
                prev.action and "review" in prev.action and prev_names & {r.name for r in s.updates}
            ):
                update["loop_back_to"] = prev.id
        out.append(s.model_copy(update=update) if update else s)
    return Sequence(name=name, line=line, steps=tuple(out))


def _opt_text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
