"""Queries on refresh tokens and login-failure counters."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert

from identity.tokens.models import LoginFailure, RefreshToken
from shared.db import Repository

__all__ = ["LoginFailureRepository", "RefreshTokenRepository"]


class RefreshTokenRepository(Repository[RefreshToken]):
    model = RefreshToken

    async def by_hash_for_update(self, token_hash: bytes) -> RefreshToken | None:
        stmt = select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def revoke_family(self, family_id: uuid.UUID, now: datetime) -> int:
        stmt = (
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        result = await self.session.execute(stmt)
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def revoke_user(self, user_id: uuid.UUID, now: datetime) -> int:
        stmt = (
            update(RefreshToken)
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        result = await self.session.execute(stmt)
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def purge_expired(self, before: datetime) -> int:
        result = await self.session.execute(delete(RefreshToken).where(RefreshToken.expires_at < before))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


class LoginFailureRepository(Repository[LoginFailure]):
    model = LoginFailure

    async def locked_until(self, keys: list[str], now: datetime) -> datetime | None:
        """The latest lock still running on any of ``keys``."""
        stmt = select(func.max(LoginFailure.locked_until)).where(
            LoginFailure.key.in_(keys), LoginFailure.locked_until > now
        )
        value: datetime | None = (await self.session.execute(stmt)).scalar_one_or_none()
        return value

    async def count_failure(self, key: str, now: datetime, window: timedelta) -> int:
        """Add one failure to ``key`` atomically (concurrent replicas all count) and return the total in
        the current window; a window that ended starts over at 1."""
        table = LoginFailure.__table__
        expired = table.c.window_started_at <= now - window
        stmt = (
            insert(LoginFailure)
            .values(key=key, failures=1, window_started_at=now)
            .on_conflict_do_update(
                index_elements=[LoginFailure.key],
                set_={
                    "failures": case((expired, 1), else_=table.c.failures + 1),
                    "window_started_at": case((expired, now), else_=table.c.window_started_at),
                    "locked_until": case((expired, None), else_=table.c.locked_until),
                },
            )
            .returning(LoginFailure.failures)
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def lock(self, key: str, until: datetime) -> None:
        await self.session.execute(
            update(LoginFailure).where(LoginFailure.key == key).values(locked_until=until)
        )

    async def clear(self, key: str) -> None:
        await self.session.execute(delete(LoginFailure).where(LoginFailure.key == key))

    async def purge_stale(self, before: datetime) -> int:
        stmt = delete(LoginFailure).where(
            LoginFailure.window_started_at < before,
            (LoginFailure.locked_until.is_(None)) | (LoginFailure.locked_until < before),
        )
        result = await self.session.execute(stmt)
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
