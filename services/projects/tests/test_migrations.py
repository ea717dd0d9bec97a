"""The Alembic migrations build exactly the schema the models describe, and re-running them is a no-op."""

from __future__ import annotations

import warnings
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from projects.database import Base
from sqlalchemy import inspect, text

from shared.migrations import current_revision, upgrade

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def _diff(connection, schema):
    connection.execute(text(f'SET search_path TO "{schema}"'))
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    with warnings.catch_warnings():
        # Reflection cannot describe the lower(name) expression index; it is checked below instead.
        warnings.filterwarnings("ignore", message=".*expression-based index.*")
        warnings.filterwarnings("ignore", message=".*Skipped unsupported reflection.*")
        return compare_metadata(context, Base.metadata)


def _catalog(connection, schema):
    """Index and constraint definitions (names included), without the schema prefix."""
    indexes = connection.execute(
        text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s AND tablename <> 'alembic_version'"
        ),
        {"s": schema},
    )
    constraints = connection.execute(
        text(
            "SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = :s AND conname NOT LIKE 'alembic_version%'"
        ),
        {"s": schema},
    )
    return {name: definition.replace(f"{schema}.", "") for name, definition in [*indexes, *constraints]}


async def test_migrations_match_the_models(fresh_schema, database_url):
    schema, engine = await fresh_schema("projmig")
    await upgrade(database_url, MIGRATIONS, schema)
    await upgrade(database_url, MIGRATIONS, schema)  # idempotent
    assert await current_revision(database_url, schema) == "0003"

    async with engine.connect() as conn:
        diff = await conn.run_sync(_diff, schema)
        assert diff == []
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names(schema=schema)))
        migrated = await conn.run_sync(_catalog, schema)

    assert tables == {
        "alembic_version",
        "clients",
        "projects",
        "workflow_definitions",
        "outbox",
        "outbox_state",
        "inbox",
        "inbox_horizon",
        "dead_letters",
    }
    # The same indexes (partial and expression ones included) and constraints as the models build.
    model_schema, model_engine = await fresh_schema("projmod", Base.metadata)
    async with model_engine.connect() as conn:
        from_models = await conn.run_sync(_catalog, model_schema)
    assert migrated == from_models
    assert "lower((name)::text)" in migrated["uq_projects_client_id_name_live"]
    assert "WHERE (deleted_at IS NULL)" in migrated["uq_clients_slug_live"]
    assert migrated["ck_projects_status"].startswith("CHECK")
