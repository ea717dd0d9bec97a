"""Events this service consumes: a new project starts its workflow; an indexed document completes the
task whose artifact it is. Both are idempotent (the consumer's inbox skips a redelivered event, and the
service functions treat a second event for the same fact as a no-op)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.events.documents import DocumentIndexed
from shared.events.projects import ProjectCreated
from shared.messaging import ConsumerRunner, Envelope, stream_name
from workflows.instances import service

__all__ = [
    "DOCUMENTS_CONSUMER",
    "DOCUMENT_INDEXED_SUBJECT",
    "PROJECTS_CONSUMER",
    "PROJECT_CREATED_SUBJECT",
    "documents_consumer",
    "on_document_indexed",
    "on_project_created",
    "projects_consumer",
]

PROJECT_CREATED_SUBJECT = "baton.projects.project.created"
DOCUMENT_INDEXED_SUBJECT = "baton.documents.document.indexed"
PROJECTS_CONSUMER = "workflows-projects"
DOCUMENTS_CONSUMER = "workflows-documents"


async def on_project_created(session: AsyncSession, envelope: Envelope) -> None:
    await service.on_project_created(session, envelope.parse_data(ProjectCreated), tenant=envelope.tenant)


async def on_document_indexed(session: AsyncSession, envelope: Envelope) -> None:
    await service.on_document_indexed(session, envelope.parse_data(DocumentIndexed), tenant=envelope.tenant)


def projects_consumer(
    session_factory: async_sessionmaker[AsyncSession], nats_url: str, **options: Any
) -> ConsumerRunner:
    """``workflows-projects`` on ``BATON_PROJECTS``: ``project.created`` starts the project's workflow."""
    return ConsumerRunner(
        session_factory,
        nats_url,
        consumer=PROJECTS_CONSUMER,
        stream=stream_name("projects"),
        subjects=[PROJECT_CREATED_SUBJECT],
        handlers={ProjectCreated.event_type: on_project_created},
        **options,
    )


def documents_consumer(
    session_factory: async_sessionmaker[AsyncSession], nats_url: str, **options: Any
) -> ConsumerRunner:
    """``workflows-documents`` on ``BATON_DOCUMENTS``: ``document.indexed`` feeds the engine."""
    return ConsumerRunner(
        session_factory,
        nats_url,
        consumer=DOCUMENTS_CONSUMER,
        stream=stream_name("documents"),
        subjects=[DOCUMENT_INDEXED_SUBJECT],
        handlers={DocumentIndexed.event_type: on_document_indexed},
        **options,
    )
