"""Fixtures of the audit tests: a migrated audit schema (the real migrations: triggers, functions and
partitions are part of what is tested), session factories, tokens and an app client."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.db import create_session_factory
from shared.migrations import upgrade

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def pg_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture
async def audit_schema(fresh_schema, database_url) -> AsyncIterator[tuple[str, Any]]:
    """A fresh schema with the audit migrations applied; its runtime role ``baton_<schema>`` exists."""
    schema, engine = await fresh_schema("audit")
    role = f"baton_{schema}"
    conn = await asyncpg.connect(pg_dsn(database_url))
    try:
        await conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
    finally:
        await conn.close()
    await upgrade(database_url, MIGRATIONS, schema, runtime_role=role)
    yield schema, engine
    conn = await asyncpg.connect(pg_dsn(database_url))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()


@pytest.fixture
def factory(audit_schema):
    return create_session_factory(audit_schema[1])


@pytest.fixture
def client_a() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture
def client_b() -> uuid.UUID:
    return uuid.uuid4()


def drafts_for(client: uuid.UUID | None, n: int, *, action: str = "baton.alpha.thing.happened.v1", **kw: Any):
    from audit.chain.canonical import EntryDraft

    return [
        EntryDraft(
            event_id=str(uuid.uuid4()),
            action=action,
            client_id=client,
            payload={"i": i, "note": f"event {i}"},
            actor_subject="user-1",
            actor_kind="user",
            resource_type="thing",
            resource_id=str(i),
            **kw,
        )
        for i in range(n)
    ]


async def append(factory, drafts, *, at=None):
    """Append in one transaction (partitions ensured first); returns the AppendOutcome."""
    from audit.chain.service import PartitionKeeper, append_entries

    await PartitionKeeper(factory).ensure(at)
    async with factory() as session, session.begin():
        return await append_entries(session, drafts, at=at)


@pytest.fixture
async def superuser(audit_schema, database_url) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection on the audit schema (to tamper, and to act as the runtime role)."""
    schema = audit_schema[0]
    conn = await asyncpg.connect(pg_dsn(database_url), server_settings={"search_path": f"{schema},public"})
    yield conn
    await conn.close()
