"""Rules for projects. Flushes, never commits; every change writes its event to the outbox in the same
session. Object-level authorization happens here: a project (or client) the caller may not read is a
``ProjectNotFound`` (``ClientNotFound``), exactly like one that does not exist.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from projects.actors import SERVICE, actor_of
from projects.catalog.service import require_known
from projects.clients.models import Client
from projects.clients.repository import ClientRepository
from projects.constraints import flush_or_raise
from projects.errors import (
    ClientArchived,
    ClientNotFound,
    EmptyUpdate,
    FieldsNotWritable,
    InvalidStatusTransition,
    ProjectNameTaken,
    ProjectNotFound,
)
from projects.listing import Slice, after_id, slice_rows
from projects.policy import (
    can_create_project,
    can_manage_projects,
    can_read_client,
    can_read_project,
    project_fields_writable,
    readable_client_ids,
    visible_project_ids,
)
from projects.projects.models import Project
from projects.projects.repository import ProjectRepository
from projects.projects.schemas import STANDARD_TYPES, ProjectCreate, ProjectUpdate
from shared.auth import Principal
from shared.db import new_id, utcnow
from shared.errors import Forbidden
from shared.events.projects import ProjectCreated, ProjectDeleted, ProjectStatusChanged, ProjectUpdated
from shared.http import check_if_match
from shared.messaging.envelope import Actor
from shared.messaging.outbox import emit

__all__ = [
    "STATUS_TRANSITIONS",
    "complete_from_workflow",
    "create_project",
    "delete_project",
    "get_project",
    "list_projects",
    "update_project",
]

_UNIQUE = {"uq_projects_client_id_name_live": ProjectNameTaken}
# Fixed at creation: they decide which workflow runs, and that workflow has already started.
_FIXED_FIELDS = ("client_id", "kind", "type", "workflow_id")
STATUS_TRANSITIONS: dict[str, frozenset[str]] = {
    "active": frozenset({"paused", "completed", "archived"}),
    "paused": frozenset({"active", "completed", "archived"}),
    "completed": frozenset({"active", "archived"}),
    "archived": frozenset({"active"}),
}


async def _readable(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID, *, for_update: bool = False
) -> Project:
    project = await ProjectRepository(session).get_live(project_id, lock="update" if for_update else None)
    if project is None or not can_read_project(principal, project.client_id, project.id):
        raise ProjectNotFound()
    return project


def _may_create_in(client: Client | None, principal: Principal) -> Client:
    """The client a new project goes to: 404 unless the caller sees it, 403 unless it may add projects,
    409 if it is archived."""
    if client is None or not can_read_client(principal, client.id):
        raise ClientNotFound()
    if not can_create_project(principal, client.id):
        raise Forbidden("You may not create projects for this client", code="insufficient_role")
    if client.status == "archived":
        raise ClientArchived()
    return client


async def ensure_may_create(
    factory: async_sessionmaker[AsyncSession], data: ProjectCreate, *, principal: Principal
) -> None:
    """``create_project``'s refusals, checked ahead in a short session of their own: a request about to
    wait (for a workflow announcement) is refused first if it would be refused anyway."""
    async with factory() as session:
        _may_create_in(await ClientRepository(session).get_live(data.client_id), principal)


async def create_project(session: AsyncSession, data: ProjectCreate, *, principal: Principal) -> Project:
    """``client_id`` must name a client the caller can see (else 404) and may add projects to (else 403);
    a ``workflow_id``, and a ``type`` that is not a standard type, must name a workflow definition the
    workflows service announced (else 422 ``unknown_workflow``)."""
    # FOR SHARE: a concurrent delete or archive of the client waits for this insert, and vice versa,
    # so a project is never added to a client that is being deleted.
    client = _may_create_in(await ClientRepository(session).get_live(data.client_id, lock="share"), principal)
    await require_known(session, _workflow_refs({"type": data.type, "workflow_id": data.workflow_id}))
    project = Project(
        id=new_id(),
        client_id=client.id,
        name=data.name,
        description=data.description,
        kind=data.kind,
        type=data.type,
        workflow_id=data.chosen_workflow(),
        status="active",
        version=1,
        created_by=principal.subject,
    )
    session.add(project)
    await flush_or_raise(session, _UNIQUE)
    await emit(
        session,
        ProjectCreated(
            project_id=project.id,
            client_id=project.client_id,
            name=project.name,
            description=project.description,
            kind=data.kind,
            type=project.type,
            workflow_id=project.workflow_id,
            status="active",
            created_by=project.created_by,
            version=project.version,
        ),
        tenant=project.client_id,
        actor=actor_of(principal),
        resource_id=project.id,
        source_service=SERVICE,
    )
    return project


async def get_project(session: AsyncSession, project_id: uuid.UUID, *, principal: Principal) -> Project:
    return await _readable(session, principal, project_id)


async def list_projects(
    session: AsyncSession,
    *,
    principal: Principal,
    client_id: uuid.UUID | None,
    status: str | None,
    q: str | None,
    cursor: str | None,
    limit: int,
) -> Slice[Project]:
    """Projects the caller may read, newest first. Filtering by a client the caller cannot see is a 404,
    like filtering by one that does not exist (an empty list would confirm nothing, but a 404 says the
    same for both and matches the by-id answer)."""
    if client_id is not None:
        client = await ClientRepository(session).get_live(client_id)
        if client is None or not can_read_client(principal, client.id):
            raise ClientNotFound()
    rows = await ProjectRepository(session).list_page(
        readable_clients=readable_client_ids(principal),
        visible_projects=visible_project_ids(principal),
        client_id=client_id,
        status=status,
        q=q,
        after=after_id(cursor),
        limit=limit + 1,
    )
    return slice_rows(rows, limit, lambda p: p.id)


def named_workflows(data: ProjectCreate) -> set[str]:
    """The workflow definition ids a new project names (and the catalog must know)."""
    return set(_workflow_refs({"type": data.type, "workflow_id": data.workflow_id}).values())


def _workflow_refs(fields: dict[str, Any]) -> dict[str, str]:
    """The workflow ids a body names: any ``workflow_id``, and a ``type`` that is not a standard type."""
    return {
        name: value
        for name, value in fields.items()
        if name in ("type", "workflow_id")
        and value is not None
        and not (name == "type" and value in STANDARD_TYPES)
    }


async def _check_fields(
    session: AsyncSession, project: Project, sent: dict[str, Any], principal: Principal
) -> None:
    """422 for any sent field this caller may not set: every field for readers without write access, a
    ``type`` or ``workflow_id`` naming an unknown workflow, and a fixed field (``client_id``, ``kind``,
    ``type``, ``workflow_id``) sent with a different value."""
    if not project_fields_writable(principal, project.client_id):
        raise FieldsNotWritable(sent)
    await require_known(
        session, _workflow_refs({k: v for k, v in sent.items() if v != getattr(project, k, None)})
    )
    moved = [name for name in _FIXED_FIELDS if name in sent and sent[name] != getattr(project, name)]
    if moved:
        raise FieldsNotWritable(moved, "These fields are fixed when the project is created")


async def update_project(
    session: AsyncSession,
    project_id: uuid.UUID,
    data: ProjectUpdate,
    *,
    principal: Principal,
    if_match: str | None,
) -> Project:
    """Change the sent fields. Name/description changes and a status change are two versions with one
    event each (``project.updated``, then ``project.status_changed``), so every event's version is unique."""
    sent = data.changes()
    if not sent:
        raise EmptyUpdate()
    project = await _readable(session, principal, project_id, for_update=True)
    await _check_fields(session, project, sent, principal)
    check_if_match(if_match, project.version)
    target_status = sent.get("status", project.status)
    if target_status != project.status and target_status not in STATUS_TRANSITIONS[project.status]:
        raise InvalidStatusTransition(project.status, target_status)

    changed = sorted(f for f in ("name", "description") if f in sent and sent[f] != getattr(project, f))
    now = utcnow()
    if changed:
        for name in changed:
            setattr(project, name, sent[name])
        project.version += 1
        project.updated_at = now
        await flush_or_raise(session, _UNIQUE)
        await emit(
            session,
            ProjectUpdated(
                project_id=project.id,
                client_id=project.client_id,
                changed_fields=changed,
                name=project.name,
                description=project.description,
                version=project.version,
            ),
            tenant=project.client_id,
            actor=actor_of(principal),
            resource_id=project.id,
            source_service=SERVICE,
        )
    if target_status != project.status:
        await _change_status(session, project, target_status, actor_of(principal), reason="requested")
    return project


async def _change_status(
    session: AsyncSession, project: Project, target: str, actor: Actor, *, reason: str
) -> None:
    previous = project.status
    project.status = target
    project.version += 1
    project.updated_at = utcnow()
    await session.flush()
    await emit(
        session,
        ProjectStatusChanged(
            project_id=project.id,
            client_id=project.client_id,
            from_status=previous,
            to_status=target,
            reason=reason,
            version=project.version,
        ),
        tenant=project.client_id,
        actor=actor,
        resource_id=project.id,
        source_service=SERVICE,
    )


async def delete_project(
    session: AsyncSession, project_id: uuid.UUID, *, principal: Principal, if_match: str | None
) -> None:
    project = await _readable(session, principal, project_id, for_update=True)
    if not can_manage_projects(principal, project.client_id):
        raise Forbidden("You may not delete projects of this client", code="insufficient_role")
    check_if_match(if_match, project.version)
    now = utcnow()
    project.deleted_at = now
    project.updated_at = now
    project.version += 1
    await session.flush()
    await emit(
        session,
        ProjectDeleted(project_id=project.id, client_id=project.client_id, version=project.version),
        tenant=project.client_id,
        actor=actor_of(principal),
        resource_id=project.id,
        source_service=SERVICE,
    )


async def complete_from_workflow(
    session: AsyncSession, project_id: uuid.UUID, *, tenant: str | None, actor: Actor
) -> bool:
    """Mark a project ``completed`` because its workflow finished. Idempotent: a project that is already
    completed or archived, deleted, or unknown is left alone (False). A tenant that does not own the
    project raises ``ValueError`` (the caller dead-letters the event)."""
    project = await ProjectRepository(session).get_live(project_id, lock="update")
    if project is None:
        return False
    if tenant is not None and tenant != str(project.client_id):
        raise ValueError("the event's tenant does not own this project")
    if project.status in ("completed", "archived"):
        return False
    await _change_status(session, project, "completed", actor, reason="workflow_completed")
    return True
