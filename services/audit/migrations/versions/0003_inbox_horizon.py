"""The consumers' inbox horizon (table ``inbox_horizon``), and ``inbox`` indexed for pruning.

``shared.messaging.inbox`` records there, per consumer, the time before which the consumer's inbox may have
been pruned; a consumer created again on the server starts at that time. A schema created from revision
0001 on already has both (0001 creates every current messaging table): each step is skipped when done.

The audit service's consumers do not use the inbox (the log itself is their idempotency record), so
``baton_restrict_runtime`` (0002) is left as it is: its runtime role gets nothing on this table.

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
