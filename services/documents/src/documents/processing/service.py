"""Processing one stored version: extract → chunk → embed → index, or fail with a reason.

Runs in the worker, as the handler of this service's own ``document.version_created`` (the consumer
runner gives it a transaction that also records the event in the inbox). The outcome commits with that
transaction: chunks, vectors, sections, statuses and the ``document.indexed`` /
``document.processing_failed`` event. The file's fault (encrypted, corrupt, empty, too big) is a
``failed`` version; the platform's fault (embedding endpoint down) is a ``TransientError``, retried.

A version older than the one already indexed is marked ``superseded`` and not indexed; indexing a version
swaps the document's chunks in one transaction (search sees the old version until then).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from documents.documents.blobstore import BlobStore
from documents.documents.content import PDF
from documents.documents.models import Document, DocumentVersion, Section
from documents.documents.service import SERVICE
from documents.embeddings import EmbeddingError, EmbeddingProvider
from documents.index.partitions import ensure_client_partitions_now
from documents.index.repository import ChunkRow, IndexRepository
from documents.processing.chunking import ChunkingOptions, chunk_markdown, chunk_pages, split_sections
from documents.processing.extraction import ExtractionFailed, ExtractionLimits, extract_pdf, extract_text
from shared.db import new_id, transaction, utcnow
from shared.events.documents import DocumentIndexed, DocumentProcessingFailed, DocumentVersionCreated
from shared.messaging import Actor, Envelope, TransientError, emit

__all__ = ["SYSTEM_ACTOR", "Processor", "embedding_text"]

log = logging.getLogger(__name__)

SYSTEM_ACTOR = Actor(subject="documents-worker", kind="service", name="documents processing")


def embedding_text(chunk: ChunkRow, title: str) -> str:
    """What the model sees: where the chunk sits (heading path, or the title) then its text."""
    return f"{chunk.heading or title}\n\n{chunk.content}"


@dataclass
class _Prepared:
    chunks: list[ChunkRow]
    sections: list[tuple[int, str, str]]
    page_count: int | None


@dataclass
class Processor:
    factory: async_sessionmaker[AsyncSession]
    provider: EmbeddingProvider
    blobs: BlobStore
    limits: ExtractionLimits = field(default_factory=ExtractionLimits)
    max_chunks: int = 3000
    chunking: ChunkingOptions = field(default_factory=ChunkingOptions)

    async def on_version_created(self, session: AsyncSession, envelope: Envelope) -> None:
        """Consumer handler for ``baton.documents.document.version_created.v1``."""
        event = envelope.parse_data(DocumentVersionCreated)
        await self.process(session, event.version_id)

    async def process(self, session: AsyncSession, version_id: uuid.UUID) -> str:
        """Process the version; returns its resulting status (or ``missing`` if it was deleted)."""
        version = await session.get(DocumentVersion, version_id)
        if version is None:
            return "missing"
        if version.status in ("indexed", "failed", "superseded"):
            return version.status
        doc = await session.get(Document, version.document_id)
        if doc is None:
            return "missing"
        if doc.indexed_version is not None and doc.indexed_version > version.version:
            return await self._supersede(session, version)
        await self._mark_processing(doc.id, version.id, version.version)

        data = await self.blobs.get(session, version.blob_key)
        if data is None:
            return await self._fail(
                session, doc, version, "content_missing", "The stored content is missing; upload it again."
            )
        try:
            prepared = await self._prepare(version.content_type, data)
        except ExtractionFailed as failure:
            return await self._fail(session, doc, version, failure.code, failure.reason)

        try:
            vectors = await self.provider.embed_documents(
                [embedding_text(c, doc.title) for c in prepared.chunks]
            )
        except EmbeddingError as exc:
            raise TransientError(f"embedding failed: {exc}") from exc

        if not await ensure_client_partitions_now(self.factory, doc.client_id):
            return "missing"  # the client was deleted meanwhile
        locked = await session.get(Document, doc.id, with_for_update=True, populate_existing=True)
        if locked is None:
            return "missing"
        doc = locked
        if doc.indexed_version is not None and doc.indexed_version > version.version:
            return await self._supersede(session, version)

        model_id = self.provider.model_id
        await IndexRepository(session).claim_active_model(model_id)
        await IndexRepository(session).replace_document_chunks(
            client_id=doc.client_id,
            project_id=doc.project_id,
            document_id=doc.id,
            version_id=version.id,
            version=version.version,
            kind=doc.kind,
            chunks=prepared.chunks,
            vectors=vectors,
            model_id=model_id,
        )
        for ord_, heading, content in prepared.sections:
            session.add(
                Section(
                    id=new_id(),
                    document_id=doc.id,
                    version_id=version.id,
                    client_id=doc.client_id,
                    ord=ord_,
                    heading=heading,
                    content=content,
                )
            )
        now = utcnow()
        version.status, version.failure_code, version.failure_reason = "indexed", None, None
        version.chunk_count = len(prepared.chunks)
        version.page_count = prepared.page_count
        version.model_id = model_id
        version.processed_at = now
        doc.indexed_version = version.version
        if version.version == doc.latest_version:
            doc.status, doc.failure_code, doc.failure_reason = "indexed", None, None
        doc.updated_at = now
        await session.flush()
        await emit(
            session,
            DocumentIndexed(
                document_id=doc.id,
                project_id=doc.project_id,
                client_id=doc.client_id,
                version_id=version.id,
                version=version.version,
                kind=doc.kind,  # type: ignore[arg-type]
                title=doc.title,
                chunk_count=len(prepared.chunks),
                section_count=len(prepared.sections),
                model_id=model_id,
            ),
            tenant=doc.client_id,
            actor=SYSTEM_ACTOR,
            resource_id=doc.id,
            source_service=SERVICE,
        )
        return "indexed"

    async def _prepare(self, content_type: str, data: bytes) -> _Prepared:
        if content_type == PDF:
            extracted = await extract_pdf(data, self.limits)
            pages = list(extracted.pages or ())
            chunks = chunk_pages(pages, self.chunking)
            sections: list[tuple[int, str, str]] = []
            page_count: int | None = len(pages)
        else:
            text = extract_text(data, self.limits).text or ""
            chunks = chunk_markdown(text, self.chunking)
            sections = [(s.ord, s.heading, s.content) for s in split_sections(text)]
            page_count = None
        if not chunks:
            raise ExtractionFailed("no_text", "The document has no text to index.")
        if len(chunks) > self.max_chunks:
            raise ExtractionFailed(
                "too_many_chunks",
                f"The document is split into {len(chunks)} chunks; at most {self.max_chunks} are indexed. "
                "Split it into smaller documents.",
            )
        return _Prepared(chunks, sections, page_count)

    async def _mark_processing(self, document_id: uuid.UUID, version_id: uuid.UUID, number: int) -> None:
        """Make ``processing`` visible right away (its own transaction: the outcome commits much later).

        The document's row first, then its version's, as every writer takes them: a deletion holds the
        document and then removes its versions, so the other order could deadlock with it."""
        async with transaction(self.factory) as s:
            await s.execute(select(Document.id).where(Document.id == document_id).with_for_update())
            await s.execute(
                update(Document)
                .where(
                    Document.id == document_id,
                    Document.latest_version == number,
                    Document.status == "pending",
                )
                .values(status="processing")
            )
            await s.execute(
                update(DocumentVersion)
                .where(DocumentVersion.id == version_id, DocumentVersion.status == "pending")
                .values(status="processing")
            )

    async def _supersede(self, session: AsyncSession, version: DocumentVersion) -> str:
        version.status = "superseded"
        version.processed_at = utcnow()
        await session.flush()
        return "superseded"

    async def _fail(
        self, session: AsyncSession, doc: Document, version: DocumentVersion, code: str, reason: str
    ) -> str:
        log.info("document %s version %s failed: %s", doc.id, version.version, code)
        locked = await session.get(Document, doc.id, with_for_update=True, populate_existing=True)
        if locked is None:
            return "missing"
        doc = locked
        now = utcnow()
        version.status, version.failure_code, version.failure_reason = "failed", code, reason
        version.processed_at = now
        if version.version == doc.latest_version:
            doc.status, doc.failure_code, doc.failure_reason = "failed", code, reason
            doc.updated_at = now
        await session.flush()
        await emit(
            session,
            DocumentProcessingFailed(
                document_id=doc.id,
                project_id=doc.project_id,
                client_id=doc.client_id,
                version_id=version.id,
                version=version.version,
                kind=doc.kind,  # type: ignore[arg-type]
                code=code,
                reason=reason,
            ),
            tenant=doc.client_id,
            actor=SYSTEM_ACTOR,
            resource_id=doc.id,
            source_service=SERVICE,
        )
        return "failed"
