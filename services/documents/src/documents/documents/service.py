"""Rules for documents and versions. Functions flush, never commit; events go to the outbox in the same
session, so a document and its ``document.*`` events exist together or not at all."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from documents.access import ensure_read, ensure_write
from documents.documents.blobstore import BlobStore
from documents.documents.content import SniffedContent
from documents.documents.models import Document, DocumentVersion
from documents.documents.repository import DocumentNotFound, DocumentRepository
from documents.documents.schemas import DocumentMeta, DocumentUpdate
from documents.index.repository import IndexRepository
from documents.projects.models import KnownProject
from shared.auth import Principal
from shared.db import new_id, utcnow
from shared.events.documents import (
    DocumentCreated,
    DocumentDeleted,
    DocumentUpdated,
    DocumentVersionCreated,
)
from shared.http import check_if_match
from shared.messaging import Actor, emit

__all__ = [
    "SERVICE",
    "Stored",
    "actor_of",
    "add_version",
    "create_document",
    "delete_documents",
    "readable_document",
    "update_document",
    "writable_document",
]

SERVICE = "documents"


def actor_of(principal: Principal) -> Actor:
    return Actor(subject=principal.subject, kind=principal.kind, name=principal.display_name)


@dataclass(frozen=True)
class Stored:
    document: Document
    version: DocumentVersion
    created: bool  # False: identical content was already the latest version (nothing new stored)


async def readable_document(session: AsyncSession, principal: Principal, document_id: uuid.UUID) -> Document:
    """The document if the caller may read it; 404 if it is missing or the caller cannot see its project
    (they look the same), 403 if the caller sees the project but may not read documents."""
    doc = await DocumentRepository(session).get(document_id)
    missing = DocumentNotFound("Document not found")
    if doc is None:
        raise missing
    ensure_read(principal, doc.client_id, doc.project_id, missing)
    return doc


async def writable_document(session: AsyncSession, principal: Principal, document_id: uuid.UUID) -> Document:
    """The document, row-locked, if the caller may change it (404 if not readable, 403 if read-only)."""
    doc = await DocumentRepository(session).lock(document_id)
    missing = DocumentNotFound("Document not found")
    if doc is None:
        raise missing
    ensure_write(principal, doc.client_id, doc.project_id, missing)
    return doc


async def _store_version(
    session: AsyncSession,
    doc: Document,
    content: SniffedContent,
    principal: Principal,
    blobs: BlobStore,
) -> DocumentVersion:
    number = doc.latest_version + 1
    version = DocumentVersion(
        id=new_id(),
        document_id=doc.id,
        client_id=doc.client_id,
        version=number,
        content_type=content.content_type,
        size_bytes=content.size,
        sha256=content.sha256,
        blob_key="",
        author=principal.subject,
        status="pending",
    )
    version.blob_key = str(version.id)
    await blobs.put(session, version.blob_key, doc.client_id, content.data)
    session.add(version)
    doc.latest_version = number
    doc.status = "pending"
    doc.failure_code = None
    doc.failure_reason = None
    doc.updated_at = utcnow()
    await session.flush()
    await emit(
        session,
        DocumentVersionCreated(
            document_id=doc.id,
            project_id=doc.project_id,
            client_id=doc.client_id,
            version_id=version.id,
            version=number,
            kind=doc.kind,  # type: ignore[arg-type]
            content_type=content.content_type,  # type: ignore[arg-type]
            size_bytes=content.size,
            sha256=content.sha256,
            author=principal.subject,
        ),
        tenant=doc.client_id,
        actor=actor_of(principal),
        resource_id=doc.id,
        source_service=SERVICE,
    )
    return version


async def create_document(
    session: AsyncSession,
    *,
    project: KnownProject,
    meta: DocumentMeta,
    content: SniffedContent,
    principal: Principal,
    blobs: BlobStore,
) -> Stored:
    """A new document with its first version; the same title, kind and content again returns the
    existing document (idempotent by content hash) instead of a duplicate."""
    repo = DocumentRepository(session)
    existing = await repo.same_content(project.id, meta.title, meta.kind, content.sha256)
    if existing is not None:
        version = await repo.version(existing.id, existing.latest_version)
        assert version is not None
        return Stored(existing, version, created=False)
    doc = Document(
        id=new_id(),
        client_id=project.client_id,
        project_id=project.id,
        title=meta.title,
        kind=meta.kind,
        epic=meta.epic,
        story=meta.story,
        tags=list(meta.tags),
        status="pending",
        latest_version=0,
        revision=1,
        created_by=principal.subject,
    )
    session.add(doc)
    await session.flush()
    await emit(
        session,
        DocumentCreated(
            document_id=doc.id,
            project_id=doc.project_id,
            client_id=doc.client_id,
            title=doc.title,
            kind=meta.kind,
            epic=doc.epic,
            story=doc.story,
            tags=list(doc.tags),
            created_by=principal.subject,
        ),
        tenant=doc.client_id,
        actor=actor_of(principal),
        resource_id=doc.id,
        source_service=SERVICE,
    )
    version = await _store_version(session, doc, content, principal, blobs)
    return Stored(doc, version, created=True)


async def add_version(
    session: AsyncSession, doc: Document, content: SniffedContent, principal: Principal, blobs: BlobStore
) -> Stored:
    """A new version of a (locked, writable) document; identical to the latest → that one, unchanged."""
    repo = DocumentRepository(session)
    latest = await repo.version(doc.id, doc.latest_version)
    if latest is not None and latest.sha256 == content.sha256:
        return Stored(doc, latest, created=False)
    version = await _store_version(session, doc, content, principal, blobs)
    return Stored(doc, version, created=True)


async def update_document(
    session: AsyncSession, doc: Document, changes: DocumentUpdate, principal: Principal, if_match: str | None
) -> Document:
    check_if_match(if_match, doc.revision)
    values = changes.model_dump(exclude_unset=True)
    changed = [name for name, value in values.items() if getattr(doc, name) != value]
    if not changed:
        return doc
    for name in changed:
        setattr(doc, name, values[name])
    doc.revision += 1
    doc.updated_at = utcnow()
    if "kind" in changed:
        await IndexRepository(session).set_kind(doc.client_id, doc.id, doc.kind)
    await session.flush()
    await emit(
        session,
        DocumentUpdated(
            document_id=doc.id,
            project_id=doc.project_id,
            client_id=doc.client_id,
            changed_fields=changed,
            title=doc.title,
            kind=doc.kind,  # type: ignore[arg-type]
            epic=doc.epic,
            story=doc.story,
            tags=list(doc.tags),
            revision=doc.revision,
        ),
        tenant=doc.client_id,
        actor=actor_of(principal),
        resource_id=doc.id,
        source_service=SERVICE,
    )
    return doc


async def delete_documents(
    session: AsyncSession,
    documents: Sequence[Document],
    *,
    actor: Actor,
    reason: str,
    blobs: BlobStore,
    drop_index: bool = True,
) -> None:
    """Delete documents with their versions, sections (cascade), content and index rows, one
    ``document.deleted`` each. ``drop_index=False`` when the caller drops the whole partition anyway."""
    if not documents:
        return
    # The documents' rows first, in id order, as every writer takes them (then versions, content, index):
    # a worker marking a version as processing waits here instead of deadlocking with the deletion.
    ids = sorted(d.id for d in documents)
    await session.execute(
        select(Document.id).where(Document.id.in_(ids)).order_by(Document.id).with_for_update()
    )
    repo = DocumentRepository(session)
    await blobs.delete(session, await repo.blob_keys([d.id for d in documents]))
    index = IndexRepository(session)
    for doc in documents:
        if drop_index:
            await index.delete_document(doc.client_id, doc.id)
        await emit(
            session,
            DocumentDeleted(
                document_id=doc.id,
                project_id=doc.project_id,
                client_id=doc.client_id,
                kind=doc.kind,  # type: ignore[arg-type]
                reason=reason,  # type: ignore[arg-type]
            ),
            tenant=doc.client_id,
            actor=actor,
            resource_id=doc.id,
            source_service=SERVICE,
        )
        await session.delete(doc)
    await session.flush()
