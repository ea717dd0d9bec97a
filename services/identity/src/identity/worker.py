"""The identity worker: ``python -m identity.worker``.

Runs, side by side until SIGTERM:
- the outbox relay (identity's events → stream ``BATON_IDENTITY``);
- ``identity-not-before``: identity's own revocation events → NATS KV ``baton_not_before``;
- ``identity-clients``: the projects service's ``client.created`` / ``client.deleted`` → known clients,
  dropped memberships and agents;
- housekeeping: key rotation when due and purges.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from identity.config import Settings
from identity.housekeeping import Housekeeping
from identity.keys.service import KeyRing
from identity.memberships.handlers import CLIENT_SUBJECTS, client_handlers
from identity.memberships.handlers import CONSUMER as CLIENTS_CONSUMER
from identity.notbefore.handlers import CONSUMER as NOT_BEFORE_CONSUMER
from identity.notbefore.handlers import STAMPED_EVENTS, not_before_handlers
from identity.notbefore.store import NotBeforeStore
from shared.db import create_engine, create_session_factory
from shared.messaging import (
    ConsumerRunner,
    InboxPruning,
    OutboxRelay,
    Runnable,
    ensure_stream,
    run_worker,
    stream_name,
)
from shared.telemetry import configure_logging, configure_tracing

__all__ = ["Worker", "build_worker", "main"]


class Worker:
    """The components, plus what they share (kept so tests can drive them one step at a time)."""

    def __init__(self, settings: Settings, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.store = NotBeforeStore(
            settings.nats_url,
            bucket=settings.not_before_bucket,
            ttl_seconds=settings.not_before_ttl_seconds,
            replicas=settings.nats_stream_replicas,
        )
        self.relay = OutboxRelay(
            session_factory, settings.nats_url, "identity", replicas=settings.nats_stream_replicas
        )
        self.not_before = ConsumerRunner(
            session_factory,
            settings.nats_url,
            consumer=NOT_BEFORE_CONSUMER,
            stream=stream_name("identity"),
            subjects=sorted({cls.event_subject for cls in STAMPED_EVENTS}),
            handlers=not_before_handlers(self.store),
            inbox_pruning=InboxPruning.from_settings(settings),
        )
        self.clients = ConsumerRunner(
            session_factory,
            settings.nats_url,
            consumer=CLIENTS_CONSUMER,
            stream=stream_name("projects"),
            subjects=list(CLIENT_SUBJECTS),
            handlers=client_handlers(),
            inbox_pruning=InboxPruning.from_settings(settings),
        )
        self.housekeeping = Housekeeping(session_factory, KeyRing.from_settings(settings), settings)

    @property
    def components(self) -> tuple[Runnable, ...]:
        return (self.relay, self.not_before, self.clients, self.housekeeping)

    async def declare(self) -> None:
        """Declare ``BATON_IDENTITY`` (so the not-before consumer can bind before the relay leads) and the
        not-before bucket (so the gateway finds it before the first revocation)."""
        nc = await nats.connect(self.settings.nats_url, connect_timeout=2)
        try:
            await ensure_stream(nc.jetstream(), "identity", replicas=self.settings.nats_stream_replicas)
        finally:
            await nc.drain()
        await self.store.ensure_bucket()

    async def close(self) -> None:
        await self.store.close()
        for runner in (self.not_before, self.clients):
            await runner.close()


def build_worker(settings: Settings, session_factory: async_sessionmaker[AsyncSession]) -> Worker:
    return Worker(settings, session_factory)


async def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging(settings.service_name + "-worker", settings.log_level, json_logs=settings.log_json)
    configure_tracing(settings.service_name + "-worker", otlp_endpoint=settings.otel_exporter_otlp_endpoint)
    engine = create_engine(
        settings.database_url, schema=settings.schema_name, pool_size=settings.database_pool_size
    )
    worker = build_worker(settings, create_session_factory(engine))
    try:
        with contextlib.suppress(Exception):  # NATS may be late: the relay and the store declare lazily too
            await worker.declare()
        await run_worker(*worker.components)
    finally:
        await worker.close()
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
