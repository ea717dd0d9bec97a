"""API shapes of projects. Inputs forbid unknown fields; a PATCH may not send ``null`` for a field."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from projects.fields import Description, Name, Patch, WorkflowRef

__all__ = ["STANDARD_TYPES", "ProjectCreate", "ProjectKind", "ProjectRead", "ProjectStatus", "ProjectUpdate"]

ProjectKind = Literal["greenfield", "brownfield"]
ProjectStatus = Literal["active", "paused", "completed", "archived"]
# The three BMAD project types; any other ``type`` is itself a workflow id the workflows service knows.
STANDARD_TYPES = frozenset({"fullstack", "service", "ui"})


class ProjectCreate(BaseModel):
    """``type`` is ``fullstack``, ``service``, ``ui`` or a workflow id; ``workflow_id`` pins the workflow."""

    model_config = ConfigDict(extra="forbid")

    client_id: uuid.UUID
    name: Name
    description: Description = ""
    kind: ProjectKind
    type: WorkflowRef
    workflow_id: WorkflowRef | None = None

    def chosen_workflow(self) -> str | None:
        """The workflow the project must run, if the caller decided it; None lets workflows derive it."""
        if self.workflow_id is not None:
            return self.workflow_id
        return None if self.type in STANDARD_TYPES else self.type


class ProjectUpdate(Patch):
    """Only the fields sent are changed. ``client_id``, ``kind``, ``type`` and ``workflow_id`` are
    accepted here only so that sending a different value is a clear 422 instead of an unknown field."""

    name: Name | None = None
    description: Description | None = None
    status: ProjectStatus | None = None
    client_id: uuid.UUID | None = None
    kind: ProjectKind | None = None
    type: WorkflowRef | None = None
    workflow_id: WorkflowRef | None = None


class ProjectRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    client_id: uuid.UUID
    name: str
    description: str
    kind: ProjectKind
    type: str
    workflow_id: str | None
    status: ProjectStatus
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime
