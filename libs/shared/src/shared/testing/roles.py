"""A fresh schema between two roles, as deployed: an owner that runs the migrations and a runtime role the
service connects as (see ``shared.migrations.upgrade(runtime_role=...)``). For the services' tests of that
layout: ``async with schema_roles(database_url, "docs", cls=Roles) as roles: ...``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

__all__ = ["PASSWORD", "SchemaRoles", "as_role", "plain_url", "schema_roles"]

PASSWORD = "runtime-role-test"


def as_role(url: str, role: str, password: str = PASSWORD) -> str:
    """``url`` with ``role`` and ``password`` as its credentials."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{role}:{password}@{host}", parts.path, parts.query, parts.fragment))


def plain_url(url: str) -> str:
    """A SQLAlchemy asyncpg URL as asyncpg itself takes it."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


@dataclass
class SchemaRoles:
    schema: str
    owner: str  # owns the schema (empty: nothing migrated yet)
    runtime: str  # no rights in it until a migration grants them
    owner_url: str
    runtime_url: str
    superuser_url: str

    async def connect(self, url: str) -> asyncpg.Connection:
        return await asyncpg.connect(plain_url(url), server_settings={"search_path": f"{self.schema},public"})

    async def run(self, url: str, *statements: str) -> None:
        conn = await self.connect(url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()


R = TypeVar("R", bound=SchemaRoles)


@contextlib.asynccontextmanager
async def schema_roles(
    database_url: str, prefix: str, *, cls: type[R], extensions: Sequence[str] = ()
) -> AsyncIterator[R]:
    """Schema ``<prefix>_<random>`` owned by ``baton_<schema>_owner``, and the runtime role ``baton_<schema>``
    (both LOGIN with ``PASSWORD``), created through the superuser ``database_url``; dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    owner, runtime = f"baton_{schema}_owner", f"baton_{schema}"
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        for extension in extensions:
            with contextlib.suppress(asyncpg.UniqueViolationError, asyncpg.DuplicateObjectError):
                await conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{extension}"')
        for role in (owner, runtime):
            await conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{PASSWORD}'")
        await conn.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{owner}"')
    finally:
        await conn.close()
    try:
        yield cls(
            schema, owner, runtime, as_role(database_url, owner), as_role(database_url, runtime), database_url
        )
    finally:
        conn = await asyncpg.connect(plain_url(database_url))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            for role in (runtime, owner):
                await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await conn.close()
