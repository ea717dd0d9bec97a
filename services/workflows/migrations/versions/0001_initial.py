"""Definitions and their versions, instances, tasks, decisions, project documents, and the messaging
tables (outbox, inbox, dead letters, relay state).

Revision ID: 0001
Revises:
Create Date: 2026-01-01
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

_UUID = postgresql.UUID(as_uuid=True)
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "definitions",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("format", sa.String(32), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_definitions"),
    )
    op.create_table(
        "definition_versions",
        sa.Column("definition_id", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(80), nullable=False),
        sa.Column("source_text", sa.Text(), nullable=False),
        sa.Column("model", postgresql.JSONB(), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["definition_id"], ["definitions.id"], name="fk_definition_versions_definition_id_definitions"
        ),
        sa.PrimaryKeyConstraint("definition_id", "version", name="pk_definition_versions"),
    )
    op.create_index("ix_definition_versions_hash", "definition_versions", ["definition_id", "content_hash"])
    op.create_table(
        "instances",
        sa.Column("id", _UUID, nullable=False),
        sa.Column("project_id", _UUID, nullable=False),
        sa.Column("client_id", _UUID, nullable=False),
        sa.Column("project_name", sa.String(300), nullable=False),
        sa.Column("project_kind", sa.String(32), nullable=False),
        sa.Column("project_type", sa.String(100), nullable=False),
        sa.Column("definition_id", sa.String(100), nullable=False),
        sa.Column("definition_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("current_step", sa.String(100), nullable=True),
        sa.Column("current_phase", sa.String(100), nullable=True),
        sa.Column("state", postgresql.JSONB(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("completed_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
        sa.UniqueConstraint("project_id", name="uq_instances_project_id"),
    )
    op.create_index("ix_instances_client_id", "instances", ["client_id"])
    op.create_table(
        "tasks",
        sa.Column("id", _UUID, nullable=False),
        sa.Column("instance_id", _UUID, nullable=False),
        sa.Column("project_id", _UUID, nullable=False),
        sa.Column("client_id", _UUID, nullable=False),
        sa.Column("step_id", sa.String(100), nullable=False),
        sa.Column("roles", postgresql.ARRAY(sa.String(32)), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("optional", sa.Boolean(), nullable=False),
        sa.Column("claimed_by", sa.String(255), nullable=True),
        sa.Column("lease_expires_at", _TS, nullable=True),
        sa.Column("data", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], name="fk_tasks_instance_id_instances"),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
    )
    op.create_index("ix_tasks_instance_id", "tasks", ["instance_id"])
    op.create_index("ix_tasks_client_state", "tasks", ["client_id", "state", "id"])
    op.create_index("ix_tasks_project", "tasks", ["project_id", "id"])
    op.create_index(
        "ix_tasks_lease", "tasks", ["lease_expires_at"], postgresql_where=sa.text("state = 'claimed'")
    )
    op.create_table(
        "decisions",
        sa.Column("id", _UUID, nullable=False),
        sa.Column("instance_id", _UUID, nullable=False),
        sa.Column("project_id", _UUID, nullable=False),
        sa.Column("client_id", _UUID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("data", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], name="fk_decisions_instance_id_instances"),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
    )
    op.create_index("ix_decisions_instance_id", "decisions", ["instance_id"])
    op.create_index("ix_decisions_client_state", "decisions", ["client_id", "state", "id"])
    op.create_index("ix_decisions_project", "decisions", ["project_id", "id"])
    op.create_table(
        "project_documents",
        sa.Column("document_id", _UUID, nullable=False),
        sa.Column("project_id", _UUID, nullable=False),
        sa.Column("client_id", _UUID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("indexed_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("document_id", name="pk_project_documents"),
    )
    op.create_index("ix_project_documents_project_id", "project_documents", ["project_id"])
    create_messaging_tables(op.get_bind())


def downgrade() -> None:
    drop_messaging_tables(op.get_bind())
    for table in (
        "project_documents",
        "decisions",
        "tasks",
        "instances",
        "definition_versions",
        "definitions",
    ):
        op.drop_table(table)
