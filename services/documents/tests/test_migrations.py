"""The Alembic migration builds exactly the schema the models describe (tables, columns, indexes,
constraints, partitioning, the partition functions), re-running it is a no-op, and client partitions work on
the migrated schema."""

from __future__ import annotations

import uuid
from pathlib import Path

from documents.database import Base
from documents.index.partitions import ensure_client_partitions
from sqlalchemy import text

from shared.db import create_session_factory, transaction
from shared.migrations import current_revision, upgrade

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


async def _catalog(engine, schema: str) -> dict[str, object]:
    async with engine.connect() as conn:
        columns = await conn.execute(
            text(
                "SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default, "
                "generation_expression FROM information_schema.columns WHERE table_schema = :s "
                "AND table_name <> 'alembic_version'"
            ),
            {"s": schema},
        )
        indexes = await conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s AND tablename <> 'alembic_version'"
            ),
            {"s": schema},
        )
        constraints = await conn.execute(
            text(
                "SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_namespace n "
                "ON n.oid = c.connamespace WHERE n.nspname = :s AND conname NOT LIKE 'alembic_version%'"
            ),
            {"s": schema},
        )
        partitioned = await conn.execute(
            text(
                "SELECT c.relname, pg_get_partkeydef(c.oid) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relkind = 'p'"
            ),
            {"s": schema},
        )
        functions = await conn.execute(
            text(
                "SELECT p.proname, pg_get_functiondef(p.oid), p.prosecdef, p.proconfig, p.proacl::text "
                "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :s"
            ),
            {"s": schema},
        )
        storage = await conn.execute(
            text(
                "SELECT a.attstorage FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = 'blobs' AND a.attname = 'data'"
            ),
            {"s": schema},
        )

        def clean(value: object) -> object:
            return value.replace(f"{schema}.", "") if isinstance(value, str) else value

        return {
            "columns": {(r[0], r[1]): tuple(clean(v) for v in r[2:]) for r in columns},
            "indexes": {r[0]: clean(r[1]) for r in indexes},
            "constraints": {r[0]: clean(r[1]) for r in constraints},
            "partitioned": dict(partitioned.all()),
            "functions": {r[0]: tuple(str(v).replace(schema, "<schema>") for v in r[1:]) for r in functions},
            "blob_storage": storage.scalar(),
        }


async def test_migration_matches_the_models(fresh_schema, database_url):
    schema, engine = await fresh_schema("docmig")
    await upgrade(database_url, MIGRATIONS, schema)
    await upgrade(database_url, MIGRATIONS, schema)  # idempotent
    assert await current_revision(database_url, schema) == "0004"
    migrated = await _catalog(engine, schema)

    model_schema, model_engine = await fresh_schema("docmod", Base.metadata)
    from_models = await _catalog(model_engine, model_schema)

    assert migrated["columns"] == from_models["columns"]
    assert migrated["constraints"] == from_models["constraints"]
    assert migrated["indexes"] == from_models["indexes"]
    assert "INCLUDE (client_id, model_id)" in migrated["indexes"]["ix_chunk_vectors_project_id"]
    assert migrated["functions"] == from_models["functions"]
    assert set(migrated["functions"]) == {
        "documents_ensure_client_partitions",
        "documents_drop_client_partitions",
    }
    assert (
        migrated["partitioned"]
        == from_models["partitioned"]
        == {
            "chunks": "LIST (client_id)",
            "chunk_vectors": "LIST (client_id)",
        }
    )
    assert migrated["blob_storage"] == from_models["blob_storage"] == b"e"
    assert "hnsw (embedding vector_cosine_ops)" in migrated["indexes"]["ix_chunk_vectors_embedding"]

    # A client's partitions on the migrated schema carry the HNSW and GIN indexes.
    client = uuid.uuid4()
    async with transaction(create_session_factory(engine)) as s:
        assert await ensure_client_partitions(s, client)
    async with engine.connect() as conn:
        defs = (
            (
                await conn.execute(
                    text("SELECT indexdef FROM pg_indexes WHERE schemaname = :s AND tablename LIKE :t"),
                    {"s": schema, "t": f"%_p_{client.hex}"},
                )
            )
            .scalars()
            .all()
        )
    assert any("USING hnsw" in d for d in defs)
    assert any("USING gin" in d for d in defs)
