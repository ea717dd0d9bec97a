"""Storing definitions: each upload of an id is a new immutable version (source text, content hash,
normalized model); instances keep the version they started on. The built-in BMAD files are stored at
startup, once per content hash, so restarts and concurrent replicas add nothing twice.

Every stored version is announced with ``definition.published`` in the transaction that stores it (other
services, projects first, learn which workflow ids exist from it). ``definitions.announced_version``
records the announced version; ``announce_unannounced`` announces, once, the rows stored before that
column existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import transaction, utcnow
from shared.errors import NotFound, ValidationFailed
from shared.events.workflows import WorkflowDefinitionPublished
from shared.messaging.envelope import Actor
from shared.messaging.outbox import emit
from workflows.definitions.errors import DefinitionError
from workflows.definitions.loader import content_hash, load_definition
from workflows.definitions.model import WorkflowModel
from workflows.definitions.models import DefinitionRow, DefinitionVersionRow

__all__ = [
    "BUILTIN_DIR",
    "DefinitionInvalid",
    "DefinitionNotFound",
    "announce_unannounced",
    "builtin_files",
    "find_for_project",
    "get_definition",
    "get_model",
    "get_version",
    "list_definitions",
    "list_versions",
    "load_builtin",
    "parse",
    "store_definition",
]

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
SERVICE_ACTOR = Actor(subject="workflows", kind="service", name="workflows")


class DefinitionNotFound(NotFound):
    code = "workflow_definition_not_found"


class DefinitionInvalid(ValidationFailed):
    code = "invalid_workflow_definition"


def builtin_files() -> list[Path]:
    """The BMAD workflow files shipped with the service (the sprint-status template is not a workflow)."""
    return sorted(p for p in BUILTIN_DIR.glob("*.yaml") if not p.name.startswith("sprint-status"))


def parse(source: str) -> WorkflowModel:
    """Load or raise ``DefinitionInvalid`` naming every problem's line and step."""
    try:
        return load_definition(source)
    except DefinitionError as exc:
        raise DefinitionInvalid(
            f"The workflow file cannot be loaded: {exc}",
            problems=[p.as_dict() for p in exc.problems],
        ) from None


async def _announce(session: AsyncSession, row: DefinitionRow, actor: Actor) -> None:
    await emit(
        session,
        WorkflowDefinitionPublished(
            definition_id=row.id, version=row.latest_version, name=row.name, format=row.format
        ),
        tenant=None,
        actor=actor,
        resource_id=row.id,
    )


async def store_definition(
    session: AsyncSession,
    source: str,
    *,
    origin: str,
    created_by: str | None,
    actor: Actor = SERVICE_ACTOR,
) -> tuple[DefinitionVersionRow, bool]:
    """Parse and store; returns (the version row, whether a new version was created). A new version is
    announced (``definition.published`` by ``actor``) in the same transaction.

    The same content as the latest version of that id is not stored again. Concurrent uploads of one
    id are serialized by a transaction-scoped advisory lock on the id.
    """
    model = parse(source)
    digest = content_hash(source)
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"definition:{model.id}"})
    row = await session.get(DefinitionRow, model.id, with_for_update=True)
    now = utcnow()
    if row is not None:
        latest = await session.get(DefinitionVersionRow, (model.id, row.latest_version))
        if latest is not None and latest.content_hash == digest:
            return latest, False
        row.latest_version += 1
        row.name = model.name
        row.format = model.format
        row.updated_at = now
    else:
        row = DefinitionRow(
            id=model.id,
            name=model.name,
            format=model.format,
            latest_version=1,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
    version = DefinitionVersionRow(
        definition_id=model.id,
        version=row.latest_version,
        content_hash=digest,
        source_text=source,
        model=model.model_dump(mode="json"),
        origin=origin,
        created_by=created_by,
        created_at=now,
    )
    session.add(version)
    row.announced_version = row.latest_version
    await session.flush()
    await _announce(session, row, actor)
    return version, True


async def load_builtin(factory: async_sessionmaker[AsyncSession]) -> int:
    """Store each built-in file unless a version with its exact content exists; how many were stored."""
    stored = 0
    for path in builtin_files():
        source = path.read_text(encoding="utf-8")
        digest = content_hash(source)
        model = parse(source)
        async with transaction(factory) as session:
            await session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"definition:{model.id}"}
            )
            exists = await session.scalar(
                select(func.count())
                .select_from(DefinitionVersionRow)
                .where(
                    DefinitionVersionRow.definition_id == model.id,
                    DefinitionVersionRow.content_hash == digest,
                )
            )
            if exists:
                continue
            _, created = await store_definition(session, source, origin="builtin", created_by=None)
            stored += int(created)
    return stored


async def announce_unannounced(factory: async_sessionmaker[AsyncSession]) -> int:
    """Announce every definition whose latest version was never announced (stored before announcements
    existed); how many were announced.

    One ``UPDATE ... RETURNING`` claims the rows: a replica starting at the same time waits on their row
    locks, then finds them announced and claims nothing, so each version is announced exactly once.
    """
    async with transaction(factory) as session:
        claimed = (
            await session.scalars(
                update(DefinitionRow)
                .where(DefinitionRow.announced_version.is_distinct_from(DefinitionRow.latest_version))
                .values(announced_version=DefinitionRow.latest_version)
                .returning(DefinitionRow)
                .execution_options(synchronize_session=False)
            )
        ).all()
        for row in sorted(claimed, key=lambda r: r.id):
            await _announce(session, row, SERVICE_ACTOR)
    return len(claimed)


async def list_definitions(
    session: AsyncSession, *, after: str | None, limit: int
) -> Sequence[DefinitionRow]:
    query = select(DefinitionRow).order_by(DefinitionRow.id).limit(limit)
    if after is not None:
        query = query.where(DefinitionRow.id > after)
    return (await session.scalars(query)).all()


async def get_definition(session: AsyncSession, definition_id: str) -> DefinitionRow:
    row = await session.get(DefinitionRow, definition_id)
    if row is None:
        raise DefinitionNotFound(f"Workflow definition '{definition_id}' not found")
    return row


async def list_versions(session: AsyncSession, definition_id: str) -> Sequence[DefinitionVersionRow]:
    query = (
        select(DefinitionVersionRow)
        .where(DefinitionVersionRow.definition_id == definition_id)
        .order_by(DefinitionVersionRow.version)
    )
    return (await session.scalars(query)).all()


async def get_version(session: AsyncSession, definition_id: str, version: int) -> DefinitionVersionRow:
    row = await session.get(DefinitionVersionRow, (definition_id, version))
    if row is None:
        raise DefinitionNotFound(f"Workflow definition '{definition_id}' has no version {version}")
    return row


_MODELS: dict[tuple[str, int, str], WorkflowModel] = {}


async def get_model(session: AsyncSession, definition_id: str, version: int) -> WorkflowModel:
    """The normalized model of one version (immutable, so cached per process by content hash)."""
    row = await get_version(session, definition_id, version)
    key = (definition_id, version, row.content_hash)
    model = _MODELS.get(key)
    if model is None:
        if len(_MODELS) > 512:
            _MODELS.clear()
        model = _MODELS[key] = WorkflowModel.model_validate(row.model)
    return model


async def find_for_project(
    session: AsyncSession, *, kind: str, type_: str, workflow_id: str | None
) -> DefinitionRow | None:
    """The explicit ``workflow_id``, else ``<kind>-<type>`` (greenfield + fullstack → greenfield-fullstack),
    else a ``type`` that is itself a definition id, else ``<type>-<kind>`` (bmad-method + greenfield)."""
    candidates = [workflow_id] if workflow_id else [f"{kind}-{type_}", type_, f"{type_}-{kind}"]
    for candidate in candidates:
        if candidate:
            row = await session.get(DefinitionRow, candidate)
            if row is not None:
                return row
    return None
