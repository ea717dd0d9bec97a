"""Users, known clients, memberships, agents, signing keys, refresh tokens, login failures, and the
messaging tables (outbox, inbox, dead letters, relay state).

Revision ID: 0001
Revises:
Create Date: 2025-01-01
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

TS = sa.DateTime(timezone=True)
UUID = postgresql.UUID(as_uuid=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", UUID, nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.String(512), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("external_issuer", sa.String(512), nullable=True),
        sa.Column("external_subject", sa.String(512), nullable=True),
        sa.Column("tokens_valid_after", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.CheckConstraint("status IN ('active', 'disabled')", name="ck_users_status"),
        sa.UniqueConstraint("email_key", name="uq_users_email_key"),
        sa.UniqueConstraint(
            "external_issuer", "external_subject", name="uq_users_external_issuer_external_subject"
        ),
    )
    op.create_table(
        "clients",
        sa.Column("id", UUID, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("deleted_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_clients"),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("client_id", UUID, nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "client_id", name="pk_memberships"),
        sa.CheckConstraint(
            "role IN ('product_owner', 'member', 'viewer', 'auditor')", name="ck_memberships_role"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_memberships_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name="fk_memberships_client_id_clients", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_memberships_client_id", "memberships", ["client_id"])
    op.create_table(
        "agents",
        sa.Column("id", UUID, nullable=False),
        sa.Column("client_id", UUID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.String(64)), nullable=False),
        sa.Column("project_ids", postgresql.ARRAY(UUID), nullable=True),
        sa.Column("bmad_roles", postgresql.ARRAY(sa.String(32)), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", UUID, nullable=True),
        sa.Column("tokens_valid_after", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        sa.CheckConstraint("status IN ('active', 'disabled', 'deleted')", name="ck_agents_status"),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name="fk_agents_client_id_clients", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_agents_client_id", "agents", ["client_id"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("public_jwk", postgresql.JSONB(), nullable=False),
        sa.Column("private_key_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("signs_from", TS, nullable=False),
        sa.Column("retired_at", TS, nullable=True),
        sa.Column("publish_until", TS, nullable=True),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
    )
    op.create_index("ix_signing_keys_signs_from", "signing_keys", ["signs_from"])
    op.create_table(
        "refresh_tokens",
        sa.Column("id", UUID, nullable=False),
        sa.Column("family_id", UUID, nullable=False),
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_refresh_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_refresh_tokens_token_hash"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_refresh_tokens_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])
    op.create_index("ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"])
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", TS, nullable=False),
        sa.Column("locked_until", TS, nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_login_failures"),
    )
    create_messaging_tables(op.get_bind())


def downgrade() -> None:
    drop_messaging_tables(op.get_bind())
    for table in (
        "login_failures",
        "refresh_tokens",
        "signing_keys",
        "agents",
        "memberships",
        "clients",
        "users",
    ):
        op.drop_table(table)
