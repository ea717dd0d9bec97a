"""The workflows worker: ``python -m workflows.worker``.

Runs, side by side until SIGTERM/SIGINT: the outbox relay (publishes this service's committed events to
``BATON_WORKFLOWS``), the ``workflows-projects`` consumer (``project.created`` → the project's workflow
instance), the ``workflows-documents`` consumer (``document.indexed`` → the task whose artifact it is) and
the lease sweeper (expired claims → ready again, announced with ``task_ready``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import create_engine, create_session_factory, transaction
from shared.messaging import InboxPruning, OutboxRelay, run_worker
from shared.telemetry import configure_logging, configure_tracing
from workflows.config import Settings
from workflows.definitions.service import announce_unannounced, load_builtin
from workflows.instances.handlers import documents_consumer, projects_consumer
from workflows.instances.service import sweep_expired_leases

__all__ = ["LeaseSweeper", "main", "run"]

log = logging.getLogger("workflows.worker")


class LeaseSweeper:
    """Every ``interval`` seconds, return claims whose lease ran out to ``ready``."""

    def __init__(self, factory: async_sessionmaker[AsyncSession], interval: float) -> None:
        self.factory = factory
        self.interval = interval
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def sweep_once(self) -> int:
        async with transaction(self.factory) as session:
            return await sweep_expired_leases(session)

    async def run(self) -> None:
        self._stopping.clear()
        while not self._stopping.is_set():
            try:
                expired = await self.sweep_once()
                if expired:
                    log.info("returned %d expired claim(s) to ready", expired)
            except Exception as exc:  # the database may be away for a while; keep sweeping later
                log.warning("lease sweep failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)


async def run(settings: Settings) -> None:
    engine = create_engine(
        settings.database_url, schema=settings.schema_name, pool_size=settings.database_pool_size
    )
    try:
        factory = create_session_factory(engine)
        if settings.load_builtin:
            await load_builtin(factory)  # project.created may arrive before the API ever started
        await announce_unannounced(factory)
        relay = OutboxRelay(
            engine, settings.nats_url, settings.service_name, replicas=settings.nats_stream_replicas
        )
        pruning = InboxPruning.from_settings(settings)
        await run_worker(
            relay,
            projects_consumer(factory, settings.nats_url, inbox_pruning=pruning),
            documents_consumer(factory, settings.nats_url, inbox_pruning=pruning),
            LeaseSweeper(factory, settings.lease_sweep_seconds),
        )
    finally:
        await engine.dispose()


def main() -> None:
    settings = Settings()
    configure_logging(f"{settings.service_name}-worker", settings.log_level, json_logs=settings.log_json)
    configure_tracing(f"{settings.service_name}-worker", otlp_endpoint=settings.otel_exporter_otlp_endpoint)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
