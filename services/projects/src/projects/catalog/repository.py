"""Named queries on the catalog of known workflow definitions."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from projects.catalog.models import KnownWorkflow
from shared.db import Repository, utcnow

__all__ = ["CatalogRepository"]


class CatalogRepository(Repository[KnownWorkflow]):
    model = KnownWorkflow

    async def known_ids(self, ids: Collection[str]) -> set[str]:
        """The ones among ``ids`` that are in the catalog."""
        if not ids:
            return set()
        rows = await self.session.scalars(select(KnownWorkflow.id).where(KnownWorkflow.id.in_(list(ids))))
        return set(rows)

    async def record(self, definition_id: str, version: int, name: str) -> bool:
        """Insert, or raise to ``version`` when it is higher than the one stored; whether anything changed.
        One statement, so concurrent deliveries of different versions end at the highest."""
        stmt = insert(KnownWorkflow).values(id=definition_id, version=version, name=name, updated_at=utcnow())
        upsert = stmt.on_conflict_do_update(
            index_elements=[KnownWorkflow.id],
            set_={
                "version": stmt.excluded.version,
                "name": stmt.excluded.name,
                "updated_at": stmt.excluded.updated_at,
            },
            where=KnownWorkflow.version < stmt.excluded.version,
        ).returning(KnownWorkflow.id)
        return (await self.session.execute(upsert)).first() is not None
