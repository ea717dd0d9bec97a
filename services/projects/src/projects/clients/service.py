"""Rules for clients. Flushes, never commits; every change writes its event to the outbox in the same
session. Object-level authorization happens here: a client the caller may not read is ``ClientNotFound``.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from projects.actors import SERVICE, actor_of
from projects.clients.models import Client
from projects.clients.repository import ClientRepository
from projects.clients.schemas import ClientCreate, ClientUpdate
from projects.constraints import flush_or_raise
from projects.errors import ClientNotFound, ClientSlugTaken, EmptyUpdate, FieldsNotWritable
from projects.listing import Slice, after_id, slice_rows
from projects.policy import can_read_client, client_fields_writable, readable_client_ids
from projects.projects.repository import ProjectRepository
from shared.auth import Principal
from shared.db import new_id, utcnow
from shared.errors import Forbidden
from shared.events.projects import ClientArchived, ClientCreated, ClientDeleted, ClientUpdated, ProjectDeleted
from shared.http import check_if_match
from shared.messaging.outbox import emit

__all__ = ["create_client", "delete_client", "get_client", "list_clients", "update_client"]

_UNIQUE = {"uq_clients_slug_live": ClientSlugTaken}


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Platform administrators only", code="admin_required")


async def _readable(
    session: AsyncSession, principal: Principal, client_id: uuid.UUID, *, for_update: bool = False
) -> Client:
    client = await ClientRepository(session).get_live(client_id, lock="update" if for_update else None)
    if client is None or not can_read_client(principal, client.id):
        raise ClientNotFound()
    return client


async def create_client(session: AsyncSession, data: ClientCreate, *, principal: Principal) -> Client:
    _require_admin(principal)
    client = Client(
        id=new_id(),
        name=data.name,
        slug=data.slug,
        status="active",
        contact=data.contact.model_dump(exclude_none=True),
        extra=data.metadata,
        version=1,
        created_by=principal.subject,
    )
    session.add(client)
    await flush_or_raise(session, _UNIQUE)
    await emit(
        session,
        ClientCreated(
            client_id=client.id, name=client.name, slug=client.slug, status="active", version=client.version
        ),
        tenant=client.id,
        actor=actor_of(principal),
        resource_id=client.id,
        source_service=SERVICE,
    )
    return client


async def get_client(session: AsyncSession, client_id: uuid.UUID, *, principal: Principal) -> Client:
    return await _readable(session, principal, client_id)


async def list_clients(
    session: AsyncSession,
    *,
    principal: Principal,
    status: str | None,
    q: str | None,
    cursor: str | None,
    limit: int,
) -> Slice[Client]:
    """The clients the caller may read (admins: all), newest first."""
    rows = await ClientRepository(session).list_page(
        readable=readable_client_ids(principal), status=status, q=q, after=after_id(cursor), limit=limit + 1
    )
    return slice_rows(rows, limit, lambda c: c.id)


async def update_client(
    session: AsyncSession,
    client_id: uuid.UUID,
    data: ClientUpdate,
    *,
    principal: Principal,
    if_match: str | None,
) -> Client:
    """Change the sent fields. Field changes and a status change are two versions with one event each:
    ``client.updated`` for fields, then ``client.archived`` (or ``client.updated`` when restored)."""
    sent = data.changes()
    if not sent:
        raise EmptyUpdate()
    client = await _readable(session, principal, client_id, for_update=True)
    refused = set(sent) - client_fields_writable(principal, client.id)
    if refused:
        raise FieldsNotWritable(refused)
    check_if_match(if_match, client.version)

    current: dict[str, Any] = {
        "name": client.name,
        "slug": client.slug,
        "contact": client.contact,
        "metadata": client.extra,
    }
    if "contact" in sent:
        sent["contact"] = sent["contact"].model_dump(exclude_none=True)
    changed = sorted(f for f in current if f in sent and sent[f] != current[f])
    now = utcnow()
    if changed:
        for name in changed:
            setattr(client, "extra" if name == "metadata" else name, sent[name])
        client.version += 1
        client.updated_at = now
        await flush_or_raise(session, _UNIQUE)
        await _emit_updated(session, client, changed, principal)
    if "status" in sent and sent["status"] != client.status:
        client.status = sent["status"]
        client.version += 1
        client.updated_at = now
        await session.flush()
        if client.status == "archived":
            await emit(
                session,
                ClientArchived(client_id=client.id, version=client.version),
                tenant=client.id,
                actor=actor_of(principal),
                resource_id=client.id,
                source_service=SERVICE,
            )
        else:
            await _emit_updated(session, client, ["status"], principal)
    return client


async def _emit_updated(
    session: AsyncSession, client: Client, changed: list[str], principal: Principal
) -> None:
    await emit(
        session,
        ClientUpdated(
            client_id=client.id,
            changed_fields=changed,
            name=client.name,
            slug=client.slug,
            status=client.status,
            version=client.version,
        ),
        tenant=client.id,
        actor=actor_of(principal),
        resource_id=client.id,
        source_service=SERVICE,
    )


async def delete_client(
    session: AsyncSession, client_id: uuid.UUID, *, principal: Principal, if_match: str | None
) -> None:
    """Soft-delete the client and, in the same transaction, every live project of it (one
    ``project.deleted`` each, reason ``client_deleted``): no project outlives its tenant, even briefly."""
    client = await _readable(session, principal, client_id, for_update=True)
    _require_admin(principal)
    check_if_match(if_match, client.version)
    now = utcnow()
    client.deleted_at = now
    client.updated_at = now
    client.version += 1
    await session.flush()
    actor = actor_of(principal)
    await emit(
        session,
        ClientDeleted(client_id=client.id, version=client.version),
        tenant=client.id,
        actor=actor,
        resource_id=client.id,
        source_service=SERVICE,
    )
    for project_id, version in await ProjectRepository(session).soft_delete_of_client(client.id, now):
        await emit(
            session,
            ProjectDeleted(
                project_id=project_id, client_id=client.id, reason="client_deleted", version=version
            ),
            tenant=client.id,
            actor=actor,
            resource_id=project_id,
            source_service=SERVICE,
        )
