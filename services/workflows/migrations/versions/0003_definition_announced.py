"""``definitions.announced_version``: the latest version announced with ``definition.published``.

Rows stored before this revision keep NULL, so the next start announces each of them once
(``workflows.definitions.service.announce_unannounced``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE definitions ADD COLUMN IF NOT EXISTS announced_version INTEGER")


def downgrade() -> None:
    op.execute("ALTER TABLE definitions DROP COLUMN IF EXISTS announced_version")
