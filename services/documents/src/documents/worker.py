"""The documents worker: ``python -m documents.worker``.

Runs, side by side until SIGTERM/SIGINT:

- the outbox relay: publishes this service's committed events to ``BATON_DOCUMENTS``;
- ``documents-processing``: consumes this service's own ``document.version_created`` and processes the
  version (extract, chunk, embed, index → ``document.indexed`` / ``document.processing_failed``);
- ``documents-projects``: consumes the projects service's client/project created/deleted events;
- the reindex runner: runs queued ``POST /v1/admin/reindex`` jobs.

Every part scales horizontally: consumers share their durable consumer, one relay and one reindex runner
lead at a time (advisory locks).
"""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from documents.admin.service import ReindexRunner
from documents.config import Settings
from documents.documents.blobstore import PostgresBlobStore
from documents.embeddings import EmbeddingProvider, build_provider
from documents.index.models import EMBEDDING_DIM
from documents.processing.extraction import ExtractionLimits
from documents.processing.service import Processor
from documents.projects.handlers import projects_consumer
from shared.db import create_engine, create_session_factory
from shared.events.documents import DocumentVersionCreated
from shared.messaging import ConsumerRunner, InboxPruning, OutboxRelay, Runnable, run_worker
from shared.messaging.streams import stream_name
from shared.telemetry import configure_logging, configure_tracing

__all__ = ["PROCESSING_CONSUMER", "build_processor", "components", "main", "processing_consumer", "run"]

PROCESSING_CONSUMER = "documents-processing"


def build_processor(
    settings: Settings, factory: async_sessionmaker[AsyncSession], provider: EmbeddingProvider
) -> Processor:
    return Processor(
        factory=factory,
        provider=provider,
        blobs=PostgresBlobStore(factory),
        limits=ExtractionLimits(
            timeout_seconds=settings.pdf_timeout_seconds,
            memory_bytes=settings.pdf_memory_bytes,
            max_pages=settings.pdf_max_pages,
            max_chars=settings.max_extracted_chars,
        ),
        max_chunks=settings.max_chunks_per_document,
    )


def processing_consumer(
    settings: Settings, factory: async_sessionmaker[AsyncSession], processor: Processor
) -> ConsumerRunner:
    """One message at a time (a version can take a while). The runner keeps the message in progress while
    the version is processed, so ``ack_wait`` only bounds how long a version whose worker died waits before
    another worker takes it up."""
    return ConsumerRunner(
        factory,
        settings.nats_url,
        consumer=PROCESSING_CONSUMER,
        stream=stream_name("documents"),
        subjects=[DocumentVersionCreated.event_subject],
        handlers={DocumentVersionCreated.event_type: processor.on_version_created},
        batch=1,
        ack_wait=settings.processing_ack_wait_seconds,
        max_deliver=6,
        backoff=(5, 15, 60, 120, 300),
        inbox_pruning=InboxPruning.from_settings(settings),
    )


def components(
    settings: Settings, factory: async_sessionmaker[AsyncSession], provider: EmbeddingProvider
) -> list[Runnable]:
    processor = build_processor(settings, factory, provider)
    return [
        OutboxRelay(
            factory, settings.nats_url, settings.service_name, replicas=settings.nats_stream_replicas
        ),
        processing_consumer(settings, factory, processor),
        projects_consumer(
            factory, settings.nats_url, processor.blobs, inbox_pruning=InboxPruning.from_settings(settings)
        ),
        ReindexRunner(
            factory,
            provider,
            batch_size=settings.reindex_batch_size,
            poll_seconds=settings.reindex_poll_seconds,
        ),
    ]


async def run(settings: Settings) -> None:
    provider = build_provider(settings, role="worker")
    if provider.dim != EMBEDDING_DIM:
        raise SystemExit(
            f"embedding model {provider.model_id} has {provider.dim} dims; the index holds {EMBEDDING_DIM}"
        )
    engine = create_engine(
        settings.database_url, schema=settings.schema_name, pool_size=settings.database_pool_size
    )
    try:
        await run_worker(*components(settings, create_session_factory(engine), provider))
    finally:
        await provider.aclose()
        await engine.dispose()


def main() -> None:
    settings = Settings()
    configure_logging(f"{settings.service_name}-worker", settings.log_level, json_logs=settings.log_json)
    configure_tracing(f"{settings.service_name}-worker", otlp_endpoint=settings.otel_exporter_otlp_endpoint)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
