"""Queries on signing keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select, text

from identity.keys.models import SigningKey
from shared.db import Repository

__all__ = ["SigningKeyRepository"]


class SigningKeyRepository(Repository[SigningKey]):
    model = SigningKey

    async def lock_rotation(self) -> None:
        """Serialize key creation across replicas for the rest of the transaction."""
        await self.session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('baton-identity-signing-key'))")
        )

    async def signing(self, now: datetime) -> SigningKey | None:
        """The key that signs now: the newest one already allowed to sign and not retired."""
        stmt = (
            select(SigningKey)
            .where(SigningKey.signs_from <= now)
            .where(or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > now))
            .order_by(SigningKey.signs_from.desc(), SigningKey.created_at.desc())
            .limit(1)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def newest(self) -> SigningKey | None:
        """The most recently introduced key (possibly announced but not signing yet)."""
        stmt = (
            select(SigningKey).order_by(SigningKey.signs_from.desc(), SigningKey.created_at.desc()).limit(1)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def unretired(self) -> Sequence[SigningKey]:
        stmt = select(SigningKey).where(SigningKey.retired_at.is_(None)).order_by(SigningKey.signs_from)
        return (await self.session.execute(stmt)).scalars().all()

    async def published(self, now: datetime) -> Sequence[SigningKey]:
        """Keys whose public half belongs in the JWKS: not retired, or retired but with live tokens."""
        stmt = (
            select(SigningKey)
            .where(or_(SigningKey.publish_until.is_(None), SigningKey.publish_until > now))
            .order_by(SigningKey.signs_from.desc())
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def unpublished_since(self, cutoff: datetime) -> Sequence[SigningKey]:
        stmt = select(SigningKey).where(SigningKey.publish_until < cutoff)
        return (await self.session.execute(stmt)).scalars().all()
