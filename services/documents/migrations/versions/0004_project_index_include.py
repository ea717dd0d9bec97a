"""``chunk_vectors``' project index carries ``client_id`` and ``model_id`` (INCLUDE), so that counting a
project's vectors (``SearchRepository.vector_search_complete`` counts to choose between an exact ranking
and the HNSW walk) is an index-only scan instead of one heap page per vector.

Rebuilding the index locks each partition against writes while it runs (seconds per million vectors);
upgrade when indexing can pause.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_chunk_vectors_project_id", table_name="chunk_vectors")
    op.create_index(
        "ix_chunk_vectors_project_id",
        "chunk_vectors",
        ["project_id"],
        postgresql_include=["client_id", "model_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_chunk_vectors_project_id", table_name="chunk_vectors")
    op.create_index("ix_chunk_vectors_project_id", "chunk_vectors", ["project_id"])
