"""The audit worker: ``python -m audit.worker``.

Runs, side by side until SIGTERM: the stream consumers with discovery, gap healing and reconciliation
(``AuditIngest``); checkpoints, partitions, retention and periodic verification (``Housekeeping``);
and the outbox relay that publishes ``baton.audit.checkpoint.created.v1`` to ``BATON_AUDIT`` and answers
its replay requests.
"""

from __future__ import annotations

import asyncio

from audit.checkpoints.signing import Keyring
from audit.config import Settings
from audit.context import build_signer
from audit.housekeeping import Housekeeping
from audit.ingest.runner import AuditIngest
from shared.db import create_engine, create_session_factory
from shared.messaging import OutboxRelay, run_worker
from shared.telemetry import configure_logging, configure_tracing

__all__ = ["main", "run"]


async def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    configure_logging(settings.service_name, settings.log_level, json_logs=settings.log_json)
    configure_tracing(settings.service_name, otlp_endpoint=settings.otel_exporter_otlp_endpoint)
    engine = create_engine(
        settings.database_url, schema=settings.schema_name, pool_size=settings.database_pool_size
    )
    factory = create_session_factory(engine)
    signer = build_signer(settings)
    try:
        await run_worker(
            AuditIngest(factory, settings.nats_url, settings),
            Housekeeping(factory, signer, settings, Keyring(signer.public, settings.previous_public_keys)),
            OutboxRelay(factory, settings.nats_url, "audit", replicas=settings.nats_stream_replicas),
        )
    finally:
        await engine.dispose()


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
