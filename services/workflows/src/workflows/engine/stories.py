"""Story progress in the v6 sprint-status model, exported as the ``sprint-status.yaml`` BMAD tools read.

``development_status`` lists, per epic: ``epic-N`` (backlog → in-progress → done), its stories
``N-M-slug`` (backlog → ready-for-dev → in-progress → review → done) and ``epic-N-retrospective``
(optional → done), in that order, exactly like the method's template.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import yaml

from workflows.engine.state import InstanceState

__all__ = ["render_yaml", "slugify", "sprint_status"]

_HEADER = """\
# generated: {generated}
# project: {project}
# project_key: {project_key}
# tracking_system: {tracking_system}
# story_location: {story_location}

# STATUS DEFINITIONS:
# ==================
# Epic Status:
#   - backlog: Epic not yet started
#   - in-progress: Epic actively being worked on
#   - done: All stories in epic completed
#
# Story Status:
#   - backlog: Story only exists in epic file
#   - ready-for-dev: Story file created, ready for development
#   - in-progress: Developer actively working on implementation
#   - review: Implementation complete, ready for review
#   - done: Story completed
#
# Retrospective Status:
#   - optional: Can be completed but not required
#   - done: Retrospective has been completed

"""


def slugify(title: str) -> str:
    """``User Authentication!`` → ``user-authentication`` (at most 60 characters)."""
    text = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return text[:60].rstrip("-") or "story"


def sprint_status(
    state: InstanceState,
    *,
    project: str,
    generated: datetime,
    project_key: str = "NOKEY",
    tracking_system: str = "file-system",
    story_location: str = "docs/stories",
) -> dict[str, Any]:
    development: dict[str, str] = {}
    for epic in sorted(state.epics, key=lambda e: e.number):
        development[f"epic-{epic.number}"] = epic.status
        for story in sorted((s for s in state.stories if s.epic == epic.number), key=lambda s: s.number):
            development[story.key] = story.status
        development[f"epic-{epic.number}-retrospective"] = epic.retrospective
    return {
        "generated": generated.strftime("%Y-%m-%d %H:%M"),
        "project": project,
        "project_key": project_key,
        "tracking_system": tracking_system,
        "story_location": story_location,
        "development_status": development,
    }


def render_yaml(status: dict[str, Any]) -> str:
    """The file as BMAD writes it: a commented header, the fields, then ``development_status``."""
    header = _HEADER.format(
        **{k: status[k] for k in ("generated", "project", "project_key", "tracking_system", "story_location")}
    )
    fields = {k: v for k, v in status.items() if k != "development_status"}
    body = str(yaml.safe_dump(fields, sort_keys=False, allow_unicode=True, default_flow_style=False))
    lines = ["development_status:"]
    previous_epic: str | None = None
    for key, value in status["development_status"].items():
        epic = key.split("-")[1] if key.startswith("epic-") and not key.endswith("-retrospective") else None
        if epic is not None and previous_epic is not None:
            lines.append("")
        if epic is not None:
            previous_epic = epic
        lines.append(f"  {key}: {value}")
    if len(lines) == 1:
        lines[0] = "development_status: {}"
    return header + body + "\n" + "\n".join(lines) + "\n"
