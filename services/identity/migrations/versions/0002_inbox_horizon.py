"""The consumers' inbox horizon (table ``inbox_horizon``), and ``inbox`` indexed for pruning.

``shared.messaging.inbox`` records there, per consumer, the time before which the consumer's inbox may have
been pruned; a consumer created again on the server starts at that time. A schema created from revision
0001 on already has both (0001 creates every current messaging table): each step is skipped when done.

The runtime role gets SELECT, INSERT, UPDATE and DELETE on it with every other table
(``shared.migrations.grant_runtime``); pruning needs those, and DELETE on ``inbox``.

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
