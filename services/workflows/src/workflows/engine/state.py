"""The state of one workflow instance: plain data the engine mutates and the service stores as JSON.

Everything the engine needs to continue lives here (where the instance is in its sequence, the answers
it remembers, the story cycle's position, the project's known documents, every task and decision), so
one row read gives the engine all it needs and the task/decision tables are a queryable mirror.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "STORY_STATUSES",
    "Actor",
    "Decision",
    "DecisionKind",
    "Effect",
    "Epic",
    "HistoryEntry",
    "InstanceState",
    "KnownDocument",
    "Story",
    "Task",
    "TaskState",
]

STORY_STATUSES = ("backlog", "ready-for-dev", "in-progress", "review", "done")


class TaskState(StrEnum):
    PENDING = "pending"  # its step is reached but a required input does not exist yet
    READY = "ready"
    CLAIMED = "claimed"
    COMPLETED = "completed"
    SKIPPED = "skipped"
    FAILED = "failed"

    @property
    def is_open(self) -> bool:
        return self in (TaskState.PENDING, TaskState.READY, TaskState.CLAIMED)


class DecisionKind(StrEnum):
    CONDITION = "condition"  # a condition token: yes / no
    ROUTER = "router"  # one of a router's branches
    SEQUENCE = "sequence"  # which of a file's alternative sequences
    MORE_STORIES = "more_stories"  # another story in this epic?
    ANOTHER_EPIC = "another_epic"  # another epic?


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=False)


class Actor(_Model):
    """Who acts: a person, an agent (with the BMAD roles it may act as) or the system (events)."""

    subject: str
    kind: Literal["user", "agent", "system"] = "user"
    roles: frozenset[str] = frozenset()
    name: str | None = None


class KnownDocument(_Model):
    document_id: str
    kind: str
    version: int = 1
    title: str | None = None


class Task(_Model):
    id: str
    step_id: str
    route: str | None = None  # the router branch this task carries out
    name: str
    kind: str
    roles: list[str] = Field(default_factory=list)
    state: TaskState
    optional: bool = False
    requires: list[str] = Field(default_factory=list)  # logical names as written
    missing: list[str] = Field(default_factory=list)  # requirements not met yet (pending)
    produces: str | None = None  # logical name of the artifact it must produce
    produces_kind: str | None = None  # its document kind (None: pseudo-artifact or nothing)
    update_kinds: list[str] = Field(default_factory=list)
    baseline: dict[str, int] = Field(default_factory=dict)  # document versions when it became ready
    epic: int | None = None
    story: int | None = None
    visit: int = 1
    attempt: int = 1
    notes: str | None = None
    uses: str | None = None
    handoff_prompt: str | None = None
    claimed_by: str | None = None
    claimed_by_kind: str | None = None
    lease_expires_at: datetime | None = None
    document_id: str | None = None
    completed_by: str | None = None
    reason: str | None = None
    created_at: datetime
    updated_at: datetime

    def effective_state(self, now: datetime) -> TaskState:
        """A claim whose lease ran out counts as ready: a dead agent does not block the project."""
        if (
            self.state is TaskState.CLAIMED
            and self.lease_expires_at is not None
            and self.lease_expires_at <= now
        ):
            return TaskState.READY
        return self.state


class Decision(_Model):
    id: str
    kind: DecisionKind
    token: str
    question: str
    options: list[str]
    step_id: str | None = None
    phase_gate: bool = False  # a phase's own condition, asked once for the phase
    roles: list[str] = Field(default_factory=list)  # who is expected to know the answer (a hint)
    epic: int | None = None
    story: int | None = None
    state: Literal["open", "answered"] = "open"
    answer: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    answered_by: str | None = None
    answered_by_kind: str | None = None
    answered_at: datetime | None = None
    created_at: datetime


class Story(_Model):
    epic: int
    number: int
    slug: str = "story"
    status: str = "backlog"
    document_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.epic}-{self.number}-{self.slug}"


class Epic(_Model):
    number: int
    status: Literal["backlog", "in-progress", "done"] = "in-progress"
    retrospective: Literal["optional", "done"] = "optional"


class HistoryEntry(_Model):
    at: datetime
    event: str
    step_id: str | None = None
    task_id: str | None = None
    decision_id: str | None = None
    actor: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class InstanceState(_Model):
    status: Literal["running", "completed"] = "running"
    outcome: str | None = None  # completed | early_exit
    sequence: str | None = None
    cursor: int = 0
    stage: Literal["more_stories", "epilogue", "another_epic"] | None = None
    epilogue_index: int = 0
    tokens: dict[str, bool] = Field(default_factory=dict)
    produced: list[str] = Field(default_factory=list)
    documents: dict[str, KnownDocument] = Field(default_factory=dict)
    consumed: list[str] = Field(default_factory=list)
    epic: int = 0
    story: int = 0
    epics: list[Epic] = Field(default_factory=list)
    stories: list[Story] = Field(default_factory=list)
    tasks: dict[str, Task] = Field(default_factory=dict)
    decisions: dict[str, Decision] = Field(default_factory=dict)
    waiting_task: str | None = None
    waiting_decision: str | None = None
    visits: dict[str, int] = Field(default_factory=dict)
    step_states: dict[str, str] = Field(default_factory=dict)
    last_outcome: dict[str, str] = Field(default_factory=dict)
    flagged_roles: list[str] | None = None
    history: list[HistoryEntry] = Field(default_factory=list)

    @property
    def waiting(self) -> bool:
        return self.waiting_task is not None or self.waiting_decision is not None

    def story_of(self, epic: int | None, number: int | None) -> Story | None:
        return next((s for s in self.stories if s.epic == epic and s.number == number), None)

    def epic_of(self, number: int) -> Epic | None:
        return next((e for e in self.epics if e.number == number), None)


class Effect(_Model):
    """Something that happened, for the service to turn into an event (``type`` is the event name)."""

    type: str
    data: dict[str, Any] = Field(default_factory=dict)
