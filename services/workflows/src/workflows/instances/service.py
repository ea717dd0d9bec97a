"""Running instances: start one per project, apply engine operations, persist state, rows and events.

Every change goes through ``apply``: the instance row is locked (``SELECT ... FOR UPDATE``), the engine
runs on its state, then in the same transaction the state, the touched task/decision rows, a bumped
instance ``version`` (optimistic versioning; ``If-Match`` is checked against it) and one outbox event per
effect are written. Two claims of one task therefore serialize on the instance row: exactly one wins.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import new_id, utcnow
from shared.errors import NotFound
from shared.events.documents import DocumentIndexed
from shared.events.projects import ProjectCreated
from shared.http import check_if_match
from shared.messaging import Actor as EventActor
from shared.messaging import PoisonMessage, emit
from workflows.definitions.service import find_for_project, get_model
from workflows.engine.machine import SYSTEM
from workflows.engine.operations import Engine
from workflows.engine.state import Actor, InstanceState, KnownDocument
from workflows.instances.events import event_for
from workflows.instances.models import DecisionRow, InstanceRow, ProjectDocumentRow, TaskRow

__all__ = [
    "InstanceNotFound",
    "apply",
    "engine_for",
    "instance_by_project",
    "lock_instance",
    "on_document_indexed",
    "on_project_created",
    "sweep_expired_leases",
]

T = TypeVar("T")
SERVICE = "workflows"


class InstanceNotFound(NotFound):
    code = "workflow_not_found"


def _new_id() -> str:
    return str(new_id())


def _event_actor(actor: Actor) -> EventActor:
    kind = "service" if actor.kind == "system" else actor.kind
    return EventActor(subject=actor.subject, kind=kind, name=actor.name)


async def instance_by_project(session: AsyncSession, project_id: uuid.UUID) -> InstanceRow | None:
    return await session.scalar(select(InstanceRow).where(InstanceRow.project_id == project_id))


async def lock_instance(session: AsyncSession, instance_id: uuid.UUID) -> InstanceRow:
    row = await session.scalar(select(InstanceRow).where(InstanceRow.id == instance_id).with_for_update())
    if row is None:
        raise InstanceNotFound()
    return row


async def engine_for(session: AsyncSession, row: InstanceRow, *, now: datetime | None = None) -> Engine:
    model = await get_model(session, row.definition_id, row.definition_version)
    state = InstanceState.model_validate(row.state)
    return Engine(model, state, now=now or utcnow(), new_id=_new_id)


async def apply(
    session: AsyncSession,
    row: InstanceRow,
    operation: Callable[[Engine], T],
    *,
    actor: Actor,
    if_match: str | None = None,
) -> tuple[T, Engine]:
    """Run ``operation`` on the (locked) instance and persist what it changed."""
    check_if_match(if_match, row.version)
    engine = await engine_for(session, row)
    result = operation(engine)
    await _persist(session, row, engine, actor)
    return result, engine


async def _persist(session: AsyncSession, row: InstanceRow, engine: Engine, actor: Actor) -> None:
    st = engine.state
    row.state = st.model_dump(mode="json")
    row.status = st.status
    row.outcome = st.outcome
    row.current_step = engine.current_step()
    row.current_phase = engine.current_phase()
    row.updated_at = engine.now
    if st.status == "completed" and row.completed_at is None:
        row.completed_at = engine.now
    await session.flush()
    await _upsert_tasks(session, row, engine, engine.touched_tasks)
    await _upsert_decisions(session, row, engine, engine.touched_decisions)
    who = _event_actor(actor)
    for effect in engine.effects:
        out = event_for(effect, row)
        if out is not None:
            event, resource = out
            await emit(
                session, event, tenant=row.client_id, actor=who, resource_id=resource, source_service=SERVICE
            )


async def _upsert_tasks(session: AsyncSession, row: InstanceRow, engine: Engine, ids: Iterable[str]) -> None:
    for task_id in sorted(ids):
        task = engine.state.tasks[task_id]
        values: dict[str, Any] = {
            "id": uuid.UUID(task.id),
            "instance_id": row.id,
            "project_id": row.project_id,
            "client_id": row.client_id,
            "step_id": task.step_id,
            "roles": task.roles,
            "state": task.state.value,
            "optional": task.optional,
            "claimed_by": task.claimed_by,
            "lease_expires_at": task.lease_expires_at,
            "data": task.model_dump(mode="json"),
            "created_at": task.created_at,
            "updated_at": task.updated_at,
        }
        stmt = pg_insert(TaskRow).values(**values)
        update = {k: stmt.excluded[k] for k in values if k not in ("id", "created_at")}
        await session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=update))


async def _upsert_decisions(
    session: AsyncSession, row: InstanceRow, engine: Engine, ids: Iterable[str]
) -> None:
    for decision_id in sorted(ids):
        decision = engine.state.decisions[decision_id]
        values: dict[str, Any] = {
            "id": uuid.UUID(decision.id),
            "instance_id": row.id,
            "project_id": row.project_id,
            "client_id": row.client_id,
            "kind": decision.kind.value,
            "state": decision.state,
            "data": decision.model_dump(mode="json"),
            "created_at": decision.created_at,
            "updated_at": engine.now,
        }
        stmt = pg_insert(DecisionRow).values(**values)
        update = {k: stmt.excluded[k] for k in values if k not in ("id", "created_at")}
        await session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=update))


# -- events consumed ------------------------------------------------------------------------------------
async def _lock_project(session: AsyncSession, project_id: uuid.UUID) -> None:
    """Serialize everything about one project (a duplicate created event racing the first one)."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"project:{project_id}"})


async def on_project_created(
    session: AsyncSession, event: ProjectCreated, *, tenant: str | None
) -> InstanceRow | None:
    """Start the project's instance once; a second delivery (or a second event) finds it and stops."""
    if tenant is not None and tenant != str(event.client_id):
        raise PoisonMessage(f"project.created for client {event.client_id} arrived under tenant {tenant}")
    await _lock_project(session, event.project_id)
    if await instance_by_project(session, event.project_id) is not None:
        return None
    definition = await find_for_project(
        session, kind=event.kind, type_=event.type, workflow_id=event.workflow_id
    )
    if definition is None:
        wanted = event.workflow_id or f"{event.kind}-{event.type}"
        raise PoisonMessage(f"no workflow definition for project {event.project_id} ({wanted})")
    model = await get_model(session, definition.id, definition.latest_version)
    docs = (
        await session.scalars(
            select(ProjectDocumentRow).where(ProjectDocumentRow.project_id == event.project_id)
        )
    ).all()
    if any(d.client_id != event.client_id for d in docs):
        raise PoisonMessage(f"documents of project {event.project_id} belong to another client")
    known = [KnownDocument(document_id=str(d.document_id), kind=d.kind, version=d.version) for d in docs]
    now = utcnow()
    engine = Engine.start(
        model, now=now, new_id=_new_id, documents=sorted(known, key=lambda d: d.document_id)
    )
    row = InstanceRow(
        id=new_id(),
        project_id=event.project_id,
        client_id=event.client_id,
        project_name=event.name[:300],
        project_kind=event.kind,
        project_type=event.type[:100],
        definition_id=definition.id,
        definition_version=definition.latest_version,
        status="running",
        state={},
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await _persist(session, row, engine, SYSTEM)
    return row


async def on_document_indexed(session: AsyncSession, event: DocumentIndexed, *, tenant: str | None) -> None:
    """Remember the document for its project (even before the instance exists) and let the engine see it.

    Duplicates and older versions arriving late change nothing; a document of another client than the
    project's instance is poison (it would cross tenants)."""
    if tenant is not None and tenant != str(event.client_id):
        raise PoisonMessage(f"document.indexed for client {event.client_id} arrived under tenant {tenant}")
    await _lock_project(session, event.project_id)
    existing = await session.get(ProjectDocumentRow, event.document_id, with_for_update=True)
    if existing is not None:
        if existing.project_id != event.project_id or existing.client_id != event.client_id:
            raise PoisonMessage(f"document {event.document_id} changed project or client")
        if existing.version >= event.version:
            return
        existing.version, existing.kind, existing.chunk_count = event.version, event.kind, event.chunk_count
        existing.indexed_at = utcnow()
    else:
        session.add(
            ProjectDocumentRow(
                document_id=event.document_id,
                project_id=event.project_id,
                client_id=event.client_id,
                kind=event.kind,
                version=event.version,
                chunk_count=event.chunk_count,
                indexed_at=utcnow(),
            )
        )
    await session.flush()
    row = await instance_by_project(session, event.project_id)
    if row is None:
        return
    if row.client_id != event.client_id:
        raise PoisonMessage(
            f"document {event.document_id} names client {event.client_id}, the project is another's"
        )
    row = await lock_instance(session, row.id)
    doc = KnownDocument(
        document_id=str(event.document_id), kind=event.kind, version=event.version, title=event.title
    )
    await apply(session, row, lambda e: e.document_indexed(doc), actor=SYSTEM)


async def sweep_expired_leases(session: AsyncSession, *, limit: int = 100) -> int:
    """Return expired claims to ``ready`` (announcing them), instance by instance; how many tasks."""
    ids = (
        await session.scalars(
            select(TaskRow.instance_id)
            .where(TaskRow.state == "claimed", TaskRow.lease_expires_at <= utcnow())
            .distinct()
            .limit(limit)
        )
    ).all()
    count = 0
    for instance_id in ids:
        row = await lock_instance(session, instance_id)
        expired, _ = await apply(session, row, lambda e: e.expire_leases(), actor=SYSTEM)
        count += len(expired)
    return count
