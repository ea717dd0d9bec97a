"""Durable pull consumers that apply each event exactly once to the consumer's own database.

Per message: parse the envelope → open a transaction → insert (consumer, event id) into ``inbox`` (a
conflict means "already applied": ack and skip) → run the handler in that transaction → commit → ack.
A crash between commit and ack only causes a redelivery that the inbox turns into a no-op.

Outcomes:

- ``TransientError``, database or connection errors, and unexpected exceptions: roll back and
  ``nak(delay=backoff[attempt])``; at the last allowed delivery the message is dead-lettered instead.
- ``PoisonMessage``, a pydantic ``ValidationError``, or an envelope that does not parse: roll back,
  record a ``dead_letters`` row in its own transaction, then ``term()`` (never redelivered, never lost).
  If even the dead letter cannot be written, the message is nak'ed and comes back.
- A type with no handler: ack (the consumer's filter is wider than what it cares about).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import ValidationError
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import new_id, transaction
from shared.events.catalog import Event
from shared.messaging.envelope import Envelope, from_nats
from shared.messaging.errors import PoisonMessage
from shared.messaging.outbox import dead_letters, inbox
from shared.messaging.relay import DB_ERRORS, Backoff
from shared.messaging.streams import ensure_consumer

__all__ = ["ConsumerRunner", "ConsumerStats", "Handler", "dead_letter_count", "typed_handler"]

log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]
EventT = TypeVar("EventT", bound=Event)

# Deliveries the server still allows after the runner's own limit, so a dead letter that could not be
# written (database down) gets more chances instead of the message silently running out of deliveries.
_DEAD_LETTER_HEADROOM = 10


def typed_handler(event_cls: type[EventT], fn: Callable[[AsyncSession, EventT], Awaitable[None]]) -> Handler:
    """Adapt ``async def on_x(session, event: X)`` to a ``Handler`` (data that does not fit is poison)."""

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        await fn(session, envelope.parse_data(event_cls))

    handler.__qualname__ = getattr(fn, "__qualname__", repr(fn))
    return handler


@dataclass
class ConsumerStats:
    processed: int = 0
    duplicates: int = 0
    unhandled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    resubscribes: int = 0


class ConsumerRunner:
    """Runs one durable pull consumer (``<consumer-service>-<purpose>``) against ``stream``.

    ``handlers`` maps an event type (``baton.projects.project.created.v1``), a subject (every version:
    ``baton.projects.project.created``) or ``"*"`` (anything) to a handler; the most specific wins.
    ``backoff[i]`` is the delay before delivery ``i + 2`` after a transient failure (the last value
    repeats). ``ack_wait`` is how long a crashed worker's message waits before redelivery.
    """

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        nats_url: str,
        *,
        consumer: str,
        stream: str,
        subjects: Sequence[str],
        handlers: Mapping[str, Handler],
        batch: int = 100,
        max_deliver: int = 10,
        backoff: Sequence[float] = (1, 2, 5, 10, 30),
        ack_wait: float = 30.0,
        fetch_timeout: float = 1.0,
        max_reconnect_backoff: float = 5.0,
    ) -> None:
        if not backoff:
            raise ValueError("backoff needs at least one delay")
        self.session_factory = session_factory
        self.nats_url = nats_url
        self.consumer = consumer
        self.stream = stream
        self.subjects = list(subjects)
        self.handlers = dict(handlers)
        self.batch = batch
        self.max_deliver = max_deliver
        self.backoff = [float(b) for b in backoff]
        self.ack_wait = ack_wait
        self.fetch_timeout = fetch_timeout
        self.max_reconnect_backoff = max_reconnect_backoff
        self.stats = ConsumerStats()
        self._stopping = asyncio.Event()
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._resubscribe = False
        self._db_down = False

    # -- public -------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run`` to return after the batch in flight."""
        self._stopping.set()

    async def run(self) -> None:
        """Fetch and process until ``stop()``; survives NATS restarts and database outages."""
        self._stopping.clear()
        backoff = Backoff(maximum=self.max_reconnect_backoff)
        try:
            while not self._stopping.is_set():
                try:
                    await self.process_batch()
                    backoff.reset()
                except (nats.errors.Error, OSError) as exc:
                    # Includes a consumer or stream that vanished: declare them again.
                    log.warning("consumer %s: NATS trouble (%s); resubscribing", self.consumer, exc)
                    self._resubscribe = True
                    await self._sleep(backoff.next())
                except DB_ERRORS as exc:
                    log.warning("consumer %s: database unavailable (%s)", self.consumer, exc)
                    await self._sleep(backoff.next())
        finally:
            await self.close()

    async def start(self) -> None:
        """Connect, declare the consumer and subscribe (``run`` and ``process_batch`` call it)."""
        if self._nc is None:
            self._nc = await nats.connect(
                self.nats_url,
                name=f"consumer-{self.consumer}",
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                reconnected_cb=self._on_reconnected,
                error_cb=self._on_nats_error,
            )
            self._js = self._nc.jetstream()
            self._sub = None
        if self._sub is None or self._resubscribe:
            await self._subscribe()

    async def close(self) -> None:
        nc, self._nc, self._js, self._sub = self._nc, None, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.drain()

    async def process_batch(self, timeout: float | None = None) -> int:
        """Fetch up to ``batch`` messages (waiting at most ``timeout``) and process them; how many."""
        await self.start()
        if self._db_down and not await self._database_ready():
            # Fetching now would only burn deliveries on messages that cannot be applied.
            await self._sleep(min(self.backoff[0], 1.0))
            return 0
        assert self._sub is not None
        try:
            msgs = await self._sub.fetch(self.batch, timeout=timeout or self.fetch_timeout)
        except nats.errors.TimeoutError:
            return 0
        for msg in msgs:
            await self._process(msg)
        return len(msgs)

    # -- NATS plumbing ------------------------------------------------------------------------------

    async def _subscribe(self) -> None:
        assert self._js is not None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
            self.stats.resubscribes += 1
        await ensure_consumer(
            self._js,
            self.stream,
            self.consumer,
            self.subjects,
            max_deliver=self.max_deliver + _DEAD_LETTER_HEADROOM,
            ack_wait=self.ack_wait,
            max_ack_pending=max(1000, self.batch * 2),
        )
        self._sub = await self._js.pull_subscribe_bind(
            durable=self.consumer,
            stream=self.stream,
            pending_msgs_limit=max(10_000, self.batch * 4),
            pending_bytes_limit=512 * 1024 * 1024,
        )
        self._resubscribe = False

    async def _on_reconnected(self) -> None:
        # nats-py restores core subscriptions, but pull requests pending on the old server are gone and
        # the consumer may need declaring again: rebuild the pull subscription on the next fetch.
        self._resubscribe = True

    async def _on_nats_error(self, exc: Exception) -> None:
        log.debug("consumer %s: NATS: %s", self.consumer, exc)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _database_ready(self) -> bool:
        try:
            async with self.session_factory() as session:
                await session.execute(text("SELECT 1"))
        except DB_ERRORS:
            return False
        self._db_down = False
        return True

    # -- one message --------------------------------------------------------------------------------

    def _handler_for(self, envelope: Envelope) -> Handler | None:
        for key in (envelope.type, envelope.nats_subject, "*"):
            if (handler := self.handlers.get(key)) is not None:
                return handler
        return None

    async def _process(self, msg: Msg) -> None:
        deliveries = msg.metadata.num_delivered
        try:
            envelope = from_nats(msg)
        except PoisonMessage as exc:
            await self._dead_letter(msg, None, f"unreadable: {exc}")
            return
        handler = self._handler_for(envelope)
        if handler is None:
            self.stats.unhandled += 1
            await self._ack(msg)
            return
        if deliveries > self.max_deliver:
            # Delivered past the limit without an outcome: the worker died each time (or a dead letter
            # could not be written). Do not run the handler again.
            await self._dead_letter(msg, envelope, f"no outcome after {deliveries - 1} deliveries")
            return
        try:
            applied = await self._apply(envelope, handler, msg)
        except (PoisonMessage, ValidationError) as exc:
            await self._dead_letter(msg, envelope, f"poison: {exc!r}")
            return
        except Exception as exc:
            if isinstance(exc, DB_ERRORS):
                self._db_down = True
            if deliveries >= self.max_deliver:
                await self._dead_letter(msg, envelope, f"gave up after {deliveries} deliveries: {exc!r}")
                return
            delay = self.backoff[min(deliveries - 1, len(self.backoff) - 1)]
            log.info("consumer %s: %s failed (%r); retry in %ss", self.consumer, envelope.id, exc, delay)
            self.stats.retried += 1
            await msg.nak(delay=delay)
            return
        if applied:
            self.stats.processed += 1
        else:
            self.stats.duplicates += 1
        await self._ack(msg)

    async def _apply(self, envelope: Envelope, handler: Handler, msg: Msg) -> bool:
        """Run the handler with the inbox insert, in one transaction; False if already applied."""
        parent = propagate.extract(msg.headers or {})
        tracer = trace.get_tracer("shared.messaging")
        with tracer.start_as_current_span(
            f"{envelope.nats_subject} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            record_exception=False,
            set_status_on_exception=False,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": envelope.nats_subject,
                "messaging.consumer.group.name": self.consumer,
                "messaging.message.id": envelope.id,
                "cloudevents.event_type": envelope.type,
                "baton.sequence": envelope.sequence or 0,
            },
        ) as span:
            try:
                async with transaction(self.session_factory) as session:
                    inserted = await session.scalar(
                        pg_insert(inbox)
                        .values(consumer=self.consumer, event_id=uuid.UUID(envelope.id))
                        .on_conflict_do_nothing()
                        .returning(inbox.c.event_id)
                    )
                    if inserted is None:
                        span.set_attribute("baton.duplicate", True)
                        return False
                    await handler(session, envelope)
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, repr(exc)))
                raise
        return True

    async def _ack(self, msg: Msg) -> None:
        """Acknowledge after commit (a seam: tests override it to simulate a crash before the ack)."""
        await msg.ack()

    async def _dead_letter(self, msg: Msg, envelope: Envelope | None, reason: str) -> None:
        """Record the message, then terminate it; if recording fails, nak so it comes back later."""
        meta = msg.metadata
        event_id: uuid.UUID | None = None
        if envelope is not None:
            with contextlib.suppress(ValueError):
                event_id = uuid.UUID(envelope.id)
        try:
            async with transaction(self.session_factory) as session:
                await session.execute(
                    pg_insert(dead_letters)
                    .values(
                        id=new_id(),
                        consumer=self.consumer,
                        event_id=event_id,
                        event_type=None if envelope is None else envelope.type,
                        subject=msg.subject,
                        stream_sequence=meta.sequence.stream,
                        headers=dict(msg.headers or {}),
                        body=msg.data,
                        reason=reason[:4000],
                        deliveries=meta.num_delivered,
                    )
                    .on_conflict_do_nothing()
                )
        except DB_ERRORS as exc:
            self._db_down = True
            log.error("consumer %s: cannot record dead letter (%s); will retry", self.consumer, exc)
            await msg.nak(delay=self.backoff[-1])
            return
        log.error("consumer %s: dead-lettered %s: %s", self.consumer, msg.subject, reason)
        self.stats.dead_lettered += 1
        await msg.term()


async def dead_letter_count(session: AsyncSession, consumer: str) -> int:
    """How many messages ``consumer`` gave up on (for health endpoints and tests)."""
    query = select(func.count()).select_from(dead_letters).where(dead_letters.c.consumer == consumer)
    return int(await session.scalar(query) or 0)
