"""``make run``'s provisioning (``baton_tools.stack.Stack``): two roles per service on a fresh database, a
``.baton/`` from before the owner roles (schemas owned by the runtime roles) handed over to the owners once,
and one from before documents' partition functions (its runtime role a member of its owner role, owning the
partitions it created) brought back to a runtime role that is a member of nothing and owns nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from baton_tools.stack import SERVICES, Service, Stack

from shared.migrations import upgrade

AUDIT = next(s for s in SERVICES if s.name == "audit")
DOCUMENTS = next(s for s in SERVICES if s.name == "documents")
REPO = Path(__file__).resolve().parents[2]


def _head(service: Service) -> str:
    """The newest revision of a service's migrations (what a stack's upgrade leaves in alembic_version)."""
    config = Config()
    config.set_main_option("script_location", str(service.migrations_dir(REPO)))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@dataclass
class Setup:
    stack: Stack
    url: str  # superuser, on the stack's database
    said: list[str] = field(default_factory=list)

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(_plain(self.url))
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()


@pytest.fixture
async def setup(database_url: str, tmp_path: Path) -> AsyncIterator[Setup]:
    tag = uuid.uuid4().hex[:8]
    database = f"stack_{tag}"
    conn = await asyncpg.connect(_plain(database_url))
    try:
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    said: list[str] = []
    url = _with_database(database_url, database)
    stack = Stack(
        home=tmp_path,
        database=database,
        database_url=url,
        nats_server_url="nats://127.0.0.1:4222",  # never contacted
        role_prefix=f"st{tag}_",
        echo=said.append,
    )
    yield Setup(stack, url, said)
    conn = await asyncpg.connect(_plain(database_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for service in (AUDIT, DOCUMENTS):
            for role in (stack.role(service), stack.owner_role(service)):
                await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()


async def _owned_by(setup: Setup, schema: str, role: str) -> list[str]:
    rows = await setup.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = $1::regnamespace AND relowner = $2::regrole "
        "UNION ALL SELECT proname FROM pg_proc WHERE pronamespace = $1::regnamespace AND proowner = $2::regrole",
        schema,
        role,
    )
    return sorted(r[0] for r in rows)


async def test_fresh_database_gets_an_owner_and_a_runtime_role_per_service(setup):
    stack = setup.stack
    await stack.migrate([AUDIT, DOCUMENTS])
    for service in (AUDIT, DOCUMENTS):
        owner, runtime = stack.owner_role(service), stack.role(service)
        rows = await setup.fetch(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1", service.name
        )
        assert rows[0][0] == owner
        assert await _owned_by(setup, service.name, runtime) == []
        assert await _owned_by(setup, service.name, owner)
        assert f"db_{service.name}_owner" in stack.secrets()
        # The services connect as the runtime role; only the migration uses the owner's.
        assert f"//{runtime}:" in stack.environment(service)["BATON_DATABASE_URL"]
    member = await setup.fetch(
        "SELECT pg_has_role($1, $2, 'MEMBER'), pg_has_role($3, $4, 'MEMBER')",
        stack.role(DOCUMENTS),
        stack.owner_role(DOCUMENTS),
        stack.role(AUDIT),
        stack.owner_role(AUDIT),
    )
    # No runtime role can act as its owner (documents creates partitions through definer functions).
    assert tuple(member[0]) == (False, False)
    runtime = await asyncpg.connect(
        _plain(stack.service_url(AUDIT)), server_settings={"search_path": "audit"}
    )
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for table entries"):
            await runtime.execute("DELETE FROM entries")
        # Nor can a service's role reach another service's schema, as its runtime or its owner.
        with pytest.raises(
            asyncpg.InsufficientPrivilegeError, match="permission denied for schema documents"
        ):
            await runtime.fetch("SELECT count(*) FROM documents.documents")
    finally:
        await runtime.close()
    crossed = await setup.fetch(
        "SELECT has_schema_privilege(r, s, 'USAGE') OR has_schema_privilege(r, s, 'CREATE') "
        "FROM unnest($1::text[], $2::text[]) AS t(r, s)",
        [stack.role(AUDIT), stack.owner_role(AUDIT), stack.role(DOCUMENTS), stack.owner_role(DOCUMENTS)],
        ["documents", "documents", "audit", "audit"],
    )
    assert [row[0] for row in crossed] == [False] * 4


async def test_a_baton_dir_from_before_the_owner_roles_is_handed_over_once(setup):
    stack = setup.stack
    runtime, owner = stack.role(AUDIT), stack.owner_role(AUDIT)
    # The old layout: the runtime role owns the schema, ran the migrations, and revoked UPDATE/DELETE on
    # the log from itself (as the old 0001 did).
    conn = await asyncpg.connect(_plain(setup.url))
    try:
        await conn.execute(f"CREATE ROLE {runtime} LOGIN PASSWORD '{stack.secrets()['db_audit']}'")
        await conn.execute(f"CREATE SCHEMA audit AUTHORIZATION {runtime}")
    finally:
        await conn.close()
    await upgrade(stack.service_url(AUDIT), AUDIT.migrations_dir(stack.repo), "audit", "0001")
    conn = await asyncpg.connect(_plain(stack.service_url(AUDIT)), server_settings={"search_path": "audit"})
    try:
        await conn.execute(f"REVOKE UPDATE, DELETE ON entries, entry_keys, checkpoints FROM {runtime}")
    finally:
        await conn.close()

    await stack.migrate([AUDIT])
    await stack.migrate([AUDIT])
    assert [line for line in setup.said if "now belong to" in line] == [
        f"database: audit's objects now belong to {owner}"
    ]
    assert await _owned_by(setup, "audit", runtime) == []
    privileges = await setup.fetch(
        "SELECT has_table_privilege($1, 'audit.entry_keys', 'DELETE'), "
        "has_table_privilege($2, 'audit.entry_keys', 'DELETE'), has_table_privilege($2, 'audit.entries', 'INSERT')",
        owner,
        runtime,
    )
    # The owner has its rights back (the retention function deletes keys as the owner); the runtime role
    # has only what the audit service grants it.
    assert tuple(privileges[0]) == (True, False, True)
    rows = await setup.fetch("SELECT version_num FROM audit.alembic_version")
    assert rows[0][0] == _head(AUDIT)


async def test_a_baton_dir_where_documents_ran_ddl_is_handed_over_once(setup):
    stack = setup.stack
    runtime, owner = stack.role(DOCUMENTS), stack.owner_role(DOCUMENTS)
    client = uuid.uuid4()
    # The layout before documents' 0002: its runtime role a member of its owner role, and the partitions it
    # created at run time its own.
    await stack.provision([DOCUMENTS])
    await upgrade(
        stack.owner_url(DOCUMENTS),
        DOCUMENTS.migrations_dir(stack.repo),
        "documents",
        "0001",
        runtime_role=runtime,
    )
    conn = await asyncpg.connect(_plain(setup.url))
    try:
        await conn.execute(f"GRANT {owner} TO {runtime}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(
        _plain(stack.service_url(DOCUMENTS)), server_settings={"search_path": "documents"}
    )
    try:
        for table in ("chunks", "chunk_vectors"):
            await conn.execute(
                f"CREATE TABLE {table}_p_{client.hex} PARTITION OF {table} FOR VALUES IN ('{client}')"
            )
    finally:
        await conn.close()
    assert await _owned_by(setup, "documents", runtime)

    await stack.migrate([DOCUMENTS])
    await stack.migrate([DOCUMENTS])
    assert [line for line in setup.said if runtime in line] == [
        f"database: {runtime} is no longer a member of {owner}",
        f"database: what {runtime} created in documents now belongs to {owner}",
    ]
    assert await _owned_by(setup, "documents", runtime) == []
    rows = await setup.fetch(
        "SELECT pg_has_role($1, $2, 'MEMBER'), (SELECT version_num FROM documents.alembic_version)",
        runtime,
        owner,
    )
    assert tuple(rows[0]) == (False, _head(DOCUMENTS))
    conn = await asyncpg.connect(
        _plain(stack.service_url(DOCUMENTS)), server_settings={"search_path": "documents"}
    )
    try:
        await conn.execute("SELECT documents_drop_client_partitions($1)", client)
        await conn.execute("SELECT documents_ensure_client_partitions($1)", client)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="must be owner of table"):
            await conn.execute(f"DROP TABLE chunks_p_{client.hex}")
    finally:
        await conn.close()
