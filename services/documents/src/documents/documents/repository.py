"""Named queries on documents, versions and sections."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from documents.documents.models import Document, DocumentVersion, Section
from shared.db import Repository
from shared.errors import NotFound

__all__ = ["DocumentNotFound", "DocumentRepository", "VersionNotFound"]


class DocumentNotFound(NotFound):
    code = "document_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class DocumentRepository(Repository[Document]):
    model = Document
    not_found = DocumentNotFound

    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session)

    async def lock(self, document_id: uuid.UUID) -> Document | None:
        """The document row locked for this transaction (version numbering, metadata writes)."""
        return await self.get_for_update(document_id)

    async def version(self, document_id: uuid.UUID, number: int) -> DocumentVersion | None:
        return (
            await self.session.execute(
                select(DocumentVersion).where(
                    DocumentVersion.document_id == document_id, DocumentVersion.version == number
                )
            )
        ).scalar_one_or_none()

    async def version_by_id(self, version_id: uuid.UUID) -> DocumentVersion | None:
        return await self.session.get(DocumentVersion, version_id)

    async def latest_versions(self, documents: Sequence[Document]) -> dict[uuid.UUID, DocumentVersion]:
        if not documents:
            return {}
        pairs = [
            and_(DocumentVersion.document_id == d.id, DocumentVersion.version == d.latest_version)
            for d in documents
        ]
        rows = (await self.session.execute(select(DocumentVersion).where(or_(*pairs)))).scalars()
        return {v.document_id: v for v in rows}

    async def same_content(
        self, project_id: uuid.UUID, title: str, kind: str, sha256: str
    ) -> Document | None:
        """A document of the project with this title and kind whose latest version has this content."""
        query = (
            select(Document)
            .join(
                DocumentVersion,
                and_(
                    DocumentVersion.document_id == Document.id,
                    DocumentVersion.version == Document.latest_version,
                ),
            )
            .where(
                Document.project_id == project_id,
                Document.title == title,
                Document.kind == kind,
                DocumentVersion.sha256 == sha256,
            )
            .limit(1)
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    async def list_for_project(
        self,
        project_id: uuid.UUID,
        *,
        kind: str | None,
        status: str | None,
        tag: str | None,
        q: str | None,
        before: uuid.UUID | None,
        limit: int,
    ) -> list[Document]:
        """Newest first (ids are UUIDv7), ``limit`` + 1 rows so the caller knows whether more exist."""
        query = select(Document).where(Document.project_id == project_id)
        if kind is not None:
            query = query.where(Document.kind == kind)
        if status is not None:
            query = query.where(Document.status == status)
        if tag is not None:
            query = query.where(Document.tags.contains([tag.strip().lower()]))
        if q:
            query = query.where(Document.title.ilike(f"%{_like_escape(q)}%", escape="\\"))
        if before is not None:
            query = query.where(Document.id < before)
        query = query.order_by(Document.id.desc()).limit(limit + 1)
        return list((await self.session.execute(query)).scalars())

    async def list_versions(
        self, document_id: uuid.UUID, *, before: int | None, limit: int
    ) -> list[DocumentVersion]:
        query = select(DocumentVersion).where(DocumentVersion.document_id == document_id)
        if before is not None:
            query = query.where(DocumentVersion.version < before)
        query = query.order_by(DocumentVersion.version.desc()).limit(limit + 1)
        return list((await self.session.execute(query)).scalars())

    async def blob_keys(self, document_ids: Sequence[uuid.UUID]) -> list[str]:
        if not document_ids:
            return []
        rows = await self.session.scalars(
            select(DocumentVersion.blob_key).where(DocumentVersion.document_id.in_(list(document_ids)))
        )
        return list(rows)

    async def of_project(self, project_id: uuid.UUID) -> list[Document]:
        return list(
            (await self.session.execute(select(Document).where(Document.project_id == project_id))).scalars()
        )

    async def of_client(self, client_id: uuid.UUID) -> list[Document]:
        return list(
            (await self.session.execute(select(Document).where(Document.client_id == client_id))).scalars()
        )

    async def sections(self, version_id: uuid.UUID) -> list[Section]:
        return list(
            (
                await self.session.execute(
                    select(Section).where(Section.version_id == version_id).order_by(Section.ord)
                )
            ).scalars()
        )

    async def count_sections(self, version_id: uuid.UUID) -> int:
        return int(
            await self.session.scalar(
                select(func.count()).select_from(Section).where(Section.version_id == version_id)
            )
            or 0
        )
