"""Match ``handoff_prompts`` to steps, loosely.

BMAD files key their prompts ``<from>_to_<to>`` (``analyst_to_pm``, ``ux_to_architect``) or by topic
(``po_issues``, ``architect_review``, ``complete``); the keys are not step ids. A prompt fits the step it
hands work to: for ``a_to_b`` keys the step's roles must match ``b`` and the previous step's roles ``a``
(or ``a`` is a generic word such as ``updated``); topic keys fit the step whose words (roles, id,
action, condition, artifacts) share the most words with the key, two at least. ``complete`` is the
completion message. A prompt that fits nothing stays in the definition, unlinked.
"""

from __future__ import annotations

import re

from workflows.definitions.model import HandoffPrompt, Step, StepKind

__all__ = ["match_prompts"]

_WORD = re.compile(r"[a-z0-9]+")
_GENERIC_FROM = frozenset({"updated", "all", "any", "docs", "documents", "planning"})
_ROLE_WORDS: dict[str, frozenset[str]] = {
    "ux-expert": frozenset({"ux", "expert", "designer", "ui", "design"}),
    "analyst": frozenset({"analyst", "analysis", "brief"}),
    "pm": frozenset({"pm", "prd", "product"}),
    "architect": frozenset({"architect", "architecture"}),
    "po": frozenset({"po", "owner", "validation"}),
    "sm": frozenset({"sm", "story", "scrum"}),
    "dev": frozenset({"dev", "developer", "implementation"}),
    "qa": frozenset({"qa", "review", "test"}),
}
_COMPLETE_KEYS = frozenset({"complete", "completed", "workflow_complete", "done"})


def _words(text: str | None) -> set[str]:
    return set(_WORD.findall(text.lower())) if text else set()


def _role_words(step: Step) -> set[str]:
    out: set[str] = set()
    for role in step.roles:
        out |= {role} | _ROLE_WORDS.get(role, frozenset())
    if step.agent:
        out |= _words(step.agent)
    return out


def _step_words(step: Step) -> set[str]:
    out = _role_words(step) | _words(step.id) | _words(step.action) | _words(step.condition)
    for ref in (*step.creates, *step.updates, *step.validates):
        out |= _words(ref.name.removesuffix(".md"))
    return out - {"md", "the", "and", "of"}


def match_prompts(
    prompts: dict[str, str], steps: tuple[Step, ...]
) -> tuple[tuple[HandoffPrompt, ...], dict[str, str], str | None]:
    """→ (prompts with the steps each fits, step id → prompt key, the completion prompt text)."""
    completion: str | None = None
    workable = [s for s in steps if s.kind not in (StepKind.END, StepKind.LOOP_TAIL)]
    best_for_key: dict[str, tuple[int, int]] = {}  # key → (score, position)
    for key in prompts:
        lowered = key.lower()
        if lowered in _COMPLETE_KEYS:
            completion = completion or prompts[key]
            continue
        for pos, step in enumerate(workable):
            score = _score(lowered, step, workable[pos - 1] if pos > 0 else None)
            if score > best_for_key.get(key, (0, 0))[0]:
                best_for_key[key] = (score, pos)
    assigned: dict[str, str] = {}
    best_score: dict[str, int] = {}
    for key, (score, pos) in best_for_key.items():
        step_id = workable[pos].id
        if score > best_score.get(step_id, 0):
            best_score[step_id] = score
            assigned[step_id] = key
    linked: dict[str, list[str]] = {k: [] for k in prompts}
    for step_id, key in assigned.items():
        linked[key].append(step_id)
    out = tuple(HandoffPrompt(key=k, text=v, steps=tuple(linked[k])) for k, v in prompts.items())
    return out, assigned, completion


def _score(key: str, step: Step, prev: Step | None) -> int:
    if "_to_" in key:
        src, _, dst = key.partition("_to_")
        dst_words, src_words = _words(dst), _words(src)
        if not dst_words & _role_words(step):
            return 0
        if src_words <= _GENERIC_FROM:
            return 2
        if prev is not None and src_words & (_role_words(prev) | _step_words(prev)):
            return 3
        return 0
    overlap = _words(key) & _step_words(step)
    return len(overlap) if len(overlap) >= 2 else 0
