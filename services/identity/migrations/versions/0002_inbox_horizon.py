"""The consumers' inbox horizon (table ``inbox_horizon``), and ``inbox`` indexed for pruning.

``shared.messaging.inbox`` records there, per consumer, the time before which the consumer's inbox may have
been pruned; a consumer created again on the server starts at that time. A schema created from revision
0001 on already has the table (0001 creates every current messaging table), hence ``if_not_exists``.

The runtime role gets SELECT, INSERT, UPDATE and DELETE on it with every other table
(``shared.migrations.grant_runtime``); pruning needs those, and DELETE on ``inbox``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_horizon",
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("pruned_before", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", name="pk_inbox_horizon"),
        if_not_exists=True,
    )
    # Prunes read one consumer's oldest rows.
    op.drop_index("ix_inbox_processed_at", table_name="inbox", if_exists=True)
    op.create_index(
        "ix_inbox_consumer_processed_at", "inbox", ["consumer", "processed_at"], if_not_exists=True
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_consumer_processed_at", table_name="inbox", if_exists=True)
    op.create_index("ix_inbox_processed_at", "inbox", ["processed_at"], if_not_exists=True)
    op.drop_table("inbox_horizon", if_exists=True)
