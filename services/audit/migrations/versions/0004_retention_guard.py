"""Retention leaves its record before it removes anything, enforced by the database.

``audit_drop_partition(text)`` (0001) becomes ``audit_drop_partition_unchecked(text)``, which the runtime
role may not call (``baton_restrict_runtime`` grants EXECUTE by name, and only on the two partition
functions). The new ``audit_drop_partition(text)`` refuses a partition that is not wholly in the past, and
one holding entries of a chain whose retention entry (event id ``retention:<partition>:<chain>``, action
``baton.audit.retention.applied.v1``, appended by ``audit.retention.apply_retention`` in the same
transaction to a later partition) is not in the log as an entry of that chain; then it calls the old
function. Dropping a partition without saying so on every chain it shortens is no longer possible for the
service's own role, so verify is not the only thing standing between a careless call and a silent gap.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RETENTION_ACTION = "baton.audit.retention.applied.v1"  # audit.chain.records, as of this revision


def _schema() -> str:
    schema: str = context.config.attributes["schema"]
    return schema


def _runtime_role() -> str | None:
    role = context.config.attributes.get("runtime_role")
    return str(role) if role else None


def upgrade() -> None:
    schema = _schema()
    op.execute("ALTER FUNCTION audit_drop_partition(text) RENAME TO audit_drop_partition_unchecked")
    op.execute("REVOKE ALL ON FUNCTION audit_drop_partition_unchecked(text) FROM PUBLIC")
    if runtime := _runtime_role():  # a rename keeps the grants; baton_restrict_runtime would take it too
        op.execute(f'REVOKE ALL ON FUNCTION audit_drop_partition_unchecked(text) FROM "{runtime}"')
    op.execute(
        f"""
        CREATE FUNCTION audit_drop_partition(part text) RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = "{schema}", pg_temp AS $$
        DECLARE
            lo timestamptz;
            hi timestamptz;
            unrecorded text;
        BEGIN
            IF part !~ '^entries_[0-9]{{4}}_[0-9]{{2}}$' THEN
                RAISE EXCEPTION 'not an entries partition: %', part;
            END IF;
            lo := to_date(substr(part, 9), 'YYYY_MM')::timestamp AT TIME ZONE 'UTC';
            hi := (to_date(substr(part, 9), 'YYYY_MM')::timestamp + interval '1 month') AT TIME ZONE 'UTC';
            IF hi > now() THEN
                RAISE EXCEPTION 'partition % is not entirely in the past', part;
            END IF;
            -- The record must be an entry of that chain, stored after the partition, not just a key row.
            SELECT string_agg(held.chain_id, ', ' ORDER BY held.chain_id) INTO unrecorded
            FROM (SELECT DISTINCT chain_id FROM entry_keys WHERE recorded_at >= lo AND recorded_at < hi) held
            WHERE NOT EXISTS (
                SELECT 1 FROM entry_keys k
                JOIN entries e ON e.id = k.entry_id AND e.recorded_at = k.recorded_at
                WHERE k.event_id = 'retention:' || part || ':' || held.chain_id
                  AND e.event_id = k.event_id AND e.chain_id = held.chain_id
                  AND e.action = '{RETENTION_ACTION}' AND e.resource_id = part AND e.recorded_at >= hi
            );
            IF unrecorded IS NOT NULL THEN
                RAISE EXCEPTION 'partition % holds entries of chains without a retention entry: %',
                    part, unrecorded;
            END IF;
            RETURN audit_drop_partition_unchecked(part);
        END $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION audit_drop_partition(text) FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP FUNCTION audit_drop_partition(text)")
    op.execute("ALTER FUNCTION audit_drop_partition_unchecked(text) RENAME TO audit_drop_partition")
    if runtime := _runtime_role():  # retention keeps working after a downgrade
        op.execute(f'GRANT EXECUTE ON FUNCTION audit_drop_partition(text) TO "{runtime}"')
