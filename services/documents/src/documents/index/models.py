"""The search index: chunks (text + full-text vector) and their embeddings, LIST-partitioned by client.

Each client gets its own partition of both tables (``documents.index.partitions``), so a tenant's search
walks only its own HNSW graph and GIN index: filtered vector search stays exact-enough (recall ≈ 0.99 at
``ef_search`` 100, see RECIPES.md) instead of losing most hits to a post-filter on a shared graph.

``chunk_vectors`` holds one row per (chunk, model): searches read only the active model's rows, and a
reindex writes the next model's rows beside them before switching (``index_state.active_model_id``).
Indexes declared here on the partitioned parents are created on every partition automatically.

The service's runtime role owns nothing, so it cannot create or drop partitions itself: two SECURITY
DEFINER functions owned by the schema's owner do it (``partition_functions_sql``, created with the tables
here and by migration 0002), and the partitions they create belong to that owner.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

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
    Table,
    Text,
    event,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, TSVECTOR, UUID
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from documents.database import Base
from shared.db import new_id

__all__ = [
    "EMBEDDING_DIM",
    "TSV_CONFIG",
    "Chunk",
    "ChunkVector",
    "IndexState",
    "ReindexJob",
    "partition_functions_sql",
]

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
        # INCLUDE: counting a project's vectors (the search's exact-or-walk choice) reads the index only.
        Index("ix_chunk_vectors_project_id", "project_id", postgresql_include=["client_id", "model_id"]),
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


def partition_functions_sql(schema: str) -> list[str]:
    """``documents_ensure_client_partitions(client uuid)`` and ``documents_drop_client_partitions(client
    uuid)``, SECURITY DEFINER in ``schema`` and executable by no one but their owner until granted.

    A client's partitions are ``chunks_p_<32 hex>`` and ``chunk_vectors_p_<32 hex>`` (as
    ``documents.index.partitions.partition_name``); each takes the parent's indexes (primary key, GIN,
    HNSW, b-trees) when created. Both functions take the same transaction-scoped advisory lock as the
    service, refuse NULL, and refuse to touch a table of that name that is not a partition of its parent.
    Migration 0002 holds a frozen copy of this text; test_migrations compares the two.
    """
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        raise ValueError(f"not a valid schema name: {schema!r}")
    return [
        f"""
        CREATE FUNCTION documents_ensure_client_partitions(client uuid) RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = "{schema}", pg_temp AS $$
        DECLARE
            parent text;
            part text;
        BEGIN
            IF client IS NULL THEN
                RAISE EXCEPTION 'a client id is required' USING ERRCODE = 'null_value_not_allowed';
            END IF;
            PERFORM pg_advisory_xact_lock(hashtext('documents-partition:' || client::text));
            FOREACH parent IN ARRAY ARRAY['chunks', 'chunk_vectors'] LOOP
                part := parent || '_p_' || replace(client::text, '-', '');
                EXECUTE format('CREATE TABLE IF NOT EXISTS %I.%I PARTITION OF %I.%I FOR VALUES IN (%L)',
                               '{schema}', part, '{schema}', parent, client);
                IF NOT EXISTS (
                    SELECT FROM pg_inherits
                    WHERE inhrelid = format('%I.%I', '{schema}', part)::regclass
                      AND inhparent = format('%I.%I', '{schema}', parent)::regclass
                ) THEN
                    RAISE EXCEPTION '% is not a partition of %', part, parent;
                END IF;
            END LOOP;
        END $$
        """,
        f"""
        CREATE FUNCTION documents_drop_client_partitions(client uuid) RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = "{schema}", pg_temp AS $$
        DECLARE
            parent text;
            part regclass;
        BEGIN
            IF client IS NULL THEN
                RAISE EXCEPTION 'a client id is required' USING ERRCODE = 'null_value_not_allowed';
            END IF;
            PERFORM pg_advisory_xact_lock(hashtext('documents-partition:' || client::text));
            FOREACH parent IN ARRAY ARRAY['chunk_vectors', 'chunks'] LOOP
                part := to_regclass(format('%I.%I', '{schema}', parent || '_p_' || replace(client::text, '-', '')));
                CONTINUE WHEN part IS NULL;
                IF NOT EXISTS (
                    SELECT FROM pg_inherits
                    WHERE inhrelid = part AND inhparent = format('%I.%I', '{schema}', parent)::regclass
                ) THEN
                    RAISE EXCEPTION '% is not a partition of %', part, parent;
                END IF;
                EXECUTE format('DROP TABLE %s', part);
            END LOOP;
        END $$
        """,
        "REVOKE ALL ON FUNCTION documents_ensure_client_partitions(uuid) FROM PUBLIC",
        "REVOKE ALL ON FUNCTION documents_drop_client_partitions(uuid) FROM PUBLIC",
    ]


def _create_partition_functions(_table: Table, connection: Connection, **_: Any) -> None:
    schema = connection.scalar(text("SELECT current_schema()"))
    for statement in partition_functions_sql(str(schema)):
        connection.execute(text(statement))


event.listen(ChunkVector.__table__, "after_create", _create_partition_functions)


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
