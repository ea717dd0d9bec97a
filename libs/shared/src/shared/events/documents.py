"""Events of the documents service: documents, their immutable versions, processing, the search index.

The envelope's ``tenant`` is the client id (absent for the platform-level index events) and its
``subject`` the id of the document (or reindex job) the event is about. Events name what changed, never
the content: a consumer that needs the text reads it through the documents API with its own token.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from shared.events.catalog import Event, register

__all__ = [
    "DocumentCreated",
    "DocumentDeleted",
    "DocumentIndexed",
    "DocumentProcessingFailed",
    "DocumentUpdated",
    "DocumentVersionCreated",
    "ReindexCompleted",
    "ReindexRequested",
]

DocumentKind = Literal[
    "project-brief",
    "prd",
    "front-end-spec",
    "architecture",
    "ui-architecture",
    "story",
    "qa-gate",
    "epic-retrospective",
    "sprint-status",
    "reference",
]
ContentType = Literal["text/markdown", "text/plain", "application/pdf"]


@register
class DocumentCreated(Event):
    """A document was created in a project, with its first version (a ``document.version_created``
    follows in the same transaction)."""

    event_type: ClassVar[str] = "baton.documents.document.created.v1"
    document_id: UUID
    project_id: UUID
    client_id: UUID
    title: str
    kind: DocumentKind
    epic: int | None = None
    story: int | None = None
    tags: list[str] = Field(default_factory=list)
    created_by: str


@register
class DocumentUpdated(Event):
    """A document's metadata changed; ``changed_fields`` names what changed, the rest is the state after.
    ``revision`` is the document's metadata revision (its ETag), for ordering."""

    event_type: ClassVar[str] = "baton.documents.document.updated.v1"
    document_id: UUID
    project_id: UUID
    client_id: UUID
    changed_fields: list[str]
    title: str
    kind: DocumentKind
    epic: int | None = None
    story: int | None = None
    tags: list[str] = Field(default_factory=list)
    revision: int = Field(ge=1)


@register
class DocumentVersionCreated(Event):
    """A new immutable version was stored; the processing worker extracts, chunks and indexes it."""

    event_type: ClassVar[str] = "baton.documents.document.version_created.v1"
    document_id: UUID
    project_id: UUID
    client_id: UUID
    version_id: UUID
    version: int = Field(ge=1)
    kind: DocumentKind
    content_type: ContentType
    size_bytes: int = Field(ge=1)
    sha256: str
    author: str


@register
class DocumentIndexed(Event):
    """A version was processed and is searchable: ``chunk_count`` chunks embedded with ``model_id``.
    The workflows service completes the step whose artifact this document (``kind``) is."""

    event_type: ClassVar[str] = "baton.documents.document.indexed.v1"
    document_id: UUID
    project_id: UUID
    client_id: UUID
    version_id: UUID
    version: int = Field(ge=1)
    kind: DocumentKind
    title: str
    chunk_count: int = Field(ge=0)
    section_count: int = Field(ge=0)
    model_id: str


@register
class DocumentProcessingFailed(Event):
    """A version could not be processed. ``code`` is stable (``pdf_encrypted``, ``pdf_corrupt``,
    ``pdf_no_text``, ``pdf_too_large``, ``pdf_timeout``, ``too_many_chunks``, ...); ``reason`` says what a
    person can do about it."""

    event_type: ClassVar[str] = "baton.documents.document.processing_failed.v1"
    document_id: UUID
    project_id: UUID
    client_id: UUID
    version_id: UUID
    version: int = Field(ge=1)
    kind: DocumentKind
    code: str
    reason: str


@register
class DocumentDeleted(Event):
    """A document, its versions and its index entries were deleted: on request, or with its project or
    client."""

    event_type: ClassVar[str] = "baton.documents.document.deleted.v1"
    document_id: UUID
    project_id: UUID
    client_id: UUID
    kind: DocumentKind
    reason: Literal["requested", "project_deleted", "client_deleted"] = "requested"


@register
class ReindexRequested(Event):
    """A platform administrator asked to re-embed every chunk with ``target_model_id``."""

    event_type: ClassVar[str] = "baton.documents.index.reindex_requested.v1"
    job_id: UUID
    target_model_id: str
    force: bool = False
    requested_by: str


@register
class ReindexCompleted(Event):
    """A reindex job ended. On ``completed`` searches use ``model_id`` from now on; on ``failed`` they keep
    using ``previous_model_id`` and ``error`` says why."""

    event_type: ClassVar[str] = "baton.documents.index.reindex_completed.v1"
    job_id: UUID
    status: Literal["completed", "failed"]
    model_id: str
    previous_model_id: str | None = None
    chunks_embedded: int = Field(ge=0)
    error: str | None = None
