"""Queries on known clients and memberships."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from identity.memberships.models import KnownClient, Membership
from shared.db import Repository, utcnow
from shared.errors import NotFound

__all__ = ["ClientNotFound", "KnownClientRepository", "MembershipNotFound", "MembershipRepository"]


class ClientNotFound(NotFound):
    code = "client_not_found"


class MembershipNotFound(NotFound):
    code = "membership_not_found"


class KnownClientRepository(Repository[KnownClient]):
    model = KnownClient
    not_found = ClientNotFound

    async def live(self, client_id: uuid.UUID) -> KnownClient | None:
        client = await self.get(client_id)
        return client if client is not None and client.deleted_at is None else None

    async def learn(self, client_id: uuid.UUID) -> None:
        """Remember a client; a tombstoned one stays deleted (events may arrive out of order)."""
        stmt = insert(KnownClient).values(id=client_id, created_at=utcnow()).on_conflict_do_nothing()
        await self.session.execute(stmt)

    async def tombstone(self, client_id: uuid.UUID) -> None:
        now = utcnow()
        stmt = (
            insert(KnownClient)
            .values(id=client_id, created_at=now, deleted_at=now)
            .on_conflict_do_update(index_elements=[KnownClient.id], set_={"deleted_at": now})
        )
        await self.session.execute(stmt)


class MembershipRepository(Repository[Membership]):
    model = Membership
    not_found = MembershipNotFound

    async def one(
        self, client_id: uuid.UUID, user_id: uuid.UUID, *, for_update: bool = False
    ) -> Membership | None:
        stmt = select(Membership).where(Membership.client_id == client_id, Membership.user_id == user_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def of_client(
        self, client_id: uuid.UUID, *, limit: int | None = None, after: uuid.UUID | None = None
    ) -> Sequence[Membership]:
        stmt = select(Membership).where(Membership.client_id == client_id).order_by(Membership.user_id)
        if after is not None:
            stmt = stmt.where(Membership.user_id > after)
        if limit is not None:
            stmt = stmt.limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

    async def of_user(self, user_id: uuid.UUID) -> Sequence[Membership]:
        """The user's memberships in live clients (what tokens carry)."""
        stmt = (
            select(Membership)
            .join(KnownClient, KnownClient.id == Membership.client_id)
            .where(Membership.user_id == user_id, KnownClient.deleted_at.is_(None))
            .order_by(Membership.client_id)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def product_owner_count(self, client_id: uuid.UUID) -> int:
        stmt = select(Membership.user_id).where(
            Membership.client_id == client_id, Membership.role == "product_owner"
        )
        return len((await self.session.execute(stmt)).all())
