"""The real migrations apply (twice, harmlessly) and produce exactly the schema the models describe."""

from __future__ import annotations

from typing import Any

from identity.migrate import MIGRATIONS_DIR
from identity.tables import metadata
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from shared.migrations import current_revision, upgrade


def describe(conn: Connection) -> dict[str, Any]:
    insp = inspect(conn)
    out: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        if table == "alembic_version":
            continue
        out[table] = {
            "columns": sorted((c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)),
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted(
                (
                    fk["name"],
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    fk["options"].get("ondelete"),
                )
                for fk in insp.get_foreign_keys(table)
            ),
            "unique": sorted(
                (u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), i["unique"]) for i in insp.get_indexes(table)
            ),
            "checks": sorted(c["name"] for c in insp.get_check_constraints(table)),
        }
    return out


async def test_migrations_match_the_models(fresh_schema: Any, database_url: str) -> None:
    migrated_schema, migrated = await fresh_schema("identity_mig")
    await upgrade(database_url, MIGRATIONS_DIR, migrated_schema)
    await upgrade(database_url, MIGRATIONS_DIR, migrated_schema)  # idempotent
    assert await current_revision(database_url, migrated_schema) == "0002"
    _, modelled = await fresh_schema("identity_mod", metadata)
    async with migrated.connect() as conn:
        from_migrations = await conn.run_sync(describe)
    async with modelled.connect() as conn:
        from_models = await conn.run_sync(describe)
    assert set(from_migrations) == {t.name for t in metadata.sorted_tables}
    for table in from_models:
        assert from_migrations[table] == from_models[table], table
