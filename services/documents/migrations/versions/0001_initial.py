"""Documents, versions, content, sections, the partitioned search index, known projects, messaging.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.messaging.outbox import create_messaging_tables, drop_messaging_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

KINDS = (
    "'project-brief', 'prd', 'front-end-spec', 'architecture', 'ui-architecture', 'story', 'qa-gate', "
    "'epic-retrospective', 'sprint-status', 'reference'"
)


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public")
    create_messaging_tables(op.get_bind())

    op.create_table(
        "clients",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("partitioned", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_clients"),
    )
    op.create_table(
        "projects",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("client_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False, server_default=""),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
    )
    op.create_index("ix_projects_client_id", "projects", ["client_id"])

    op.create_table(
        "documents",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("client_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("project_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("epic", sa.Integer(), nullable=True),
        sa.Column("story", sa.Integer(), nullable=True),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), nullable=False, server_default="{}"),
        sa.Column("status", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("failure_code", sa.Text(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("latest_version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("indexed_version", sa.Integer(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_documents"),
        sa.CheckConstraint(f"kind IN ({KINDS})", name="ck_documents_kind"),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'indexed', 'failed')", name="ck_documents_status"
        ),
    )
    op.create_index("ix_documents_client_id", "documents", ["client_id"])
    op.create_index("ix_documents_project_id_id", "documents", ["project_id", "id"])

    op.create_table(
        "document_versions",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("document_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("client_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("blob_key", sa.Text(), nullable=False),
        sa.Column("author", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("failure_code", sa.Text(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("chunk_count", sa.Integer(), nullable=True),
        sa.Column("page_count", sa.Integer(), nullable=True),
        sa.Column("model_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_document_versions"),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            ondelete="CASCADE",
            name="fk_document_versions_document_id_documents",
        ),
        sa.UniqueConstraint("document_id", "version", name="uq_document_versions_document_id_version"),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'indexed', 'failed', 'superseded')",
            name="ck_document_versions_status",
        ),
        sa.CheckConstraint("size_bytes > 0", name="ck_document_versions_size_positive"),
    )

    op.create_table(
        "blobs",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("client_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("key", name="pk_blobs"),
    )
    op.create_index("ix_blobs_client_id", "blobs", ["client_id"])
    # Uncompressed out-of-line storage: streaming reads slices without decompressing the whole value.
    op.execute("ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL")

    op.create_table(
        "sections",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("document_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("version_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("client_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("ord", sa.Integer(), nullable=False),
        sa.Column("heading", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sections"),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], ondelete="CASCADE", name="fk_sections_document_id_documents"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["document_versions.id"],
            ondelete="CASCADE",
            name="fk_sections_version_id_document_versions",
        ),
        sa.UniqueConstraint("version_id", "ord", name="uq_sections_version_id_ord"),
    )
    op.create_index("ix_sections_document_id", "sections", ["document_id"])

    # The search index: LIST-partitioned by client; a partition per client is created at run time
    # (documents.index.partitions), inheriting these indexes.
    op.execute(
        """
        CREATE TABLE chunks (
            client_id uuid NOT NULL,
            id uuid NOT NULL,
            project_id uuid NOT NULL,
            document_id uuid NOT NULL,
            version_id uuid NOT NULL,
            version integer NOT NULL,
            kind text NOT NULL,
            ord integer NOT NULL,
            heading_path text[] NOT NULL DEFAULT '{}',
            heading text NOT NULL DEFAULT '',
            page_start integer,
            page_end integer,
            content text NOT NULL,
            tsv tsvector GENERATED ALWAYS AS (
                setweight(to_tsvector('english'::regconfig, heading), 'A') ||
                setweight(to_tsvector('english'::regconfig, content), 'B')
            ) STORED NOT NULL,
            CONSTRAINT pk_chunks PRIMARY KEY (client_id, id)
        ) PARTITION BY LIST (client_id)
        """
    )
    op.execute("CREATE INDEX ix_chunks_tsv ON chunks USING gin (tsv)")
    op.execute("CREATE INDEX ix_chunks_document_id ON chunks (document_id)")
    op.execute("CREATE INDEX ix_chunks_project_id ON chunks (project_id)")
    op.execute(
        """
        CREATE TABLE chunk_vectors (
            client_id uuid NOT NULL,
            chunk_id uuid NOT NULL,
            model_id text NOT NULL,
            project_id uuid NOT NULL,
            document_id uuid NOT NULL,
            kind text NOT NULL,
            embedding vector(384) NOT NULL,
            CONSTRAINT pk_chunk_vectors PRIMARY KEY (client_id, chunk_id, model_id)
        ) PARTITION BY LIST (client_id)
        """
    )
    op.execute(
        "CREATE INDEX ix_chunk_vectors_embedding ON chunk_vectors "
        "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
    )
    op.execute("CREATE INDEX ix_chunk_vectors_document_id ON chunk_vectors (document_id)")
    op.execute("CREATE INDEX ix_chunk_vectors_project_id ON chunk_vectors (project_id)")

    op.create_table(
        "index_state",
        sa.Column("id", sa.SmallInteger(), nullable=False, server_default=sa.text("1")),
        sa.Column("active_model_id", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_index_state"),
        sa.CheckConstraint("id = 1", name="ck_index_state_single_row"),
    )
    op.create_table(
        "reindex_jobs",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("target_model_id", sa.Text(), nullable=False),
        sa.Column("previous_model_id", sa.Text(), nullable=True),
        sa.Column("force", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("status", sa.Text(), nullable=False, server_default="queued"),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("total_chunks", sa.BigInteger(), nullable=True),
        sa.Column("embedded_chunks", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_reindex_jobs"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed')", name="ck_reindex_jobs_status"
        ),
    )
    op.execute(
        "CREATE UNIQUE INDEX uq_reindex_jobs_open ON reindex_jobs ((true)) "
        "WHERE status IN ('queued', 'running')"
    )


def downgrade() -> None:
    for table in (
        "reindex_jobs",
        "index_state",
        "chunk_vectors",
        "chunks",
        "sections",
        "blobs",
        "document_versions",
        "documents",
        "projects",
        "clients",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    drop_messaging_tables(op.get_bind())
