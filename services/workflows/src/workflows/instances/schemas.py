"""API shapes of instances, tasks and decisions (read from the engine's own records)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from shared.http import JSON_INTEGER

__all__ = [
    "AnswerBody",
    "ClaimBody",
    "CompleteBody",
    "DecisionRead",
    "InstanceRead",
    "ReasonBody",
    "StepRead",
    "StoryRead",
    "TaskRead",
]


class TaskRead(BaseModel):
    id: uuid.UUID
    instance_id: uuid.UUID
    project_id: uuid.UUID
    client_id: uuid.UUID
    step_id: str
    route: str | None = None
    name: str
    kind: str
    roles: list[str]
    state: str = Field(
        description="pending | ready | claimed | completed | skipped | failed (an expired claim reads ready)"
    )
    optional: bool
    requires: list[str]
    missing: list[str]
    produces: str | None
    produces_kind: str | None
    update_kinds: list[str]
    epic: int | None
    story: int | None
    visit: int
    attempt: int
    notes: str | None
    uses: str | None
    handoff_prompt: str | None
    claimed_by: str | None
    lease_expires_at: datetime | None
    document_id: str | None
    completed_by: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime


class DecisionRead(BaseModel):
    id: uuid.UUID
    instance_id: uuid.UUID
    project_id: uuid.UUID
    client_id: uuid.UUID
    kind: str
    token: str
    question: str
    options: list[str]
    step_id: str | None
    roles: list[str]
    epic: int | None
    story: int | None
    state: str
    answer: str | None
    detail: dict[str, Any]
    answered_by: str | None
    answered_at: datetime | None
    created_at: datetime


class StepRead(BaseModel):
    id: str
    name: str
    kind: str
    phase: str | None
    roles: list[str]
    condition: str | None
    optional: bool
    produces_kind: str | None
    state: str = Field(
        description="not_reached | waiting_decision | pending | ready | claimed | completed | skipped"
    )
    visits: int


class StoryRead(BaseModel):
    key: str
    epic: int
    number: int
    status: str
    document_id: str | None


class InstanceRead(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID
    client_id: uuid.UUID
    project_name: str
    definition_id: str
    definition_version: int
    sequence: str | None
    status: str
    outcome: str | None
    current_phase: str | None
    current_step: str | None
    version: int
    steps: list[StepRead]
    open_tasks: list[TaskRead]
    open_decisions: list[DecisionRead]
    stories: list[StoryRead]
    history: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class ClaimBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lease_seconds: Annotated[int, Field(ge=1, le=604_800), JSON_INTEGER] | None = None


# Text kept in the instance's JSONB state: no NUL (Postgres cannot hold ``\u0000`` there).
_TEXT = r"^[^\x00]*$"


class CompleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    document_id: uuid.UUID | None = None
    story_title: str | None = Field(default=None, min_length=1, max_length=200, pattern=_TEXT)


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=2000, pattern=_TEXT)


class AnswerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: str = Field(min_length=1, max_length=100, pattern=_TEXT)
    flagged_documents: list[Annotated[str, Field(max_length=200, pattern=_TEXT)]] | None = Field(
        default=None, max_length=20
    )
    comment: str | None = Field(default=None, max_length=2000, pattern=_TEXT)
