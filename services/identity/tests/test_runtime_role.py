"""Identity's migrations under its real database roles: ``identity.migrate`` and
``identity.bootstrap --migrate`` run them as the schema's owner role and grant the runtime role its share
(``shared.migrations.upgrade(..., runtime_role=...)``, as ``make run`` and the Kubernetes init containers
do). The runtime role, which has no DDL rights, could not apply a pending migration itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from identity.config import Settings
from identity.migrate import MIGRATIONS_DIR, MigrationTarget, migrate, migration_target

from shared.migrations import alembic_config, current_revision
from shared.testing.roles import SchemaRoles, schema_roles


class Roles(SchemaRoles):
    def settings(self, **values: Any) -> Settings:
        """What the service's own process sees: the runtime role's URL, plus ``values``."""
        return Settings(
            environment="test",
            database_url=self.runtime_url,
            database_schema=self.schema,
            **values,
        )


@pytest.fixture
async def roles(database_url: str) -> AsyncIterator[Roles]:
    """A schema owned by an owner role, not migrated yet, and a runtime role with no rights in it."""
    async with schema_roles(database_url, "identity", cls=Roles) as roles:
        yield roles


def _head(schema: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(MIGRATIONS_DIR, schema)).get_current_head()


async def _table_owners(roles: Roles) -> set[str]:
    conn = await roles.connect(roles.superuser_url)
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = $1", roles.schema
        )
    finally:
        await conn.close()
    return {r["tableowner"] for r in rows}


async def test_migrate_runs_as_the_owner_and_grants_the_runtime_role(roles: Roles) -> None:
    await migrate(roles.settings(database_owner_url=roles.owner_url))
    assert await current_revision(roles.superuser_url, roles.schema) == _head(roles.schema)
    assert await _table_owners(roles) == {roles.owner}

    runtime = await roles.connect(roles.runtime_url)
    try:
        client = uuid.uuid4()
        await runtime.execute("INSERT INTO clients (id, created_at) VALUES ($1, now())", client)
        assert await runtime.fetchval("SELECT count(*) FROM clients WHERE id = $1", client) == 1
        await runtime.execute("DELETE FROM clients WHERE id = $1", client)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await runtime.execute("CREATE TABLE intruder (id int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await runtime.execute("DROP TABLE clients")
    finally:
        await runtime.close()

    # Nothing pending: a second run changes nothing and grants again.
    await migrate(roles.settings(database_owner_url=roles.owner_url, database_runtime_role=roles.runtime))
    assert await current_revision(roles.superuser_url, roles.schema) == _head(roles.schema)


async def test_bootstrap_migrates_as_the_owner_and_creates_the_admin_as_the_runtime_role(
    roles: Roles,
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BATON_")},
        "BATON_ENVIRONMENT": "test",
        "BATON_DATABASE_URL": roles.runtime_url,
        "BATON_IDENTITY_DATABASE_OWNER_URL": roles.owner_url,
        "BATON_DATABASE_SCHEMA": roles.schema,
        "BATON_ADMIN_EMAIL": "first@example.org",
        "BATON_ADMIN_PASSWORD": "correct horse battery staple",
        "BATON_IDENTITY_ARGON2_MEMORY_KIB": "8192",
        "BATON_IDENTITY_ARGON2_TIME_COST": "1",
        "BATON_LOG_JSON": "false",
    }
    cmd = [sys.executable, "-m", "identity.bootstrap", "--migrate"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "created administrator first@example.org" in done.stdout
    assert await _table_owners(roles) == {roles.owner}
    runtime = await roles.connect(roles.runtime_url)
    try:
        assert await runtime.fetchval("SELECT is_admin FROM users WHERE email = 'first@example.org'")
    finally:
        await runtime.close()


def test_the_owner_url_runs_the_migrations_and_the_service_user_is_granted() -> None:
    runtime_url = "postgresql+asyncpg://baton_identity:secret@db:5432/baton"
    owner_url = "postgresql://baton_identity_owner:other@db:5432/baton"
    settings = Settings(database_url=runtime_url, database_owner_url=owner_url)
    assert migration_target(settings) == MigrationTarget(owner_url, "baton_identity")
    named = Settings(database_url=runtime_url, database_owner_url=owner_url, database_runtime_role="svc")
    assert migration_target(named) == MigrationTarget(owner_url, "svc")


def test_without_an_owner_url_the_database_url_is_the_owners() -> None:
    """As in ``python -m shared.migrations``: the migration step's own URL, the runtime role by name."""
    url = "postgresql://baton_identity_owner:x@db/baton"
    assert migration_target(Settings(database_url=url)) == MigrationTarget(url, None)
    named = Settings(database_url=url, database_runtime_role="baton_identity")
    assert migration_target(named) == MigrationTarget(url, "baton_identity")


def test_one_role_for_both_grants_nothing() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/baton"
    assert migration_target(Settings(database_url=url, database_owner_url=url)) == MigrationTarget(url, None)


def test_a_runtime_url_without_a_user_needs_the_role_named() -> None:
    owner_url = "postgresql://baton_identity_owner:x@db/baton"
    with pytest.raises(ValueError, match="BATON_DATABASE_RUNTIME_ROLE"):
        migration_target(Settings(database_url="postgresql:///baton", database_owner_url=owner_url))
