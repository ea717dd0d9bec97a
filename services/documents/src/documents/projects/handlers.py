"""Consumer of the projects service's events: learn clients and projects, forget them when deleted.

``client.created`` creates the client's index partitions; ``project.created`` records project → client
(and creates the partitions if the client's own event has not arrived); ``project.deleted`` deletes the
project's documents, content and index rows; ``client.deleted`` tombstones the client, deletes whatever of
it is left and drops its partitions. Every handler is idempotent and tolerates reordering (tombstones and
the projects' aggregate ``version``).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from documents.documents.blobstore import BlobStore
from documents.documents.repository import DocumentRepository
from documents.documents.service import delete_documents
from documents.index.partitions import drop_client_partitions, ensure_client_partitions
from documents.index.repository import IndexRepository
from documents.projects.repository import ProjectRepository
from shared.events.projects import ClientCreated, ClientDeleted, ProjectCreated, ProjectDeleted
from shared.messaging import Actor, ConsumerRunner, Envelope, Handler
from shared.messaging.streams import stream_name

__all__ = ["CONSUMER", "ProjectEvents", "projects_consumer"]

CONSUMER = "documents-projects"


def _actor(envelope: Envelope) -> Actor:
    return envelope.actor


class ProjectEvents:
    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def handlers(self) -> dict[str, Handler]:
        return {
            ClientCreated.event_type: self.on_client_created,
            ClientDeleted.event_type: self.on_client_deleted,
            ProjectCreated.event_type: self.on_project_created,
            ProjectDeleted.event_type: self.on_project_deleted,
        }

    async def on_client_created(self, session: AsyncSession, envelope: Envelope) -> None:
        event = envelope.parse_data(ClientCreated)
        await ensure_client_partitions(session, event.client_id)

    async def on_project_created(self, session: AsyncSession, envelope: Envelope) -> None:
        event = envelope.parse_data(ProjectCreated)
        repo = ProjectRepository(session)
        if await repo.client_deleted(event.client_id):
            return
        await repo.upsert(event.project_id, event.client_id, event.name, event.version)
        await ensure_client_partitions(session, event.client_id)

    async def on_project_deleted(self, session: AsyncSession, envelope: Envelope) -> None:
        event = envelope.parse_data(ProjectDeleted)
        await ProjectRepository(session).mark_deleted(event.project_id, event.client_id, event.version)
        await self.delete_project_data(
            session, event.client_id, event.project_id, _actor(envelope), event.reason
        )

    async def on_client_deleted(self, session: AsyncSession, envelope: Envelope) -> None:
        event = envelope.parse_data(ClientDeleted)
        await ProjectRepository(session).mark_client_deleted(event.client_id)
        docs = await DocumentRepository(session).of_client(event.client_id)
        await delete_documents(
            session, docs, actor=_actor(envelope), reason="client_deleted", blobs=self.blobs, drop_index=False
        )
        await self.blobs.delete_client(session, event.client_id)
        await drop_client_partitions(session, event.client_id)

    async def delete_project_data(
        self, session: AsyncSession, client_id: uuid.UUID, project_id: uuid.UUID, actor: Actor, reason: str
    ) -> None:
        docs = await DocumentRepository(session).of_project(project_id)
        await delete_documents(
            session,
            docs,
            actor=actor,
            reason="client_deleted" if reason == "client_deleted" else "project_deleted",
            blobs=self.blobs,
            drop_index=False,
        )
        await IndexRepository(session).delete_project(client_id, project_id)


def projects_consumer(
    factory: async_sessionmaker[AsyncSession], nats_url: str, blobs: BlobStore, **options: Any
) -> ConsumerRunner:
    events = ProjectEvents(blobs)
    return ConsumerRunner(
        factory,
        nats_url,
        consumer=CONSUMER,
        stream=stream_name("projects"),
        subjects=[
            "baton.projects.client.created",
            "baton.projects.client.deleted",
            "baton.projects.project.created",
            "baton.projects.project.deleted",
        ],
        handlers=events.handlers(),
        **options,
    )
