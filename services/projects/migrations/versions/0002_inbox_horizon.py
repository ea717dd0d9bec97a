"""Inbox pruning: the ``inbox_horizon`` table, and ``inbox`` indexed by consumer and time
(``shared.messaging.outbox.upgrade_inbox_horizon``, the same step in every service).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

from shared.messaging.outbox import downgrade_inbox_horizon, upgrade_inbox_horizon

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_inbox_horizon(op.get_bind())


def downgrade() -> None:
    downgrade_inbox_horizon(op.get_bind())
