"""The search index: chunks (text + full-text vector) and their embeddings, LIST-partitioned by client.

Each client gets its own partition of both tables (``documents.index.partitions``), so a tenant's search
walks only its own HNSW graph and GIN index: filtered vector search stays exact-enough (recall ≈ 0.99 at
``ef_search`` 100, see RECIPES.md) instead of losing most hits to a post-filter on a shared graph.

``chunk_vectors`` holds one row per (chunk, model): searches read only the active model's rows, and a
reindex writes the next model's rows beside them before switching (``index_state.active_model_id``).
Indexes declared here on the partitioned parents are created on every partition automatically.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR, UUID
from sqlalchemy.orm import Mapped, mapped_column

from documents.database import Base
from shared.db import new_id

__all__ = ["EMBEDDING_DIM", "TSV_CONFIG", "Chunk", "ChunkVector", "IndexState", "ReindexJob"]

# The vector column's dimension. Another dimension means a migration (and a reindex), not a setting.
EMBEDDING_DIM = 384
TSV_CONFIG = "english"


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        PrimaryKeyConstraint("client_id", "id"),
        Index("ix_chunks_tsv", "tsv", postgresql_using="gin"),
        Index("ix_chunks_document_id", "document_id"),
        Index("ix_chunks_project_id", "project_id"),
        {"postgresql_partition_by": "LIST (client_id)"},
    )

    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), default=new_id)
    project_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    document_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    version_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(Text)
    ord: Mapped[int] = mapped_column(Integer)
    heading_path: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    # heading_path joined with " > " (array_to_string is not immutable, so the tsvector reads this).
    heading: Mapped[str] = mapped_column(Text, server_default="")
    page_start: Mapped[int | None] = mapped_column(Integer)
    page_end: Mapped[int | None] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    tsv: Mapped[str] = mapped_column(
        TSVECTOR,
        Computed(
            f"setweight(to_tsvector('{TSV_CONFIG}'::regconfig, heading), 'A') || "
            f"setweight(to_tsvector('{TSV_CONFIG}'::regconfig, content), 'B')",
            persisted=True,
        ),
    )


class ChunkVector(Base):
    __tablename__ = "chunk_vectors"
    __table_args__ = (
        PrimaryKeyConstraint("client_id", "chunk_id", "model_id"),
        Index(
            "ix_chunk_vectors_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
            postgresql_with={"m": 16, "ef_construction": 64},
        ),
        Index("ix_chunk_vectors_document_id", "document_id"),
        Index("ix_chunk_vectors_project_id", "project_id"),
        {"postgresql_partition_by": "LIST (client_id)"},
    )

    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    chunk_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    model_id: Mapped[str] = mapped_column(Text)
    # Copies of the chunk's filter columns, so the filter applies inside the vector scan (before ranking).
    project_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    document_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    kind: Mapped[str] = mapped_column(Text)
    embedding: Mapped[list[float]] = mapped_column(Vector(EMBEDDING_DIM))


class IndexState(Base):
    """One row: the model whose vectors searches use."""

    __tablename__ = "index_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default=text("1"))
    active_model_id: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ReindexJob(Base):
    __tablename__ = "reindex_jobs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'completed', 'failed')", name="status"),
        # At most one job waiting or running at a time.
        Index(
            "uq_reindex_jobs_open",
            text("(true)"),
            unique=True,
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    target_model_id: Mapped[str] = mapped_column(Text)
    previous_model_id: Mapped[str | None] = mapped_column(Text)
    force: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    status: Mapped[str] = mapped_column(Text, default="queued", server_default="queued")
    requested_by: Mapped[str] = mapped_column(Text)
    total_chunks: Mapped[int | None] = mapped_column(BigInteger)
    embedded_chunks: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
