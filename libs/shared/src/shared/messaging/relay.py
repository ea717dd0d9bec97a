"""The outbox relay: publishes a service's committed outbox rows to its JetStream stream, exactly once as
far as JetStream's dedupe window reaches, in order, with gap-free sequence numbers.

Guarantees and how they are kept:

- **One active relay per service.** The leader holds a session-level Postgres advisory lock on a dedicated
  connection, and runs all its outbox transactions on that same connection, so it cannot keep publishing
  once the lock is gone. Standbys retry the lock every ``poll_interval``; when the leader dies its
  connection closes and the lock is released.
- **Gap-free sequences that never change.** Unsequenced rows get the next numbers from ``outbox_state``, in
  id order, in a transaction committed *before* anything is published. A crash after publishing re-publishes
  the same rows with the same sequence and ``Nats-Msg-Id``, and JetStream drops the copies.
- **Nothing lost.** Rows are marked sent only after JetStream acknowledged every message of the batch, in
  the transaction that locked them. NATS errors roll back and retry with backoff; Postgres errors drop the
  connection (and the lock) and reconnect with backoff.
- **Low latency.** ``emit`` sends ``pg_notify('baton_outbox', <schema>)`` at commit; the leader LISTENs on
  its connection and polls every ``poll_interval`` as a fallback.

Sent rows are kept for ``retention`` so the relay can answer replay requests (``shared.messaging.replay``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NoStreamResponseError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client.core import Metric
from pydantic import ValidationError
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from shared.messaging.envelope import Envelope, to_nats
from shared.messaging.outbox import NOTIFY_CHANNEL, outbox, outbox_state
from shared.messaging.replay import answer_replay
from shared.messaging.streams import ensure_stream, replay_subject, stream_name
from shared.metrics import family

__all__ = ["DB_ERRORS", "OutboxRelay", "RelayStats", "engine_of"]

log = logging.getLogger(__name__)

# What "the database is not reachable right now" looks like from SQLAlchemy + asyncpg.
DB_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, ConnectionError)

_PRUNE_EVERY = 60.0
_PRUNE_CHUNK = 10_000


def engine_of(db: AsyncEngine | async_sessionmaker[AsyncSession]) -> AsyncEngine:
    """Accept either an engine or a session factory bound to one."""
    if isinstance(db, AsyncEngine):
        return db
    bind = db.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise TypeError("the session factory must be bound to an AsyncEngine")
    return bind


class _PublishFailed(Exception):
    """A batch could not be fully acknowledged by JetStream; the batch is retried as a whole."""


class Backoff:
    """Exponential backoff with jitter, reset after a success."""

    def __init__(self, first: float = 0.1, maximum: float = 5.0) -> None:
        self.first, self.maximum, self._next = first, maximum, first

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.maximum)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._next = self.first


@dataclass
class RelayStats:
    published: int = 0
    duplicates: int = 0
    batches: int = 0
    publish_failures: int = 0
    db_failures: int = 0
    pruned: int = 0


class OutboxRelay:
    """Publishes ``service``'s outbox. Run one or more per service; one leads, the others stand by."""

    def __init__(
        self,
        db: AsyncEngine | async_sessionmaker[AsyncSession],
        nats_url: str,
        service: str,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        retention: timedelta = timedelta(days=7),
        replicas: int = 1,
        duplicate_window: timedelta = timedelta(seconds=120),
        publish_timeout: float = 10.0,
        max_backoff: float = 5.0,
        replay_limit: int = 1000,
    ) -> None:
        self.engine = engine_of(db)
        self.nats_url = nats_url
        self.service = service
        self.stream = stream_name(service)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retention = retention
        self.replicas = replicas
        self.duplicate_window = duplicate_window
        self.publish_timeout = publish_timeout
        self.max_backoff = max_backoff
        self.replay_limit = replay_limit
        self.stats = RelayStats()
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._leading = asyncio.Event()
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = False
        self._schema: str | None = None
        self._last_prune = 0.0

    # -- public -------------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set()

    async def wait_leader(self, timeout: float | None = None) -> None:
        """Until this relay holds the lock (tests, health checks)."""
        await asyncio.wait_for(self._leading.wait(), timeout)

    async def metrics(self) -> list[Metric]:
        """The outbox as an operator watches it; every replica reports it, only the leader publishes."""
        query = select(func.count(), func.extract("epoch", func.now() - func.min(outbox.c.created_at))).where(
            outbox.c.sent_at.is_(None)
        )
        async with self.engine.connect() as conn:
            unpublished, oldest = (await conn.execute(query)).one()
        this = {"service": self.service}
        return [
            family("gauge", "baton_outbox_unpublished_events", "Committed events JetStream has not yet "
                   "acknowledged", [(this, unpublished)]),
            family("gauge", "baton_outbox_oldest_unpublished_age_seconds", "Age of the oldest unpublished "
                   "event (0 when there is none)", [(this, float(oldest or 0))]),
            family("gauge", "baton_relay_leader", "1 when this process's relay holds the service's leader "
                   "lock", [(this, 1.0 if self.is_leader else 0.0)]),
            family("counter", "baton_relay_published_events", "Events this process published, acknowledged "
                   "by JetStream", [(this, self.stats.published)]),
            family("counter", "baton_relay_publish_failures", "Publishes this process saw fail",
                   [(this, self.stats.publish_failures)]),
        ]  # fmt: skip

    def stop(self) -> None:
        """Ask ``run`` to finish the batch in flight, release the lock and return."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Lead or stand by until ``stop()`` (which also counts if it came first); survives NATS and
        Postgres outages."""
        try:
            await self._connect_nats()
            backoff = Backoff(maximum=self.max_backoff)
            while not self._stopping.is_set():
                try:
                    await self._lead(backoff)
                except DB_ERRORS as exc:
                    self.stats.db_failures += 1
                    log.warning("outbox relay %s: database unavailable (%s); reconnecting", self.service, exc)
                    await self._sleep(backoff.next())
        finally:
            await self.close()

    async def relay_once(self) -> int:
        """Publish everything pending now, then release the lock; the number of rows published.

        For tests and one-shot tools. Raises ``RuntimeError`` if another relay holds the lock.
        """
        await self._connect_nats()
        async with self._dedicated_connection() as conn:
            if not await self._try_lock(conn):
                raise RuntimeError(f"another outbox relay for {self.service} is active")
            await self._prepare(conn)
            total = 0
            while (n := await self._relay_batch(conn)) > 0:
                total += n
            return total

    async def close(self) -> None:
        self._leading.clear()
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.drain()

    # -- NATS ---------------------------------------------------------------------------------------

    async def _connect_nats(self) -> None:
        if self._nc is not None:
            return
        backoff = Backoff(maximum=self.max_backoff)
        while not self._stopping.is_set():
            try:
                self._nc = await nats.connect(
                    self.nats_url,
                    name=f"outbox-relay-{self.service}",
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    drain_timeout=5,
                    error_cb=self._on_nats_error,
                )
                break
            except (nats.errors.Error, OSError) as exc:
                log.warning("outbox relay %s: NATS unavailable (%s)", self.service, exc)
                await self._sleep(backoff.next())
        if self._nc is None:
            return
        self._js = self._nc.jetstream(
            timeout=self.publish_timeout, publish_async_max_pending=max(4000, 2 * self.batch_size)
        )
        # Any relay of the service may answer; the queue group makes exactly one of them do it.
        await self._nc.subscribe(replay_subject(self.service), queue="outbox-relay", cb=self._on_replay)

    async def _on_nats_error(self, exc: Exception) -> None:
        log.debug("outbox relay %s: NATS: %s", self.service, exc)

    async def _on_replay(self, msg: Msg) -> None:
        nc = self._nc
        if nc is None or not msg.reply:
            return
        try:
            reply = await answer_replay(
                self.engine,
                msg.data,
                limit=self.replay_limit,
                max_bytes=max(64 * 1024, int(nc.max_payload * 0.9)),
            )
        except DB_ERRORS as exc:
            log.warning("outbox relay %s: replay failed: %s", self.service, exc)
            reply = b'{"error":"database unavailable"}'
        with contextlib.suppress(nats.errors.Error):
            await msg.respond(reply)

    # -- leadership ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _dedicated_connection(self) -> Any:
        """A pooled connection that is never handed back: its session holds the lock and the LISTEN."""
        conn = await self.engine.connect()
        try:
            yield conn
        finally:
            self._leading.clear()
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    async def _try_lock(self, conn: AsyncConnection) -> bool:
        key = func.hashtextextended(
            func.concat("baton.outbox-relay:", func.current_schema(), ":", self.service), 0
        )
        got = bool(await conn.scalar(select(func.pg_try_advisory_lock(key))))
        self._schema = await conn.scalar(select(func.current_schema()))
        await conn.commit()  # the lock is session-level: it outlives this transaction
        return got

    async def _lead(self, backoff: Backoff) -> None:
        async with self._dedicated_connection() as conn:
            while not await self._try_lock(conn):
                if await self._sleep(self.poll_interval):
                    return
            log.info("outbox relay %s (%s) is now the leader", self.service, self.holder)
            raw = await conn.get_raw_connection()
            await raw.driver_connection.add_listener(NOTIFY_CHANNEL, self._on_notify)  # type: ignore[union-attr]
            await self._prepare(conn)
            self._leading.set()
            backoff.reset()
            publish_backoff = Backoff(maximum=self.max_backoff)
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    n = await self._relay_batch(conn)
                    publish_backoff.reset()
                except _PublishFailed as exc:
                    self.stats.publish_failures += 1
                    log.warning("outbox relay %s: publish failed (%s); retrying", self.service, exc)
                    await self._sleep(publish_backoff.next())
                    continue
                await self._maybe_prune(conn)
                if n < self.batch_size:
                    await self._idle()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == self._schema:
            self._wake.set()

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped first; True if stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def _prepare(self, conn: AsyncConnection) -> None:
        await conn.execute(
            text(
                "INSERT INTO outbox_state (id, last_sequence, relay_holder, relay_seen_at) "
                "VALUES (1, 0, :holder, now()) "
                "ON CONFLICT (id) DO UPDATE SET relay_holder = :holder, relay_seen_at = now()"
            ),
            {"holder": self.holder},
        )
        await conn.commit()

    # -- the batch ----------------------------------------------------------------------------------

    async def _relay_batch(self, conn: AsyncConnection) -> int:
        """Sequence, publish and mark one batch; the number of rows published."""
        await self._assign_sequences(conn)
        async with conn.begin():
            rows = (
                await conn.execute(
                    select(outbox.c.id, outbox.c.sequence, outbox.c.payload)
                    .where(outbox.c.sent_at.is_(None), outbox.c.sequence.is_not(None))
                    .order_by(outbox.c.sequence)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            acks = await self._publish(rows)
            await self._after_publish(rows)
            await conn.execute(
                update(outbox).where(outbox.c.id.in_([row.id for row in rows])).values(sent_at=func.now())
            )
        self.stats.batches += 1
        self.stats.published += len(rows)
        self.stats.duplicates += sum(1 for ack in acks if ack.duplicate)
        return len(rows)

    async def _assign_sequences(self, conn: AsyncConnection) -> None:
        """Number new rows in id order and commit, so a retried publish reuses the same numbers."""
        async with conn.begin():
            ids = (
                (
                    await conn.execute(
                        select(outbox.c.id)
                        .where(outbox.c.sent_at.is_(None), outbox.c.sequence.is_(None))
                        .order_by(outbox.c.id)
                        .limit(self.batch_size)
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return
            last = await conn.scalar(
                update(outbox_state)
                .where(outbox_state.c.id == 1)
                .values(last_sequence=outbox_state.c.last_sequence + len(ids), relay_seen_at=func.now())
                .returning(outbox_state.c.last_sequence)
            )
            if last is None:
                raise RuntimeError("outbox_state has no row")
            first = last - len(ids) + 1
            await conn.execute(
                text(
                    "UPDATE outbox AS o SET sequence = v.seq FROM "
                    "unnest(CAST(:ids AS uuid[]), CAST(:seqs AS bigint[])) AS v(id, seq) WHERE o.id = v.id"
                ),
                {"ids": list(ids), "seqs": list(range(first, first + len(ids)))},
            )

    async def _publish(self, rows: Sequence[Any]) -> list[PubAck]:
        """Publish every row and wait for all PubAcks, or raise ``_PublishFailed``."""
        nc, js = self._nc, self._js
        if nc is None or js is None or not nc.is_connected:
            raise _PublishFailed("NATS is not connected")
        if not self._stream_ready:
            try:
                await ensure_stream(
                    js, self.service, replicas=self.replicas, duplicate_window=self.duplicate_window
                )
            except (nats.errors.Error, TimeoutError) as exc:
                raise _PublishFailed(f"cannot declare {self.stream}: {exc!r}") from exc
            self._stream_ready = True
        tracer = trace.get_tracer("shared.messaging")
        spans: list[trace.Span] = []
        futures: list[asyncio.Future[PubAck]] = []
        try:
            for row in rows:
                try:
                    envelope = Envelope.model_validate({**row.payload, "sequence": row.sequence})
                except ValidationError as exc:
                    # Only emit() writes the outbox; a row it did not write stops the relay, loudly.
                    raise RuntimeError(f"outbox row {row.id} does not hold an envelope: {exc}") from exc
                subject, headers, body = to_nats(envelope)
                span = tracer.start_span(
                    f"{subject} publish",
                    context=propagate.extract(headers),
                    kind=SpanKind.PRODUCER,
                    attributes={
                        "messaging.system": "nats",
                        "messaging.operation.type": "send",
                        "messaging.destination.name": subject,
                        "messaging.message.id": envelope.id,
                        "cloudevents.event_type": envelope.type,
                        "baton.sequence": row.sequence,
                    },
                )
                spans.append(span)
                propagate.inject(headers, context=trace.set_span_in_context(span))
                # No wait_stall: a batch never fills the pending window (2 x batch_size), and nats-py's
                # wait_for around the semaphore costs a task per message (measured: 4x slower relay).
                futures.append(await js.publish_async(subject, body, headers=headers))
            acks = list(await asyncio.wait_for(asyncio.gather(*futures), self.publish_timeout))
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            for future in futures:
                future.cancel()
            for span in spans:
                span.set_status(Status(StatusCode.ERROR, repr(exc)))
                span.end()
            if isinstance(exc, NoStreamResponseError):
                self._stream_ready = False
            raise _PublishFailed(repr(exc)) from exc
        for span, ack in zip(spans, acks, strict=True):
            span.set_attribute("messaging.nats.stream_sequence", ack.seq)
            if ack.duplicate:
                span.set_attribute("messaging.nats.duplicate", True)
            span.end()
        return acks

    async def _after_publish(self, rows: Sequence[Any]) -> None:
        """Test seam: runs after JetStream acknowledged a batch, before it is marked sent."""

    async def _maybe_prune(self, conn: AsyncConnection) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_prune < _PRUNE_EVERY:
            return
        self._last_prune = now
        async with conn.begin():
            doomed = (
                select(outbox.c.id)
                .where(outbox.c.sent_at < func.now() - self.retention)
                .limit(_PRUNE_CHUNK)
                .scalar_subquery()
            )
            result = await conn.execute(delete(outbox).where(outbox.c.id.in_(doomed)))
            await conn.execute(
                update(outbox_state)
                .where(outbox_state.c.id == 1)
                .values(relay_holder=self.holder, relay_seen_at=func.now())
            )
        self.stats.pruned += result.rowcount
