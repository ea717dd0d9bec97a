"""pytest plugin loaded for the whole workspace (``-p shared.testing.plugin`` in the root config).

Fixtures:
- ``postgres`` / ``nats`` (session): the real servers (see ``shared.testing.backends``).
- ``database_url`` / ``nats_url``: their URLs.
- ``fresh_schema``: an async factory ``await fresh_schema(prefix, metadata)`` → ``(schema, engine)``; every
  schema it made is dropped after the test, so tests that commit stay isolated.
- ``nats_client``: a connected nats-py client; ``clean_jetstream`` deletes every stream and KV bucket first.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.testing.backends import Backends, NatsBackend, PostgresBackend, create_fresh_schema, drop_schema

FreshSchema = Callable[..., Awaitable[tuple[str, AsyncEngine]]]


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    root = Path(tempfile.mkdtemp(prefix="baton-test-"))
    b = Backends(root=root)
    try:
        yield b
    finally:
        b.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(backends: Backends) -> PostgresBackend:
    return backends.get_postgres()


@pytest.fixture(scope="session")
def nats(backends: Backends) -> NatsBackend:
    return backends.get_nats()


@pytest.fixture(scope="session")
def database_url(postgres: PostgresBackend) -> str:
    return postgres.url


@pytest.fixture(scope="session")
def nats_url(nats: NatsBackend) -> str:
    return nats.url


@pytest.fixture
async def fresh_schema(database_url: str) -> AsyncIterator[FreshSchema]:
    made: list[tuple[str, AsyncEngine]] = []

    async def factory(prefix: str = "t", metadata: MetaData | None = None) -> tuple[str, AsyncEngine]:
        schema, engine = await create_fresh_schema(database_url, prefix, metadata)
        made.append((schema, engine))
        return schema, engine

    yield factory
    for schema, engine in made:
        await engine.dispose()
        await drop_schema(database_url, schema)


@pytest.fixture
async def nats_client(nats_url: str) -> AsyncIterator[Any]:
    import nats as nats_py

    nc = await nats_py.connect(nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    yield nc
    with contextlib.suppress(Exception):
        await nc.drain()


@pytest.fixture
async def clean_jetstream(nats_client: Any) -> Any:
    """Delete every stream (KV buckets are streams too) so a test starts from an empty JetStream."""
    js = nats_client.jetstream()
    for info in await js.streams_info():
        with contextlib.suppress(Exception):
            await js.delete_stream(info.config.name)
    return js
