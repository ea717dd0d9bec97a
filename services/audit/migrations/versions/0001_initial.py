"""The audit log: chains, month-partitioned entries, keys, checkpoints, producers; append-only rules.

Append-only is enforced twice: a trigger refuses UPDATE, DELETE and TRUNCATE on entries and checkpoints
(and DELETE on entry_keys outside the retention function), and the service's runtime role gets only SELECT
and INSERT on them (revision 0002's ``baton_restrict_runtime``, run by ``shared.migrations.upgrade``).
Partitions are created and dropped by two SECURITY DEFINER functions owned by the owner role, the only path
by which the runtime role can change the log's structure.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from shared.messaging import create_messaging_tables, drop_messaging_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _schema() -> str:
    schema: str = context.config.attributes["schema"]
    return schema


def upgrade() -> None:
    schema = _schema()
    tz = sa.DateTime(timezone=True)
    # outbox (checkpoint events), outbox_state, inbox, dead_letters.
    create_messaging_tables(op.get_bind())

    op.create_table(
        "chains",
        sa.Column("chain_id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.Uuid(), nullable=True),
        sa.Column("head_sequence", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("last_recorded_at", tz, nullable=True),
        sa.Column("checkpoint_sequence", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("checkpoint_at", tz, nullable=True),
        sa.Column("created_at", tz, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", name="pk_chains"),
    )
    op.create_table(
        "entries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("recorded_at", tz, nullable=False),
        sa.Column("chain_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("client_id", sa.Uuid(), nullable=True),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("occurred_at", tz, nullable=True),
        sa.Column("actor_subject", sa.String(200), nullable=True),
        sa.Column("actor_kind", sa.String(32), nullable=True),
        sa.Column("actor_name", sa.String(200), nullable=True),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("resource_type", sa.String(100), nullable=True),
        sa.Column("resource_id", sa.String(200), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("payload_truncated", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("source_stream", sa.String(64), nullable=True),
        sa.Column("stream_sequence", sa.BigInteger(), nullable=True),
        sa.Column("producer", sa.String(64), nullable=True),
        sa.Column("producer_sequence", sa.BigInteger(), nullable=True),
        sa.Column("flagged", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("flag_reason", sa.String(200), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", "recorded_at", name="pk_entries"),
        postgresql_partition_by="RANGE (recorded_at)",
    )
    op.create_index("ix_entries_chain_sequence", "entries", ["chain_id", "sequence"])
    op.create_index("ix_entries_chain_recorded", "entries", ["chain_id", "recorded_at", "sequence"])
    op.create_index("ix_entries_recorded", "entries", ["recorded_at", "chain_id", "sequence"])
    op.create_index("ix_entries_chain_action", "entries", ["chain_id", "action"])
    op.create_index("ix_entries_chain_actor", "entries", ["chain_id", "actor_subject"])
    op.create_index("ix_entries_chain_resource", "entries", ["chain_id", "resource_type", "resource_id"])

    op.create_table(
        "entry_keys",
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=False),
        sa.Column("chain_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", tz, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_entry_keys"),
        sa.UniqueConstraint("chain_id", "sequence", name="uq_entry_keys_chain_id_sequence"),
        sa.UniqueConstraint("entry_id", name="uq_entry_keys_entry_id"),
    )
    op.create_index("ix_entry_keys_recorded_at", "entry_keys", ["recorded_at"])

    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("chain_id", sa.String(64), nullable=False),
        sa.Column("client_id", sa.Uuid(), nullable=True),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_checkpoints"),
        sa.UniqueConstraint("chain_id", "sequence", name="uq_checkpoints_chain_id_sequence"),
    )
    op.create_table(
        "producers",
        sa.Column("producer", sa.String(64), nullable=False),
        sa.Column("stream", sa.String(64), nullable=True),
        sa.Column("high_water", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_seen", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("reported_last", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("seen_ranges", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("gaps", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("replays_requested", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("replayed_entries", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_seen_at", tz, nullable=True),
        sa.Column("updated_at", tz, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("producer", name="pk_producers"),
    )

    # Append-only: no escape hatch on entries and checkpoints (retention drops whole partitions, which
    # fires no row trigger); entry_keys rows of a dropped partition are deleted by the retention function.
    op.execute(
        """
        CREATE FUNCTION audit_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'entry_keys'
               AND coalesce(current_setting('baton.audit_retention', true), '') = 'on' THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'the audit log is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    for table in ("entries", "entry_keys", "checkpoints"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_forbid_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_forbid_change()"
        )

    op.execute(
        f"""
        CREATE FUNCTION audit_ensure_partition(at timestamptz) RETURNS text
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = "{schema}", pg_temp AS $$
        DECLARE
            lo_local timestamp := date_trunc('month', at AT TIME ZONE 'UTC');
            lo timestamptz := lo_local AT TIME ZONE 'UTC';
            hi timestamptz := (lo_local + interval '1 month') AT TIME ZONE 'UTC';
            part text := 'entries_' || to_char(lo_local, 'YYYY_MM');
        BEGIN
            IF to_regclass(format('%I.%I', '{schema}', part)) IS NOT NULL THEN
                RETURN part;
            END IF;
            PERFORM pg_advisory_xact_lock(hashtext('{schema}.audit_partitions'));
            IF to_regclass(format('%I.%I', '{schema}', part)) IS NULL THEN
                EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.entries FOR VALUES FROM (%L) TO (%L)',
                               '{schema}', part, '{schema}', lo, hi);
            END IF;
            RETURN part;
        END $$
        """
    )
    # Drops one whole month partition that lies entirely in the past, and the keys of its entries.
    op.execute(
        f"""
        CREATE FUNCTION audit_drop_partition(part text) RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = "{schema}", pg_temp AS $$
        DECLARE
            lo timestamptz;
            hi timestamptz;
            removed bigint;
        BEGIN
            IF part !~ '^entries_[0-9]{{4}}_[0-9]{{2}}$' OR NOT EXISTS (
                SELECT 1 FROM pg_inherits i
                JOIN pg_class c ON c.oid = i.inhrelid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE i.inhparent = format('%I.entries', '{schema}')::regclass
                  AND n.nspname = '{schema}' AND c.relname = part
            ) THEN
                RAISE EXCEPTION 'not an entries partition: %', part;
            END IF;
            lo := to_date(substr(part, 9), 'YYYY_MM')::timestamp AT TIME ZONE 'UTC';
            hi := (to_date(substr(part, 9), 'YYYY_MM')::timestamp + interval '1 month') AT TIME ZONE 'UTC';
            IF hi > now() THEN
                RAISE EXCEPTION 'partition % is not entirely in the past', part;
            END IF;
            PERFORM set_config('baton.audit_retention', 'on', true);
            DELETE FROM entry_keys WHERE recorded_at >= lo AND recorded_at < hi;
            GET DIAGNOSTICS removed = ROW_COUNT;
            PERFORM set_config('baton.audit_retention', 'off', true);
            EXECUTE format('DROP TABLE %I.%I', '{schema}', part);
            RETURN removed;
        END $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION audit_ensure_partition(timestamptz) FROM PUBLIC")
    op.execute("REVOKE ALL ON FUNCTION audit_drop_partition(text) FROM PUBLIC")


def downgrade() -> None:
    for name in ("audit_drop_partition(text)", "audit_ensure_partition(timestamptz)"):
        op.execute(f"DROP FUNCTION IF EXISTS {name}")
    for table in ("producers", "checkpoints", "entry_keys", "entries", "chains"):
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS audit_forbid_change()")
    drop_messaging_tables(op.get_bind())
