"""The projects worker: ``python -m projects.worker``.

Runs, side by side until SIGTERM/SIGINT: the outbox relay (publishes this service's committed events to
``BATON_PROJECTS``) and the ``projects-workflows`` consumer (``workflow.completed`` → project completed,
``definition.published`` → the catalog of workflow ids projects may name).
"""

from __future__ import annotations

import asyncio

from projects.config import Settings
from projects.projects.handlers import workflow_events_consumer
from shared.db import create_engine, create_session_factory
from shared.messaging import InboxPruning, OutboxRelay, run_worker
from shared.telemetry import configure_logging, configure_tracing

__all__ = ["main", "run"]


async def run(settings: Settings) -> None:
    engine = create_engine(
        settings.database_url, schema=settings.schema_name, pool_size=settings.database_pool_size
    )
    try:
        relay = OutboxRelay(
            engine, settings.nats_url, settings.service_name, replicas=settings.nats_stream_replicas
        )
        consumer = workflow_events_consumer(
            create_session_factory(engine),
            settings.nats_url,
            inbox_pruning=InboxPruning.from_settings(settings),
        )
        await run_worker(relay, consumer)
    finally:
        await engine.dispose()


def main() -> None:
    settings = Settings()
    configure_logging(f"{settings.service_name}-worker", settings.log_level, json_logs=settings.log_json)
    configure_tracing(f"{settings.service_name}-worker", otlp_endpoint=settings.otel_exporter_otlp_endpoint)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
