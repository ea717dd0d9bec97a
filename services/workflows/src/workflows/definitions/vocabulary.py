"""The words BMAD files use for agents and artifacts, mapped to Baton's roles and document kinds.

Roles: the canonical BMAD roles an agent token can carry (``bmad_roles``), plus the other names the
method's releases use for the same agents (v6 says ``ux-designer`` and ``tea`` where v4 says ``ux-expert``
and ``qa``). Artifacts: a logical name (``fullstack-architecture.md``) maps to a document kind
(``architecture``); snake_case names (``sharded_docs``) are pseudo-artifacts that only mark progress.
"""

from __future__ import annotations

import re

from workflows.definitions.model import ArtifactRef

__all__ = [
    "CANONICAL_ROLES",
    "ROLE_ALIASES",
    "artifact_kind",
    "canonical_role",
    "parse_artifacts",
    "slug",
]

CANONICAL_ROLES = frozenset({"analyst", "pm", "architect", "po", "sm", "dev", "qa", "ux-expert"})

ROLE_ALIASES: dict[str, str] = {
    "ux-designer": "ux-expert",
    "ux": "ux-expert",
    "ux-design-expert": "ux-expert",
    "tea": "qa",
    "test-architect": "qa",
    "product-manager": "pm",
    "product-owner": "po",
    "scrum-master": "sm",
    "developer": "dev",
    "business-analyst": "analyst",
    "solution-architect": "architect",
}

_KIND_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), k)
    for p, k in (
        (r"retrospective", "epic-retrospective"),
        (r"sprint[-_]?status|sprint[-_]?plan", "sprint-status"),
        (r"qa[-_]?gate", "qa-gate"),
        (r"(front[-_]?end|ui)[-_]architecture", "ui-architecture"),
        (r"architecture", "architecture"),
        (r"(front[-_]?end|ui|ux)[-_]?spec|ux[-_]design", "front-end-spec"),
        (r"(^|[-_])brief$", "project-brief"),
        (r"(^|[-_])prd$", "prd"),
        (r"(^|[-_])stor(y|ies)$", "story"),
    )
)
_DOC_EXTENSIONS = (".md", ".yaml", ".yml", ".txt")
_PSEUDO = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)+$")  # sharded_docs, all_artifacts_in_project, v0_prompt
_REMARK = re.compile(r"^(?P<name>[^()]*?)\s*\((?P<remark>[^()]*)\)\s*$")


def canonical_role(agent: str) -> str | None:
    """The canonical role for an agent id as written, or None when it is not one Baton knows."""
    name = agent.strip().lower().replace("_", "-").replace(" ", "-")
    if name in CANONICAL_ROLES:
        return name
    return ROLE_ALIASES.get(name)


def slug(text: str) -> str:
    """``Create PRD (if needed)`` → ``create_prd_if_needed``: ids made from free text."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def artifact_kind(name: str) -> str | None:
    """The document kind of a logical artifact name, or None for a pseudo-artifact.

    Names with a document extension map by pattern (an unknown ``.md`` is a ``reference``); free text
    that speaks of documents (``multiple documents per the document-project template``) is a
    ``reference``; snake_case identifiers are pseudo-artifacts.
    """
    lowered = name.strip().lower()
    stem = lowered
    for ext in _DOC_EXTENSIONS:
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    is_file = stem != lowered
    if _PSEUDO.match(lowered) and not is_file:
        return None
    for pattern, kind in _KIND_RULES:
        if pattern.search(stem):
            return kind
    if is_file or "document" in lowered:
        return "reference"
    if re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", lowered):  # kebab-case without extension: a named doc
        return "reference"
    return None


def _split_commas(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_artifact(text: str) -> ArtifactRef:
    """``prd.md (if needed)`` → name ``prd.md``, kind ``prd``, remark ``if needed``."""
    text = " ".join(text.split())
    remark: str | None = None
    match = _REMARK.match(text)
    if match and match.group("name"):
        text, remark = match.group("name").strip(), match.group("remark").strip() or None
    return ArtifactRef(name=text, kind=artifact_kind(text), remark=remark)


def parse_artifacts(value: str | list[str]) -> tuple[ArtifactRef, ...]:
    """A string, a list, or a comma-separated string of artifact names, each with optional remarks."""
    items = value if isinstance(value, list) else _split_commas(value)
    out: list[ArtifactRef] = []
    for item in items:
        for part in _split_commas(item):
            out.append(parse_artifact(part))
    return tuple(out)
