"""Alembic helpers: each service's migrations live in its own schema, version table included.

A service's ``migrations/env.py`` is two lines::

    from shared.migrations import run_env
    run_env()

and ``upgrade(url, script_location, schema, runtime_role=...)`` applies them (the runner, the migration init
container and tests use it). Concurrent runs are safe: the upgrade holds a transaction-scoped advisory lock
named after the schema.

Two roles per service: the owner (owns the schema and every object in it, runs the migrations) and the
runtime role the service connects as. After the migrations, in the same transaction, the runtime role gets
USAGE on the schema and DML on its tables, sequences and functions, never CREATE, ownership or membership in
the owner role (an upgrade refuses to go on while it owns the schema or is such a member); then, when
the schema defines ``baton_restrict_runtime(role name)``, that function takes back what the service's
runtime role must not have (the audit log's append-only tables, for instance). Migrations can read the
runtime role's name from ``context.config.attributes["runtime_role"]`` (``None`` when not given).
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

__all__ = [
    "RESTRICT_FUNCTION",
    "alembic_config",
    "current_revision",
    "grant_runtime",
    "run_env",
    "upgrade",
    "upgrade_sync",
]

_SAFE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
RESTRICT_FUNCTION = "baton_restrict_runtime"


def _check_schema(schema: str) -> str:
    if not _SAFE_NAME.match(schema):
        raise ValueError(f"not a valid schema name: {schema!r}")
    return schema


def _check_role(role: str) -> str:
    if not _SAFE_NAME.match(role):
        raise ValueError(f"not a valid role name: {role!r}")
    return role


def alembic_config(script_location: str | Path, schema: str, runtime_role: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["schema"] = _check_schema(schema)
    cfg.attributes["runtime_role"] = None if runtime_role is None else _check_role(runtime_role)
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
    connection: Connection,
    script_location: str | Path,
    schema: str,
    revision: str = "head",
    *,
    runtime_role: str | None = None,
) -> None:
    schema = _check_schema(schema)
    role = None if runtime_role is None else _check_role(runtime_role)
    # Two migration runs at once (two Jobs, two replicas' init containers) queue here instead of racing.
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"baton-migrate-{schema}"})
    owner = connection.scalar(
        text("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = :s"), {"s": schema}
    )
    if owner is None:
        # Only when missing: Postgres checks CREATE on the database before IF NOT EXISTS, and the owner
        # role of a provisioned schema has no CREATE on the database.
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    elif role is not None and owner == role:
        raise RuntimeError(
            f"schema {schema} is owned by {role}, the runtime role: the owner role must own it "
            f"(once, as a superuser: REASSIGN OWNED BY {role} TO <owner>; see docs/operations.md)"
        )
    elif role is not None and connection.scalar(
        text("SELECT pg_has_role(:r, :o, 'MEMBER')"), {"r": role, "o": owner}
    ):
        # A member of the owner can act as it (DDL, disabling triggers): the grants below would mean nothing.
        raise RuntimeError(
            f"the runtime role {role} is a member of {owner}, the owner of schema {schema}: "
            f"once, as a superuser: REVOKE {owner} FROM {role} (see docs/operations.md)"
        )
    connection.execute(text(f'SET LOCAL search_path TO "{schema}", public'))
    cfg = alembic_config(script_location, schema, role)
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)
    if role is not None:
        grant_runtime(connection, schema, role)


def grant_runtime(connection: Connection, schema: str, role: str) -> None:
    """What the runtime role may do in ``schema``, granted again after every upgrade (new tables included).

    GRANT and REVOKE are idempotent; the service's ``baton_restrict_runtime`` runs last so what it takes
    back stays taken back.
    """
    s, r = _check_schema(schema), _check_role(role)
    for statement in (
        f'GRANT USAGE ON SCHEMA "{s}" TO "{r}"',
        f'REVOKE CREATE ON SCHEMA "{s}" FROM "{r}"',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{s}" TO "{r}"',
        f'GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA "{s}" TO "{r}"',
        f'GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA "{s}" TO "{r}"',
    ):
        connection.execute(text(statement))
    restrict = f'"{s}".{RESTRICT_FUNCTION}(name)'
    if connection.scalar(text("SELECT to_regprocedure(:f) IS NOT NULL"), {"f": restrict}):
        connection.execute(text(f'SELECT "{s}".{RESTRICT_FUNCTION}(CAST(:r AS name))'), {"r": r})


async def upgrade(
    url: str,
    script_location: str | Path,
    schema: str,
    revision: str = "head",
    *,
    runtime_role: str | None = None,
) -> None:
    """Apply a service's migrations to ``schema`` in one transaction, then grant ``runtime_role`` its share."""
    engine = create_async_engine(to_asyncpg_url(url), poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(
                lambda sync: upgrade_sync(sync, script_location, schema, revision, runtime_role=runtime_role)
            )
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

    Reads ``BATON_DATABASE_URL`` (the owner role's), ``BATON_SERVICE`` (schema), ``BATON_MIGRATIONS_DIR``
    and ``BATON_DATABASE_RUNTIME_ROLE`` unless given.
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
    parser.add_argument(
        "--runtime-role",
        default=os.environ.get("BATON_DATABASE_RUNTIME_ROLE") or None,
        help="the role the service connects as; granted its privileges after the upgrade",
    )
    args = parser.parse_args(argv)
    if not (args.schema and args.dir and args.url):
        parser.error("schema, migrations dir and database URL are required")
    asyncio.run(upgrade(args.url, args.dir, args.schema, args.revision, runtime_role=args.runtime_role))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
