"""Named queries on clients. Deleted clients are invisible to every query here."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Literal

from sqlalchemy import select

from projects.clients.models import Client
from projects.listing import text_filter
from shared.db import Repository

__all__ = ["ClientRepository", "Lock"]

# FOR UPDATE to change a row, FOR SHARE to keep it from changing while a dependent row is added.
Lock = Literal["update", "share"] | None


class ClientRepository(Repository[Client]):
    model = Client

    async def get_live(self, client_id: uuid.UUID, *, lock: Lock = None) -> Client | None:
        stmt = select(Client).where(Client.id == client_id, Client.deleted_at.is_(None))
        if lock is not None:
            # FOR UPDATE serializes writers, so the version check runs on the latest committed row;
            # FOR SHARE keeps the row from changing (or being deleted) while a dependent row is added.
            stmt = stmt.with_for_update(read=lock == "share")
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_page(
        self,
        *,
        readable: Collection[uuid.UUID] | None,
        status: str | None,
        q: str | None,
        after: uuid.UUID | None,
        limit: int,
    ) -> Sequence[Client]:
        """Up to ``limit`` live clients, newest first; ``readable`` None means every client."""
        stmt = select(Client).where(Client.deleted_at.is_(None))
        if readable is not None:
            stmt = stmt.where(Client.id.in_(list(readable)))
        if status is not None:
            stmt = stmt.where(Client.status == status)
        if q:
            stmt = stmt.where(text_filter(q, Client.name, Client.slug))
        if after is not None:
            stmt = stmt.where(Client.id < after)
        stmt = stmt.order_by(Client.id.desc()).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()
