"""Writes to the search index: a version's chunks and vectors in, a document's/project's out."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from documents.index.models import Chunk, ChunkVector, IndexState
from shared.db import new_id

__all__ = [
    "ChunkRow",
    "IndexRepository",
    "vector_literal",
]


def vector_literal(vector: Sequence[float] | np.ndarray) -> str:
    """pgvector's text form (``[0.1,0.2,...]``), bound as text and cast in SQL (no driver codec needed)."""
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


@dataclass(frozen=True)
class ChunkRow:
    ord: int
    heading_path: tuple[str, ...]
    content: str
    page_start: int | None = None
    page_end: int | None = None

    @property
    def heading(self) -> str:
        return " > ".join(self.heading_path)


_INSERT_VECTOR = text(
    "INSERT INTO chunk_vectors (client_id, chunk_id, model_id, project_id, document_id, kind, embedding) "
    "VALUES (:client_id, :chunk_id, :model_id, :project_id, :document_id, :kind, "
    "CAST(CAST(:embedding AS text) AS vector)) "
    "ON CONFLICT (client_id, chunk_id, model_id) DO UPDATE SET embedding = EXCLUDED.embedding"
)


class IndexRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def replace_document_chunks(
        self,
        *,
        client_id: uuid.UUID,
        project_id: uuid.UUID,
        document_id: uuid.UUID,
        version_id: uuid.UUID,
        version: int,
        kind: str,
        chunks: Sequence[ChunkRow],
        vectors: np.ndarray,
        model_id: str,
    ) -> list[uuid.UUID]:
        """Swap the document's indexed chunks for this version's, in the caller's transaction, so a
        search sees either the old version or the new one, never both or neither."""
        await self.delete_document(client_id, document_id)
        ids = [new_id() for _ in chunks]
        if not chunks:
            return ids
        await self.session.execute(
            pg_insert(Chunk),
            [
                {
                    "client_id": client_id,
                    "id": chunk_id,
                    "project_id": project_id,
                    "document_id": document_id,
                    "version_id": version_id,
                    "version": version,
                    "kind": kind,
                    "ord": chunk.ord,
                    "heading_path": list(chunk.heading_path),
                    "heading": chunk.heading,
                    "page_start": chunk.page_start,
                    "page_end": chunk.page_end,
                    "content": chunk.content,
                }
                for chunk_id, chunk in zip(ids, chunks, strict=True)
            ],
        )
        await self.insert_vectors(
            [(client_id, chunk_id, project_id, document_id, kind) for chunk_id in ids], vectors, model_id
        )
        return ids

    async def insert_vectors(
        self,
        rows: Sequence[tuple[uuid.UUID, uuid.UUID, uuid.UUID, uuid.UUID, str]],
        vectors: np.ndarray,
        model_id: str,
    ) -> None:
        """``rows`` are (client_id, chunk_id, project_id, document_id, kind), one per vector row."""
        if not rows:
            return
        await self.session.execute(
            _INSERT_VECTOR,
            [
                {
                    "client_id": client_id,
                    "chunk_id": chunk_id,
                    "model_id": model_id,
                    "project_id": project_id,
                    "document_id": document_id,
                    "kind": kind,
                    "embedding": vector_literal(vector),
                }
                for (client_id, chunk_id, project_id, document_id, kind), vector in zip(
                    rows, vectors, strict=True
                )
            ],
        )

    async def delete_document(self, client_id: uuid.UUID, document_id: uuid.UUID) -> None:
        await self.session.execute(
            delete(ChunkVector).where(
                ChunkVector.client_id == client_id, ChunkVector.document_id == document_id
            )
        )
        await self.session.execute(
            delete(Chunk).where(Chunk.client_id == client_id, Chunk.document_id == document_id)
        )

    async def delete_project(self, client_id: uuid.UUID, project_id: uuid.UUID) -> None:
        await self.session.execute(
            delete(ChunkVector).where(
                ChunkVector.client_id == client_id, ChunkVector.project_id == project_id
            )
        )
        await self.session.execute(
            delete(Chunk).where(Chunk.client_id == client_id, Chunk.project_id == project_id)
        )

    async def set_kind(self, client_id: uuid.UUID, document_id: uuid.UUID, kind: str) -> None:
        """Keep the denormalised filter column in step with a document whose kind changed."""
        for model in (Chunk, ChunkVector):
            await self.session.execute(
                update(model)
                .where(model.client_id == client_id, model.document_id == document_id)
                .values(kind=kind)
            )

    # -- the active model ----------------------------------------------------------------------------

    async def active_model(self) -> str | None:
        value = await self.session.scalar(select(IndexState.active_model_id).where(IndexState.id == 1))
        return None if value is None else str(value)

    async def claim_active_model(self, model_id: str) -> str:
        """The active model; ``model_id`` becomes it if none is set yet (the first model ever used)."""
        await self.session.execute(
            pg_insert(IndexState).values(id=1, active_model_id=model_id).on_conflict_do_nothing()
        )
        await self.session.execute(
            update(IndexState)
            .where(IndexState.id == 1, IndexState.active_model_id.is_(None))
            .values(active_model_id=model_id)
        )
        return await self.active_model() or model_id

    async def set_active_model(self, model_id: str) -> None:
        await self.session.execute(
            pg_insert(IndexState)
            .values(id=1, active_model_id=model_id)
            .on_conflict_do_update(
                index_elements=[IndexState.id],
                set_={"active_model_id": model_id, "updated_at": text("now()")},
            )
        )
