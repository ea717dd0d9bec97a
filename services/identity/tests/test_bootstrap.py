"""The first administrator: created once, from the environment or with a generated password."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from identity.bootstrap import BootstrapRefused, bootstrap_admin
from identity.users.passwords import PasswordHasher
from identity.users.repository import UserRepository
from sqlalchemy import text

from shared.db import create_session_factory

HASHER = PasswordHasher(time_cost=1, memory_kib=8192, parallelism=1)


async def test_bootstrap_is_idempotent(fresh_schema: Any) -> None:
    from identity.tables import metadata

    _, engine = await fresh_schema("identity_boot", metadata)
    sessions = create_session_factory(engine)
    with pytest.raises(BootstrapRefused):
        await bootstrap_admin(sessions, HASHER, email="root@example.org", password="short")
    first = await bootstrap_admin(sessions, HASHER, email="root@example.org", password=None)
    assert first.created
    assert first.generated_password
    assert len(first.generated_password) >= 12
    second = await bootstrap_admin(
        sessions, HASHER, email="other@example.org", password="another long password"
    )
    assert not second.created
    assert second.generated_password is None
    async with sessions() as session:
        repo = UserRepository(session)
        root = await repo.by_email("root@example.org")
        assert root is not None
        assert root.is_admin
        assert root.password_hash is not None
        assert first.generated_password not in root.password_hash
        assert await repo.by_email("other@example.org") is None


async def test_generated_password_logs_in(identity_factory: Any) -> None:
    """A generated password works for logging in (the fixture's admin is removed first)."""
    fresh = await identity_factory()
    async with fresh.sessions() as session:
        await session.execute(text("DELETE FROM users"))
        await session.commit()
    result = await bootstrap_admin(fresh.sessions, fresh.ctx.hasher, email="boss@example.org", password=None)
    assert result.generated_password is not None
    assert (await fresh.login("boss@example.org", result.generated_password)).status_code == 200


async def test_cli_migrates_and_prints_the_password_once(fresh_schema: Any, database_url: str) -> None:
    schema, _ = await fresh_schema("identity_cli")
    env = {
        **os.environ,
        "BATON_DATABASE_URL": database_url,
        "BATON_DATABASE_SCHEMA": schema,
        "BATON_ADMIN_EMAIL": "first@example.org",
        "BATON_IDENTITY_ARGON2_MEMORY_KIB": "8192",
        "BATON_IDENTITY_ARGON2_TIME_COST": "1",
        "BATON_LOG_JSON": "false",
    }
    env.pop("BATON_ADMIN_PASSWORD", None)
    cmd = [sys.executable, "-m", "identity.bootstrap", "--migrate"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    assert "first@example.org" in first.stdout
    assert "generated password" in first.stdout
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 0, second.stderr
    assert "already exists" in second.stdout
    assert "password" not in second.stdout
