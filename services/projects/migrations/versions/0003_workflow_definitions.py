"""``workflow_definitions``: the workflow ids the workflows service announced (``definition.published``),
which a project's ``type`` or ``workflow_id`` must name. The runtime role gets DML on it like on every
table (``shared.migrations.grant_runtime``, after the upgrade).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflow_definitions",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("version >= 1", name="ck_workflow_definitions_version_positive"),
        sa.PrimaryKeyConstraint("id", name="pk_workflow_definitions"),
    )


def downgrade() -> None:
    op.drop_table("workflow_definitions")
