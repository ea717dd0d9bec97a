"""Inbox pruning: the ``inbox_horizon`` table, and ``inbox`` indexed by consumer and time
(``shared.messaging.outbox.upgrade_inbox_horizon``, the same step in every service).

Audit's consumers do not use the inbox (the log is their idempotency record): the step only keeps
the messaging tables alike, and ``baton_restrict_runtime`` (0002) grants nothing on the new table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

from shared.messaging.outbox import downgrade_inbox_horizon, upgrade_inbox_horizon

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    upgrade_inbox_horizon(op.get_bind())


def downgrade() -> None:
    downgrade_inbox_horizon(op.get_bind())
