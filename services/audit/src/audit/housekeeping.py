"""``Housekeeping``: the worker component that signs checkpoints, keeps month partitions ahead of time
and applies retention. Safe to run on several replicas (row locks with SKIP LOCKED, idempotent steps)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.chain.service import PartitionKeeper
from audit.checkpoints.service import create_due_checkpoints
from audit.checkpoints.signing import Signer
from audit.config import AuditSettings
from audit.retention.service import apply_retention, ensure_partitions_ahead

__all__ = ["Housekeeping"]

log = logging.getLogger(__name__)


class Housekeeping:
    def __init__(
        self, factory: async_sessionmaker[AsyncSession], signer: Signer, settings: AuditSettings
    ) -> None:
        self.factory = factory
        self.signer = signer
        self.settings = settings
        self.keeper = PartitionKeeper(factory)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        self._stopping.clear()
        s = self.settings
        await asyncio.gather(
            self._every(s.checkpoint_check_interval_seconds, self.checkpoints),
            self._every(s.maintenance_interval_seconds, self.maintain),
        )

    async def checkpoints(self) -> int:
        return await create_due_checkpoints(
            self.factory,
            self.signer,
            every_entries=self.settings.checkpoint_every_entries,
            every_seconds=self.settings.checkpoint_every_seconds,
        )

    async def maintain(self) -> list[str]:
        await ensure_partitions_ahead(self.factory)
        return await apply_retention(self.factory, self.keeper, keep_months=self.settings.retention_months)

    async def _every(self, seconds: float, job: Callable[[], Awaitable[object]]) -> None:
        while not self._stopping.is_set():
            try:
                await job()
            except Exception:
                log.exception(
                    "audit housekeeping: %s failed; trying again later", getattr(job, "__name__", job)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)
