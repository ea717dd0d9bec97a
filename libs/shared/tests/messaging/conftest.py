"""Fixtures for the messaging tests: a fresh schema with the messaging tables, stream readers, pollers.

Every test runs on the session's real Postgres and NATS; ``clean_jetstream`` gives each test an empty
JetStream, ``fresh_schema`` an empty outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, func, select
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db import create_session_factory, schema_metadata
from shared.messaging import Envelope, add_messaging_tables, from_nats
from shared.messaging.outbox import outbox

metadata: MetaData = schema_metadata()
tables = add_messaging_tables(metadata)
# What handlers write in tests: one row per applied event (no unique key, so a double apply would show).
effects = Table(
    "effects",
    metadata,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("consumer", Text, nullable=False),
)


@dataclass
class Db:
    schema: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    effects: ClassVar[Table] = effects

    async def scalar(self, query: Any) -> Any:
        async with self.sessions() as session:
            return await session.scalar(query)

    async def unsent(self) -> int:
        return int(
            await self.scalar(select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None)))
        )

    async def outbox_rows(self) -> list[Any]:
        async with self.sessions() as session:
            result = await session.execute(select(outbox).order_by(outbox.c.id))
            return list(result.all())

    async def effect_count(self, event_id: Any = None) -> int:
        query = select(func.count()).select_from(effects)
        if event_id is not None:
            query = query.where(effects.c.event_id == event_id)
        return int(await self.scalar(query))


@pytest.fixture
async def db(fresh_schema: Callable[..., Awaitable[tuple[str, AsyncEngine]]]) -> Db:
    schema, engine = await fresh_schema("msg", metadata)
    return Db(schema, engine, create_session_factory(engine))


@dataclass
class StreamMessage:
    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes

    @property
    def envelope(self) -> Envelope:
        return from_nats(self)


async def read_stream(js: Any, stream: str) -> list[StreamMessage]:
    """Every message stored in ``stream``, in stream order."""
    info = await js.stream_info(stream)
    out: list[StreamMessage] = []
    if info.state.messages == 0:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await js.get_msg(stream, seq)
        out.append(StreamMessage(seq, raw.subject, dict(raw.headers or {}), raw.data or b""))
    return out


@pytest.fixture
def stream_reader() -> Callable[[Any, str], Awaitable[list[StreamMessage]]]:
    return read_stream


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0, interval: float = 0.05
) -> None:
    """Poll an async predicate until it holds; fail the test with a timeout otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    return wait_for


@pytest.fixture
async def background() -> AsyncIterator[Callable[[Any], asyncio.Task[Any]]]:
    """Start coroutines as tasks that are stopped (``stop()``) and awaited when the test ends."""
    started: list[tuple[Any, asyncio.Task[Any]]] = []

    def start(component: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(component.run())
        started.append((component, task))
        return task

    yield start
    for component, _ in started:
        component.stop()
    for _, task in started:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 15)
