"""What the audit service's runtime role may do: ``baton_restrict_runtime(role)``.

``shared.migrations.upgrade`` grants every service's runtime role DML on all its tables and EXECUTE on its
functions, then calls this function, which replaces that with an allow-list: SELECT and INSERT on the log
(entries, entry_keys, checkpoints), SELECT, INSERT and UPDATE on the chain heads and producers, DML on the
messaging tables, SELECT on alembic_version, EXECUTE on the two partition functions; nothing on partitions
(reached through ``entries`` only, where the parent's privileges apply), nothing else. Partitions created
later by ``audit_ensure_partition`` belong to its owner and grant nothing to anyone. A table or function a
later revision adds is out of the runtime role's reach until it is added here.

It also refuses to go on when the runtime role owns anything in the schema, or when a SECURITY DEFINER
function is not owned by the schema's owner (the owner role): such a function would act with the wrong
role's rights (and, owned by the runtime role, could not create partitions at all).

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01
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
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION baton_restrict_runtime(runtime name) RETURNS void
        LANGUAGE plpgsql SET search_path = "{schema}", pg_temp AS $$
        DECLARE
            schema_owner oid := (SELECT nspowner FROM pg_namespace WHERE nspname = '{schema}');
            runtime_oid oid := (SELECT oid FROM pg_roles WHERE rolname = runtime);
            wrong text;
        BEGIN
            IF runtime_oid IS NULL THEN
                RAISE EXCEPTION 'role % does not exist', runtime;
            END IF;
            IF runtime_oid = schema_owner THEN
                RAISE EXCEPTION 'the runtime role % owns schema {schema}', runtime;
            END IF;
            SELECT string_agg(c.relname, ', ') INTO wrong FROM pg_class c
            WHERE c.relnamespace = '"{schema}"'::regnamespace AND c.relowner = runtime_oid;
            IF wrong IS NOT NULL THEN
                RAISE EXCEPTION 'the runtime role % owns %: reassign them to the owner role', runtime, wrong;
            END IF;
            SELECT string_agg(p.oid::regprocedure::text, ', ') INTO wrong FROM pg_proc p
            WHERE p.pronamespace = '"{schema}"'::regnamespace
              AND (p.proowner = runtime_oid OR (p.prosecdef AND p.proowner <> schema_owner));
            IF wrong IS NOT NULL THEN
                RAISE EXCEPTION 'functions % must be owned by the owner of schema {schema}', wrong;
            END IF;

            EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', '{schema}', runtime);
            EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM %I', '{schema}', runtime);
            EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA %I FROM %I', '{schema}', runtime);
            EXECUTE format('GRANT SELECT, INSERT ON entries, entry_keys, checkpoints TO %I', runtime);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE ON chains, producers TO %I', runtime);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON outbox, outbox_state, inbox, dead_letters '
                           'TO %I', runtime);
            EXECUTE format('GRANT SELECT ON alembic_version TO %I', runtime);
            EXECUTE format('GRANT EXECUTE ON FUNCTION audit_ensure_partition(timestamptz), '
                           'audit_drop_partition(text) TO %I', runtime);
        END $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION baton_restrict_runtime(name) FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS baton_restrict_runtime(name)")
