"""A transaction that keeps the effects of a *recorded rejection*.

Some refusals must leave a trace even though the request fails: a failed login counts toward the
backoff and emits ``auth.login_failed``; a reused refresh token revokes its family. Those errors
subclass ``RecordedRejection``: raising one commits what was flushed before it, then the error
propagates and is rendered as usual. Any other exception rolls back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["RecordedRejection", "keeping_rejections"]


class RecordedRejection(Exception):
    """Mixin: the transaction that raised this commits before the error propagates."""


@asynccontextmanager
async def keeping_rejections(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with factory() as session:
        try:
            yield session
        except RecordedRejection:
            await session.commit()
            raise
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()
