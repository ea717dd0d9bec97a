"""Named queries on the local copy of clients and projects."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from documents.projects.models import KnownClient, KnownProject
from shared.db import Repository, utcnow

__all__ = ["ProjectRepository"]


class ProjectRepository(Repository[KnownProject]):
    model = KnownProject

    async def live(self, project_id: uuid.UUID) -> KnownProject | None:
        """The project if it exists and neither it nor its client is deleted."""
        query = (
            select(KnownProject)
            .outerjoin(KnownClient, KnownClient.id == KnownProject.client_id)
            .where(
                KnownProject.id == project_id,
                KnownProject.deleted_at.is_(None),
                KnownClient.deleted_at.is_(None),
            )
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def clients_of(self, project_ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        """project id → client id, for the live ones among ``project_ids``."""
        if not project_ids:
            return {}
        rows = await self.session.execute(
            select(KnownProject.id, KnownProject.client_id).where(
                KnownProject.id.in_(project_ids), KnownProject.deleted_at.is_(None)
            )
        )
        return {row.id: row.client_id for row in rows}

    async def upsert(self, project_id: uuid.UUID, client_id: uuid.UUID, name: str, version: int) -> bool:
        """Record a created project; False when a newer event already applied (or it is deleted)."""
        result = await self.session.execute(
            pg_insert(KnownProject)
            .values(id=project_id, client_id=client_id, name=name, version=version)
            .on_conflict_do_update(
                index_elements=[KnownProject.id],
                set_={"name": name, "version": version},
                where=(KnownProject.version < version) & KnownProject.deleted_at.is_(None),
            )
            .returning(KnownProject.id)
        )
        return result.scalar_one_or_none() is not None

    async def mark_deleted(self, project_id: uuid.UUID, client_id: uuid.UUID, version: int) -> None:
        """Tombstone the project (creating the tombstone if its ``created`` never arrived)."""
        await self.session.execute(
            pg_insert(KnownProject)
            .values(id=project_id, client_id=client_id, version=version, deleted_at=utcnow())
            .on_conflict_do_update(
                index_elements=[KnownProject.id],
                set_={"deleted_at": utcnow(), "version": version},
                where=KnownProject.deleted_at.is_(None),
            )
        )

    async def mark_client_deleted(self, client_id: uuid.UUID) -> None:
        await self.session.execute(
            pg_insert(KnownClient)
            .values(id=client_id, partitioned=False, deleted_at=utcnow())
            .on_conflict_do_update(
                index_elements=[KnownClient.id], set_={"deleted_at": utcnow(), "partitioned": False}
            )
        )
        await self.session.execute(
            update(KnownProject)
            .where(KnownProject.client_id == client_id, KnownProject.deleted_at.is_(None))
            .values(deleted_at=utcnow())
        )

    async def client_deleted(self, client_id: uuid.UUID) -> bool:
        value = await self.session.scalar(select(KnownClient.deleted_at).where(KnownClient.id == client_id))
        return value is not None
