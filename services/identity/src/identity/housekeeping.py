"""Periodic upkeep in the worker: key rotation when due, and purging what can never matter again
(expired refresh tokens, stale login counters, keys no longer published)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from identity.config import Settings
from identity.keys.service import KeyRing, ensure_signing_key, purge_expired_keys, rotate_if_due
from identity.tokens.repository import LoginFailureRepository, RefreshTokenRepository
from shared.db import transaction, utcnow

__all__ = ["Housekeeping"]

log = logging.getLogger(__name__)


class Housekeeping:
    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        ring: KeyRing,
        settings: Settings,
        *,
        interval_seconds: float = 60.0,
    ) -> None:
        self.session_factory = session_factory
        self.ring = ring
        self.settings = settings
        self.interval_seconds = interval_seconds
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run_once(self) -> None:
        now = utcnow()
        async with transaction(self.session_factory) as session:
            await ensure_signing_key(session, self.ring, self.settings)
            rotated = await rotate_if_due(session, self.ring, self.settings)
            if rotated is not None:
                log.info("rotated signing key: %s", rotated.kid)
            await purge_expired_keys(session)
        async with transaction(self.session_factory) as session:
            await RefreshTokenRepository(session).purge_expired(now - timedelta(days=1))
            window = timedelta(seconds=self.settings.login_failure_window_seconds)
            await LoginFailureRepository(session).purge_stale(now - window - timedelta(hours=1))

    async def run(self) -> None:
        self._stopping.clear()
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception:  # upkeep must never take the worker down; it runs again next interval
                log.exception("housekeeping failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_seconds)
