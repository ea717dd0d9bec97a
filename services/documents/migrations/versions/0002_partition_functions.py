"""Per-client search-index partitions through SECURITY DEFINER functions owned by the schema's owner.

``documents_ensure_client_partitions(client uuid)`` creates a client's ``chunks`` and ``chunk_vectors``
partitions (idempotent; each takes the parent's indexes, HNSW included), ``documents_drop_client_partitions``
drops them. Both run as the owner, so the service's runtime role needs no DDL rights and no membership in
the owner role; ``shared.migrations`` grants it EXECUTE on them (PUBLIC has none).

Partitions created before, while the runtime role was a member of the owner role, belong to the runtime
role. They are handed to the schema's owner here when the role running the migration may do so (a
superuser, or a member of their owner); the owner role alone may not, and then the migration stops and
says so: once, as a superuser, ``REASSIGN OWNED BY <runtime role> TO <owner role>`` (docs/operations.md).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _schema() -> str:
    schema: str = context.config.attributes["schema"]
    return schema


def upgrade() -> None:
    schema = _schema()
    # Frozen copy of documents.index.models.partition_functions_sql (test_migrations compares them).
    op.execute(
        f"""
        CREATE FUNCTION documents_ensure_client_partitions(client uuid) RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = "{schema}", pg_temp AS $$
        DECLARE
            parent text;
            part text;
        BEGIN
            IF client IS NULL THEN
                RAISE EXCEPTION 'a client id is required' USING ERRCODE = 'null_value_not_allowed';
            END IF;
            PERFORM pg_advisory_xact_lock(hashtext('documents-partition:' || client::text));
            FOREACH parent IN ARRAY ARRAY['chunks', 'chunk_vectors'] LOOP
                part := parent || '_p_' || replace(client::text, '-', '');
                EXECUTE format('CREATE TABLE IF NOT EXISTS %I.%I PARTITION OF %I.%I FOR VALUES IN (%L)',
                               '{schema}', part, '{schema}', parent, client);
                IF NOT EXISTS (
                    SELECT FROM pg_inherits
                    WHERE inhrelid = format('%I.%I', '{schema}', part)::regclass
                      AND inhparent = format('%I.%I', '{schema}', parent)::regclass
                ) THEN
                    RAISE EXCEPTION '% is not a partition of %', part, parent;
                END IF;
            END LOOP;
        END $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION documents_drop_client_partitions(client uuid) RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = "{schema}", pg_temp AS $$
        DECLARE
            parent text;
            part regclass;
        BEGIN
            IF client IS NULL THEN
                RAISE EXCEPTION 'a client id is required' USING ERRCODE = 'null_value_not_allowed';
            END IF;
            PERFORM pg_advisory_xact_lock(hashtext('documents-partition:' || client::text));
            FOREACH parent IN ARRAY ARRAY['chunk_vectors', 'chunks'] LOOP
                part := to_regclass(format('%I.%I', '{schema}', parent || '_p_' || replace(client::text, '-', '')));
                CONTINUE WHEN part IS NULL;
                IF NOT EXISTS (
                    SELECT FROM pg_inherits
                    WHERE inhrelid = part AND inhparent = format('%I.%I', '{schema}', parent)::regclass
                ) THEN
                    RAISE EXCEPTION '% is not a partition of %', part, parent;
                END IF;
                EXECUTE format('DROP TABLE %s', part);
            END LOOP;
        END $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION documents_ensure_client_partitions(uuid) FROM PUBLIC")
    op.execute("REVOKE ALL ON FUNCTION documents_drop_client_partitions(uuid) FROM PUBLIC")

    # Existing partitions to the schema's owner: ALTER ... OWNER needs the rights of the current owner and
    # of the new one, which the owner role lacks for partitions the runtime role created.
    op.execute(
        f"""
        DO $$
        DECLARE
            schema_owner oid := (SELECT nspowner FROM pg_namespace WHERE nspname = '{schema}');
            part record;
            stuck text[] := ARRAY[]::text[];
            fix text;
            fixes text[] := ARRAY[]::text[];
        BEGIN
            FOR part IN
                SELECT c.oid::regclass AS rel, c.relowner AS owner
                FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent IN (format('%I.chunks', '{schema}')::regclass,
                                      format('%I.chunk_vectors', '{schema}')::regclass)
                  AND c.relowner <> schema_owner
                ORDER BY c.relname
            LOOP
                IF pg_has_role(current_user, part.owner, 'USAGE')
                   AND pg_has_role(current_user, schema_owner, 'SET') THEN
                    EXECUTE format('ALTER TABLE %s OWNER TO %I', part.rel, pg_get_userbyid(schema_owner));
                ELSE
                    stuck := stuck || part.rel::text;
                    fix := format('REASSIGN OWNED BY %I TO %I', pg_get_userbyid(part.owner),
                                  pg_get_userbyid(schema_owner));
                    IF NOT fix = ANY (fixes) THEN
                        fixes := fixes || fix;
                    END IF;
                END IF;
            END LOOP;
            IF cardinality(stuck) > 0 THEN
                RAISE EXCEPTION 'search-index partitions % do not belong to %, the owner of schema {schema}, '
                    'and this role may not hand them over: once, as a superuser, %; then migrate again '
                    '(docs/operations.md)', array_to_string(stuck, ', '), pg_get_userbyid(schema_owner),
                    array_to_string(fixes, '; ')
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    for name in ("documents_drop_client_partitions(uuid)", "documents_ensure_client_partitions(uuid)"):
        op.execute(f"DROP FUNCTION IF EXISTS {name}")
