"""Durable pull consumers that apply each event exactly once to the consumer's own database.

Per fetched batch: one transaction that inserts every (consumer, event id) into ``inbox`` (a conflict
means "already applied": skip) and runs the handlers in order; then commit, then ack. A crash between
commit and ack only causes a redelivery that the inbox turns into a no-op. One commit and one inbox
statement per batch, not per message, is what lets a consumer keep up with several producers: a durable
commit costs milliseconds. If any message fails or cannot be read, that attempt is rolled back and the
batch is redone message by message, each under its own savepoint, so one bad message never holds back
or undoes the others. Order within the batch is kept either way.

Outcomes, settled after the commit:

- applied, already applied, or no handler for the type (the filter is wider than the interest): ack.
- ``TransientError`` or any other exception from the handler: its savepoint is rolled back and the
  message is ``nak(delay=backoff[attempt])``'ed; at the last allowed delivery it is dead-lettered instead.
- ``PoisonMessage``, a pydantic ``ValidationError``, or an envelope that does not parse: rolled back, a
  ``dead_letters`` row is written, then ``term()`` (never redelivered, never lost).
- The batch cannot be committed (database down): every message is nak'ed with a delay and comes back.

Handlers must not commit or roll back the session themselves.

The inbox is pruned periodically (``InboxPruning``: every hour, rows older than 14 days by default) and a
consumer missing on the server is created at its inbox horizon, so the events whose rows are gone are not
delivered again (``shared.messaging.inbox``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client.core import Metric
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import new_id, transaction
from shared.messaging.envelope import Envelope, from_nats
from shared.messaging.errors import PoisonMessage
from shared.messaging.handlers import Handler, typed_handler
from shared.messaging.inbox import (
    InboxPruning,
    PruneResult,
    inbox_horizon_of,
    prune_inbox,
    unacknowledged_since,
)
from shared.messaging.observe import consumer_families, dead_letter_count, settled_families
from shared.messaging.outbox import dead_letters, inbox
from shared.messaging.relay import DB_ERRORS, Backoff
from shared.messaging.streams import ensure_consumer

# Handler, typed_handler, dead_letter_count: defined beside, importable from here as before.
__all__ = ["ConsumerRunner", "ConsumerStats", "Handler", "dead_letter_count", "typed_handler"]

log = logging.getLogger(__name__)


_INBOX_MANY = text(
    "INSERT INTO inbox (consumer, event_id) SELECT :consumer, unnest(CAST(:ids AS uuid[])) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
).columns(inbox.c.event_id)

# Deliveries the server still allows after the runner's own limit, so a dead letter that could not be
# written (database down) gets more chances instead of the message silently running out of deliveries.
_DEAD_LETTER_HEADROOM = 10


@dataclass
class ConsumerStats:
    processed: int = 0
    duplicates: int = 0
    unhandled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    resubscribes: int = 0
    kept_alive: int = 0  # in-progress signals sent for slow batches
    inbox_pruned: int = 0  # inbox rows deleted by this runner's prunes


class ConsumerRunner:
    """Runs one durable pull consumer (``<consumer-service>-<purpose>``) against ``stream``.

    ``handlers`` maps an event type (``baton.projects.project.created.v1``), a subject (every version:
    ``baton.projects.project.created``) or ``"*"`` (anything) to a handler; the most specific wins.
    ``backoff[i]`` is the delay before delivery ``i + 2`` after a transient failure (the last value
    repeats). ``ack_wait`` is how long a crashed worker's message waits before redelivery: while a batch
    is being applied its messages are kept in progress (``+WPI`` every third of ``ack_wait``), so a slow
    handler is never redelivered under its own feet and ``ack_wait`` can stay short.

    ``inbox_pruning`` says how ``run`` prunes the consumer's inbox: workers pass
    ``InboxPruning.from_settings(settings)``; without one, the defaults (hourly, 14 days).
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
        inbox_pruning: InboxPruning | None = None,
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
        self.inbox_pruning = inbox_pruning if inbox_pruning is not None else InboxPruning()
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
        """Fetch and process until ``stop()`` (also if it came first); survives NATS restarts and database
        outages. Prunes the inbox on the side while it runs."""
        backoff = Backoff(maximum=self.max_reconnect_backoff)
        pruning = asyncio.create_task(self._prune_periodically()) if self.inbox_pruning.enabled else None
        try:
            while not self._stopping.is_set():
                try:
                    await self.process_batch()
                    backoff.reset()
                except NotFoundError:
                    # The stream is not there yet (its producer has not published since it was created or
                    # cleared), or the consumer was deleted: declare them again after a pause.
                    log.info(
                        "consumer %s: stream %s or the consumer not found; waiting",
                        self.consumer,
                        self.stream,
                    )
                    self._resubscribe = True
                    await self._sleep(backoff.next())
                except (nats.errors.Error, OSError) as exc:
                    log.warning("consumer %s: NATS trouble (%r); resubscribing", self.consumer, exc)
                    self._resubscribe = True
                    await self._sleep(backoff.next())
                except DB_ERRORS as exc:
                    log.warning("consumer %s: database unavailable (%s)", self.consumer, exc)
                    await self._sleep(backoff.next())
        finally:
            if pruning is not None:
                pruning.cancel()  # a batch cut short is rolled back; the next prune deletes it
                with contextlib.suppress(asyncio.CancelledError):
                    await pruning
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

    async def metrics(self) -> list[Metric]:
        """The consumer as an operator watches it: JetStream's view (pending, redelivered), the dead letters
        in the database, and what this process applied."""
        this = {"stream": self.stream, "consumer": self.consumer}
        families: list[Metric] = []
        info = None
        if self._js is not None:
            with contextlib.suppress(NotFoundError):  # not declared yet: no JetStream view to report
                info = await self._js.consumer_info(self.stream, self.consumer)
        if info is not None:
            families += consumer_families([(this, info)])
        async with self.session_factory() as session:
            dead = await dead_letter_count(session, self.consumer)
        return families + settled_families(this, dead, self.stats)

    async def close(self) -> None:
        nc, self._nc, self._js, self._sub = self._nc, None, None, None
        if nc is not None and not nc.is_closed:
            # Not drain(): a pull subscription's undelivered buffer never empties, so drain would wait
            # for its timeout. Flushing gets the last acks to the server; anything pulled but not
            # processed is redelivered after ack_wait.
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await nc.close()

    async def process_batch(self, timeout: float | None = None) -> int:
        """Fetch up to ``batch`` messages (waiting at most ``timeout``), apply them in one transaction,
        then settle each (ack / nak / term); how many were fetched."""
        await self.start()
        if self._db_down and not await self._database_ready():
            # Fetching now would only burn deliveries on messages that cannot be applied.
            await self._sleep(min(self.backoff[0], 1.0))
            return 0
        assert self._sub is not None
        try:
            msgs = await self._sub.fetch(self.batch, timeout=timeout or self.fetch_timeout)
        except TimeoutError:  # nothing now (nats-py raises its own subclass, or asyncio's, for that)
            return 0
        keep_alive = asyncio.create_task(self._keep_in_progress(msgs))
        try:
            outcomes = await self._apply_batch(msgs)
        except DB_ERRORS as exc:
            # Nothing of the batch was committed: every message comes back after a delay.
            self._db_down = True
            log.warning("consumer %s: batch not applied (%s); will retry", self.consumer, exc)
            for msg in msgs:
                await msg.nak(delay=self._delay(msg.metadata.num_delivered))
            return len(msgs)
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive
        for msg, outcome in zip(msgs, outcomes, strict=True):
            await self._settle(msg, outcome)
        return len(msgs)

    async def prune_inbox(self) -> PruneResult | None:
        """Prune this consumer's inbox now (``run`` does it every ``inbox_pruning.interval``).

        The horizon stops at the oldest message the consumer may not have acknowledged, so, created again,
        it would still get every message it had not applied. Nothing is pruned (``None``) while that cannot
        be known: not connected to NATS, or the consumer is not on the server.
        """
        js = self._js
        if js is None:
            return None
        try:
            info = await js.consumer_info(self.stream, self.consumer)
            pending_since = await unacknowledged_since(
                js, self.stream, self.consumer, self.subjects, info=info
            )
        except NotFoundError:
            return None

        async def same_consumer() -> bool:
            # Deleted and created again (at the old horizon) since ``info`` was read: its rows stay.
            try:
                now = await js.consumer_info(self.stream, self.consumer)
            except NotFoundError:
                return False
            return bool(now.created == info.created)

        policy = self.inbox_pruning
        result = await prune_inbox(
            self.session_factory,
            self.consumer,
            retention=policy.retention,
            margin=policy.margin,
            batch=policy.batch,
            not_after=pending_since,
            before_delete=same_consumer,
        )
        self.stats.inbox_pruned += result.deleted
        if result.deleted:
            log.info(
                "consumer %s: pruned %d inbox rows (horizon %s)",
                self.consumer,
                result.deleted,
                result.horizon.isoformat(),
            )
        return result

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
            start_time=self._inbox_horizon,
        )
        self._sub = await self._js.pull_subscribe_bind(
            durable=self.consumer,
            stream=self.stream,
            pending_msgs_limit=max(10_000, self.batch * 4),
            pending_bytes_limit=512 * 1024 * 1024,
        )
        self._resubscribe = False

    async def _inbox_horizon(self) -> datetime | None:
        """Where the consumer starts when it has to be created: the events before were applied and their
        inbox rows may be gone. Without a horizon it starts at the stream's first message."""
        return await inbox_horizon_of(self.session_factory, self.consumer)

    async def _prune_periodically(self) -> None:
        interval = self.inbox_pruning.interval
        delay = interval * random.uniform(0.0, 0.1)  # replicas started together do not prune together
        while True:
            await self._sleep(delay)
            if self._stopping.is_set():
                return
            try:
                await self.prune_inbox()
            except Exception as exc:  # the database or NATS is away: the next round prunes
                log.warning("consumer %s: inbox not pruned (%r)", self.consumer, exc)
            delay = interval * random.uniform(0.9, 1.1)

    async def _keep_in_progress(self, msgs: list[Msg]) -> None:
        """Tell the server, every third of ``ack_wait``, that the batch is still being worked on."""
        interval = max(self.ack_wait / 3, 0.1)
        while True:
            await asyncio.sleep(interval)
            for msg in msgs:
                try:
                    await msg.in_progress()
                except (nats.errors.Error, OSError) as exc:  # the ack that follows will tell
                    log.debug("consumer %s: in-progress not sent (%r)", self.consumer, exc)
            self.stats.kept_alive += 1

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

    def _delay(self, deliveries: int) -> float:
        return self.backoff[min(max(deliveries, 1) - 1, len(self.backoff) - 1)]

    async def _apply_batch(self, msgs: list[Msg]) -> list[_Outcome]:
        """The batch's outcomes, committed. Optimistic first (one bulk inbox insert, no savepoints); if a
        message needs isolating, that attempt is rolled back and the batch redone message by message.
        A handler that failed is not run again for the same delivery: its exception decides its fate."""
        failure: tuple[int, Exception] | None = None
        try:
            async with transaction(self.session_factory) as session:
                return await self._apply_optimistically(session, msgs)
        except _NeedsIsolation as isolate:
            failure = isolate.failure
        async with transaction(self.session_factory) as session:
            outcomes: list[_Outcome] = []
            for index, msg in enumerate(msgs):
                if failure is not None and failure[0] == index:
                    outcomes.append(await self._after_failure(session, msg, from_nats(msg), failure[1]))
                else:
                    outcomes.append(await self._process(session, msg))
            return outcomes

    async def _apply_optimistically(self, session: AsyncSession, msgs: list[Msg]) -> list[_Outcome]:
        """Every message applies cleanly, or ``_NeedsIsolation`` (and the caller rolls back)."""
        items: list[tuple[Msg, Envelope, Handler | None]] = []
        for msg in msgs:
            try:
                envelope = from_nats(msg)
            except PoisonMessage:
                raise _NeedsIsolation(None) from None
            handler = self._handler_for(envelope)
            if handler is not None and (
                _event_uuid(envelope) is None or msg.metadata.num_delivered > self.max_deliver
            ):
                raise _NeedsIsolation(None)
            items.append((msg, envelope, handler))
        wanted = [_event_uuid(e) for _, e, h in items if h is not None]
        fresh: set[uuid.UUID] = set()
        if wanted:
            # One statement with one array parameter: the same SQL for any batch size, so it stays cached.
            inserted = await session.execute(_INBOX_MANY, {"consumer": self.consumer, "ids": wanted})
            fresh = set(inserted.scalars())
        outcomes: list[_Outcome] = []
        for index, (msg, envelope, handler) in enumerate(items):
            if handler is None:
                outcomes.append(_Outcome("ack", "unhandled"))
                continue
            event_id = _event_uuid(envelope)
            if event_id not in fresh:  # applied before, or an earlier copy in this batch
                outcomes.append(_Outcome("ack", "duplicates"))
                continue
            fresh.discard(event_id)
            try:
                await self._run_handler(session, envelope, handler, msg)
            except Exception as exc:
                raise _NeedsIsolation((index, exc)) from exc
            outcomes.append(_Outcome("ack", "processed"))
        return outcomes

    async def _process(self, session: AsyncSession, msg: Msg) -> _Outcome:
        """Decide one message's fate inside the batch transaction, under its own savepoint."""
        deliveries = msg.metadata.num_delivered
        try:
            envelope = from_nats(msg)
        except PoisonMessage as exc:
            return await self._dead_letter(session, msg, None, f"unreadable: {exc}")
        handler = self._handler_for(envelope)
        if handler is None:
            return _Outcome("ack", "unhandled")
        event_id = _event_uuid(envelope)
        if event_id is None:
            return await self._dead_letter(session, msg, envelope, f"event id {envelope.id!r} is not a UUID")
        if deliveries > self.max_deliver:
            # Delivered past the limit without an outcome: the worker died each time, or the batch
            # could not be committed. Do not run the handler again.
            return await self._dead_letter(
                session, msg, envelope, f"no outcome after {deliveries - 1} deliveries"
            )
        try:
            async with session.begin_nested():
                inserted = await session.scalar(
                    pg_insert(inbox)
                    .values(consumer=self.consumer, event_id=event_id)
                    .on_conflict_do_nothing()
                    .returning(inbox.c.event_id)
                )
                if inserted is None:
                    return _Outcome("ack", "duplicates")
                await self._run_handler(session, envelope, handler, msg)
        except Exception as exc:
            # A broken connection surfaces again at the next statement or the commit and fails the
            # whole batch; anything else is this message's problem.
            return await self._after_failure(session, msg, envelope, exc)
        return _Outcome("ack", "processed")

    async def _after_failure(
        self, session: AsyncSession, msg: Msg, envelope: Envelope, exc: Exception
    ) -> _Outcome:
        """Poison is dead-lettered at once; anything else is retried until the last delivery."""
        deliveries = msg.metadata.num_delivered
        if isinstance(exc, PoisonMessage | ValidationError):
            return await self._dead_letter(session, msg, envelope, f"poison: {type(exc).__name__}: {exc}")
        if deliveries >= self.max_deliver:
            reason = f"gave up after {deliveries} deliveries: {type(exc).__name__}: {exc}"
            return await self._dead_letter(session, msg, envelope, reason)
        log.info("consumer %s: %s failed (%r); will retry", self.consumer, envelope.id, exc)
        return _Outcome("nak", "retried", self._delay(deliveries))

    async def _run_handler(
        self, session: AsyncSession, envelope: Envelope, handler: Handler, msg: Msg
    ) -> None:
        """The handler inside a CONSUMER span that continues the producer's trace."""
        tracer = trace.get_tracer("shared.messaging")
        with tracer.start_as_current_span(
            f"{envelope.nats_subject} process",
            context=propagate.extract(msg.headers or {}),
            kind=SpanKind.CONSUMER,
            record_exception=False,
            set_status_on_exception=False,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": envelope.nats_subject,
                "messaging.consumer.group.name": self.consumer,
                "messaging.message.id": envelope.id,
                "messaging.nats.delivery_count": msg.metadata.num_delivered,
                "cloudevents.event_type": envelope.type,
                "baton.sequence": envelope.sequence or 0,
            },
        ) as span:
            try:
                await handler(session, envelope)
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, repr(exc)))
                raise

    async def _dead_letter(
        self, session: AsyncSession, msg: Msg, envelope: Envelope | None, reason: str
    ) -> _Outcome:
        """Record the message (terminated once the batch commits; if it does not, it comes back)."""
        event_id = None if envelope is None else _event_uuid(envelope)
        async with session.begin_nested():
            await session.execute(
                pg_insert(dead_letters)
                .values(
                    id=new_id(),
                    consumer=self.consumer,
                    event_id=event_id,
                    event_type=None if envelope is None else envelope.type,
                    subject=msg.subject,
                    stream_sequence=msg.metadata.sequence.stream,
                    headers=dict(msg.headers or {}),
                    body=msg.data,
                    reason=reason[:4000],
                    deliveries=msg.metadata.num_delivered,
                )
                .on_conflict_do_nothing()
            )
        log.error("consumer %s: dead-lettering %s: %s", self.consumer, msg.subject, reason)
        return _Outcome("term", "dead_lettered")

    async def _settle(self, msg: Msg, outcome: _Outcome) -> None:
        """Tell JetStream, after the commit, what became of the message."""
        if outcome.action == "ack":
            await self._ack(msg)
        elif outcome.action == "nak":
            await msg.nak(delay=outcome.delay)
        else:
            await msg.term()
        stat = outcome.stat
        setattr(self.stats, stat, getattr(self.stats, stat) + 1)

    async def _ack(self, msg: Msg) -> None:
        """Acknowledge after commit (a seam: tests override it to simulate a crash before the ack)."""
        await msg.ack()


class _NeedsIsolation(Exception):
    """The optimistic batch hit something that must be handled message by message; ``failure`` is the
    index and exception of a handler that already failed in this delivery, if that was the reason."""

    def __init__(self, failure: tuple[int, Exception] | None) -> None:
        super().__init__(failure)
        self.failure = failure


def _event_uuid(envelope: Envelope) -> uuid.UUID | None:
    try:
        return uuid.UUID(envelope.id)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Outcome:
    action: Literal["ack", "nak", "term"]
    stat: Literal["processed", "duplicates", "unhandled", "retried", "dead_lettered"]
    delay: float = 0.0
