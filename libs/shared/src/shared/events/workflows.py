"""Events of the workflows service: the workflow definitions it knows, and each project's BMAD workflow
instance, its tasks and decisions.

``definition.published`` is platform-level (no tenant): the envelope's ``subject`` is the definition id.
Every other event carries ``instance_id``, ``project_id``, ``client_id`` and the instance ``version`` after the
change (a consumer drops a stale or reordered event by comparing versions). The envelope's ``tenant`` is
the client id and its ``subject`` the id of the task, decision or instance the event is about.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from shared.events.catalog import Event, register

__all__ = [
    "WorkflowCompleted",
    "WorkflowDecisionMade",
    "WorkflowDecisionRequested",
    "WorkflowDefinitionPublished",
    "WorkflowStarted",
    "WorkflowStoryStatusChanged",
    "WorkflowTaskClaimed",
    "WorkflowTaskCompleted",
    "WorkflowTaskFailed",
    "WorkflowTaskReady",
    "WorkflowTaskSkipped",
]

StoryStatus = Literal["backlog", "ready-for-dev", "in-progress", "review", "done"]


@register
class WorkflowDefinitionPublished(Event):
    """Version ``version`` of the workflow definition ``definition_id`` was stored (a built-in BMAD file or
    an admin's upload), so projects may now name it as their ``type`` or ``workflow_id``. Published once
    per stored version; a reader keeps the highest ``version`` it saw and ignores an older or repeated one.
    Definitions are never deleted, so there is no withdrawal event."""

    event_type: ClassVar[str] = "baton.workflows.definition.published.v1"
    definition_id: str = Field(min_length=1, max_length=100)
    version: int = Field(ge=1)
    name: str
    format: str


class _InstanceEvent(Event):
    instance_id: UUID
    project_id: UUID
    client_id: UUID
    version: int = Field(ge=1)


class _TaskEvent(_InstanceEvent):
    task_id: UUID
    step_id: str
    name: str
    roles: list[str] = Field(default_factory=list)
    produces_kind: str | None = None
    epic: int | None = None
    story: int | None = None
    attempt: int = Field(default=1, ge=1)


@register
class WorkflowStarted(_InstanceEvent):
    """A project's workflow instance started on ``definition_id`` at ``definition_version``."""

    event_type: ClassVar[str] = "baton.workflows.workflow.started.v1"
    definition_id: str
    definition_version: int = Field(ge=1)


@register
class WorkflowTaskReady(_TaskEvent):
    """A task's inputs exist and someone with one of ``roles`` may claim it. ``reason`` is ``lease_expired``
    when a claim ran out and the task is available again."""

    event_type: ClassVar[str] = "baton.workflows.workflow.task_ready.v1"
    optional: bool = False
    reason: str | None = None


@register
class WorkflowTaskClaimed(_TaskEvent):
    """A person or agent holds the task until ``lease_expires_at`` (renewable by claiming again)."""

    event_type: ClassVar[str] = "baton.workflows.workflow.task_claimed.v1"
    claimed_by: str
    lease_expires_at: datetime


@register
class WorkflowTaskCompleted(_TaskEvent):
    """A task was completed; ``document_id`` is the document it produced or updated, when it has one
    (``completed_by`` is ``workflows`` when an indexed document completed it)."""

    event_type: ClassVar[str] = "baton.workflows.workflow.task_completed.v1"
    completed_by: str
    document_id: UUID | None = None


@register
class WorkflowTaskSkipped(_TaskEvent):
    """An optional task was skipped."""

    event_type: ClassVar[str] = "baton.workflows.workflow.task_skipped.v1"
    skipped_by: str
    reason: str | None = None


@register
class WorkflowTaskFailed(_TaskEvent):
    """A task attempt failed; the step gets a new ready task (``attempt`` + 1)."""

    event_type: ClassVar[str] = "baton.workflows.workflow.task_failed.v1"
    failed_by: str
    reason: str | None = None


@register
class WorkflowDecisionRequested(_InstanceEvent):
    """The workflow waits for a decision: a condition token (yes/no), a router branch, another story,
    another epic. ``roles`` hints who is expected to know the answer."""

    event_type: ClassVar[str] = "baton.workflows.workflow.decision_requested.v1"
    decision_id: UUID
    kind: Literal["condition", "router", "sequence", "more_stories", "another_epic"]
    token: str
    question: str
    options: list[str]
    step_id: str | None = None
    roles: list[str] = Field(default_factory=list)
    epic: int | None = None
    story: int | None = None


@register
class WorkflowDecisionMade(_InstanceEvent):
    """A decision was answered by ``answered_by``."""

    event_type: ClassVar[str] = "baton.workflows.workflow.decision_made.v1"
    decision_id: UUID
    kind: Literal["condition", "router", "sequence", "more_stories", "another_epic"]
    token: str
    answer: str
    answered_by: str
    step_id: str | None = None


@register
class WorkflowStoryStatusChanged(_InstanceEvent):
    """A story moved in the sprint-status model (``from_status`` is None for a new story)."""

    event_type: ClassVar[str] = "baton.workflows.workflow.story_status_changed.v1"
    story_key: str
    epic: int = Field(ge=1)
    story: int = Field(ge=1)
    from_status: StoryStatus | None = None
    to_status: StoryStatus


@register
class WorkflowCompleted(_InstanceEvent):
    """The workflow ended: ``completed`` at its end step, or ``early_exit`` through a router branch that
    ends it (``route``)."""

    event_type: ClassVar[str] = "baton.workflows.workflow.completed.v1"
    definition_id: str
    outcome: Literal["completed", "early_exit"]
    route: str | None = None
