"""Events of the projects service: clients (the tenants) and their projects.

Every event carries the aggregate ``version`` after the change, so a consumer can drop a stale or
reordered event by comparing versions. The envelope's ``tenant`` is the client id and its ``subject``
the id of the client or project the event is about. Contact details and free-form metadata of clients
stay in the projects service: events name what changed, not personal data.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from shared.events.catalog import Event, register

__all__ = [
    "ClientArchived",
    "ClientCreated",
    "ClientDeleted",
    "ClientUpdated",
    "ProjectCreated",
    "ProjectDeleted",
    "ProjectStatusChanged",
    "ProjectUpdated",
]

ClientStatus = Literal["active", "archived"]
ProjectKind = Literal["greenfield", "brownfield"]
ProjectStatus = Literal["active", "paused", "completed", "archived"]


@register
class ClientCreated(Event):
    """A client (tenant) was created by a platform administrator."""

    event_type: ClassVar[str] = "baton.projects.client.created.v1"
    client_id: UUID
    name: str
    slug: str
    status: ClientStatus
    version: int = Field(ge=1)


@register
class ClientUpdated(Event):
    """A client's name, slug, contact, metadata or status (restored from archived) changed.

    ``changed_fields`` names what changed; ``name``, ``slug`` and ``status`` are the values after it.
    """

    event_type: ClassVar[str] = "baton.projects.client.updated.v1"
    client_id: UUID
    changed_fields: list[str]
    name: str
    slug: str
    status: ClientStatus
    version: int = Field(ge=1)


@register
class ClientArchived(Event):
    """A client was archived: it stays readable, but no project can be added to it."""

    event_type: ClassVar[str] = "baton.projects.client.archived.v1"
    client_id: UUID
    version: int = Field(ge=1)


@register
class ClientDeleted(Event):
    """A client was deleted (soft). Each of its live projects gets its own ``project.deleted`` with
    ``reason="client_deleted"`` in the same transaction; other services drop the tenant's data."""

    event_type: ClassVar[str] = "baton.projects.client.deleted.v1"
    client_id: UUID
    version: int = Field(ge=1)


@register
class ProjectCreated(Event):
    """A project was created. The workflows service starts its BMAD workflow from this event:
    ``workflow_id`` when set (an explicit choice, or a ``type`` that is itself a workflow id), else the
    one it derives from ``kind`` and ``type`` (e.g. ``greenfield`` + ``fullstack``)."""

    event_type: ClassVar[str] = "baton.projects.project.created.v1"
    project_id: UUID
    client_id: UUID
    name: str
    description: str = ""
    kind: ProjectKind
    type: str
    workflow_id: str | None = None
    status: ProjectStatus = "active"
    created_by: str
    version: int = Field(ge=1)


@register
class ProjectUpdated(Event):
    """A project's name or description changed; ``changed_fields`` says which, the rest is the state after."""

    event_type: ClassVar[str] = "baton.projects.project.updated.v1"
    project_id: UUID
    client_id: UUID
    changed_fields: list[str]
    name: str
    description: str
    version: int = Field(ge=1)


@register
class ProjectStatusChanged(Event):
    """A project's status changed. ``reason`` is ``requested`` (through the API) or
    ``workflow_completed`` (its workflow finished)."""

    event_type: ClassVar[str] = "baton.projects.project.status_changed.v1"
    project_id: UUID
    client_id: UUID
    from_status: ProjectStatus
    to_status: ProjectStatus
    reason: Literal["requested", "workflow_completed"] = "requested"
    version: int = Field(ge=1)


@register
class ProjectDeleted(Event):
    """A project was deleted (soft): through the API (``requested``) or with its client (``client_deleted``)."""

    event_type: ClassVar[str] = "baton.projects.project.deleted.v1"
    project_id: UUID
    client_id: UUID
    reason: Literal["requested", "client_deleted"] = "requested"
    version: int = Field(ge=1)
