"""Alembic helpers: each service's migrations live in its own schema, version table included.

A service's ``migrations/env.py`` is two lines::

    from shared.migrations import run_env
    run_env()

and ``upgrade(script_location, url, schema)`` applies them (the runner, the migration Job and tests use it).
Concurrent runs are safe: the upgrade holds a transaction-scoped advisory lock named after the schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from shared.db import to_asyncpg_url

__all__ = ["alembic_config", "current_revision", "run_env", "upgrade", "upgrade_sync"]

_SAFE_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _check_schema(schema: str) -> str:
    if not _SAFE_SCHEMA.match(schema):
        raise ValueError(f"not a valid schema name: {schema!r}")
    return schema


def alembic_config(script_location: str | Path, schema: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["schema"] = _check_schema(schema)
    return cfg


def run_env() -> None:
    """Body of a service's ``env.py``: online migrations on the connection handed in by ``upgrade``."""
    from alembic import context

    cfg = context.config
    connection: Connection | None = cfg.attributes.get("connection")
    schema: str = cfg.attributes["schema"]
    if connection is None:
        raise RuntimeError("run migrations through shared.migrations.upgrade (or `make migrate`)")
    context.configure(
        connection=connection,
        version_table_schema=schema,
        include_schemas=False,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def upgrade_sync(
    connection: Connection, script_location: str | Path, schema: str, revision: str = "head"
) -> None:
    schema = _check_schema(schema)
    # Two migration runs at once (two Jobs, two replicas' init containers) queue here instead of racing.
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"baton-migrate-{schema}"})
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    connection.execute(text(f'SET LOCAL search_path TO "{schema}", public'))
    cfg = alembic_config(script_location, schema)
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def upgrade(url: str, script_location: str | Path, schema: str, revision: str = "head") -> None:
    """Apply a service's migrations to ``schema`` in one transaction."""
    engine = create_async_engine(to_asyncpg_url(url), poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(upgrade_sync, script_location, schema, revision)
    finally:
        await engine.dispose()


async def current_revision(url: str, schema: str) -> str | None:
    engine = create_async_engine(to_asyncpg_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            exists = await conn.scalar(
                text("SELECT to_regclass(:t)"), {"t": f'"{_check_schema(schema)}".alembic_version'}
            )
            if exists is None:
                return None
            value: Any = await conn.scalar(text(f'SELECT version_num FROM "{schema}".alembic_version'))
            return None if value is None else str(value)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """``python -m shared.migrations``: what the Kubernetes init container and ``make migrate`` run.

    Reads ``BATON_DATABASE_URL``, ``BATON_SERVICE`` (schema) and ``BATON_MIGRATIONS_DIR`` unless given.
    """
    import argparse
    import asyncio
    import os

    parser = argparse.ArgumentParser(prog="python -m shared.migrations")
    parser.add_argument(
        "--schema", default=os.environ.get("BATON_DATABASE_SCHEMA") or os.environ.get("BATON_SERVICE")
    )
    parser.add_argument("--dir", default=os.environ.get("BATON_MIGRATIONS_DIR"))
    parser.add_argument("--url", default=os.environ.get("BATON_DATABASE_URL"))
    parser.add_argument("--revision", default="head")
    args = parser.parse_args(argv)
    if not (args.schema and args.dir and args.url):
        parser.error("schema, migrations dir and database URL are required")
    asyncio.run(upgrade(args.url, args.dir, args.schema, args.revision))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
