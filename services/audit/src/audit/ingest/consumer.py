"""Durable pull consumers ``audit-<stream>``, one per producing stream, found by discovery.

Unlike ``shared.messaging.ConsumerRunner`` these never terminate a message: deliveries are unlimited, a
message that is not a readable event is stored raw and flagged, and a readable one that still cannot be
appended after ``raw_fallback_after_deliveries`` is stored raw as well. Idempotency comes from the log
itself (one entry per event id), in the same transaction as the append; the ack follows the commit.

**Producer order.** Each producer's events are appended in the order of its gap-free sequence, whatever
the delivery order (several replicas sharing a consumer, redeliveries after a crash or a nak, messages
JetStream lost and the healer replays): an event is appended only once every earlier sequence of its
producer is in the log (or given up as lost by the healer). One that arrives early is *held*: kept in
memory, unacknowledged and reported in progress, and appended by a later poll once its predecessors are
in (appended by this replica, another one, or a replay). Holding does not count as a delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.chain.models import Producer
from audit.chain.service import PartitionKeeper
from audit.config import AuditSettings
from audit.ingest.mapping import draft_from_message, is_raw, producer_of_stream, raw_draft
from audit.ingest.pipeline import IngestItem, database_down, ingest
from audit.ingest.producers import state_of
from shared.messaging import ensure_consumer

__all__ = ["ConsumerStats", "StreamConsumer", "consumer_name"]

log = logging.getLogger(__name__)


def consumer_name(stream: str) -> str:
    return f"audit-{stream}"


@dataclass
class ConsumerStats:
    appended: int = 0
    duplicates: int = 0
    raw: int = 0
    batches: int = 0
    naks: int = 0
    resubscribes: int = 0
    held: int = 0  # deliveries held back until their producer's earlier events were in


class StreamConsumer:
    """Consumes one stream until ``stop()`` or until the stream is deleted."""

    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        keeper: PartitionKeeper,
        js: JetStreamContext,
        stream: str,
        settings: AuditSettings,
    ) -> None:
        self.factory = factory
        self.keeper = keeper
        self.js = js
        self.stream = stream
        self.durable = consumer_name(stream)
        self.producer = producer_of_stream(stream, settings.stream_prefix)
        self.settings = settings
        self.stats = ConsumerStats()
        self.resubscribe = False
        self._sub: Any = None
        self._stopping = asyncio.Event()
        self._held: list[tuple[Msg, IngestItem]] = []
        self._held_touched = 0.0
        self._known_last = 0  # the producer's highest sequence the log knows of, as last read

    def stop(self) -> None:
        self._stopping.set()

    async def subscribe(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
            self.stats.resubscribes += 1
        s = self.settings
        await ensure_consumer(
            self.js,
            self.stream,
            self.durable,
            [],
            max_deliver=-1,
            ack_wait=s.ack_wait_seconds,
            max_ack_pending=max(1000, 4 * s.fetch_batch),
        )
        self._sub = await self.js.pull_subscribe_bind(
            durable=self.durable,
            stream=self.stream,
            pending_msgs_limit=max(10_000, 4 * s.fetch_batch),
            pending_bytes_limit=512 * 1024 * 1024,
        )
        self.resubscribe = False

    async def run(self) -> None:
        delay = 0.2
        while not self._stopping.is_set():
            try:
                if self._sub is None or self.resubscribe:
                    await self.subscribe()
                await self.poll()
                delay = 0.2
            except NotFoundError:
                if not await self._stream_exists():
                    log.info("stream %s is gone; its audit consumer stops", self.stream)
                    return
                self.resubscribe = True
                await self._sleep(delay)
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                log.warning("audit consumer %s: NATS trouble (%s); resubscribing", self.durable, exc)
                self.resubscribe = True
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as exc:
                if not database_down(exc):
                    log.exception("audit consumer %s: unexpected error", self.durable)
                else:
                    log.warning("audit consumer %s: database unavailable (%s)", self.durable, exc)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)

    async def poll(self) -> int:
        """Fetch one batch and process it (with anything held); how many messages came."""
        timeout = self.settings.fetch_timeout_seconds
        if self._held:  # look again soon: another replica may be appending the missing events
            timeout = min(timeout, 0.2)
        try:
            msgs = await self._sub.fetch(self.settings.fetch_batch, timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            msgs = []  # nothing new right now
        if msgs or self._held:
            await self.process(msgs)
        return len(msgs)

    @property
    def holding(self) -> int:
        return len(self._held)

    def _item(self, msg: Msg) -> IngestItem:
        meta = msg.metadata
        stream_sequence = meta.sequence.stream
        if meta.num_delivered > self.settings.raw_fallback_after_deliveries:
            draft = raw_draft(
                msg,
                stream=self.stream,
                stream_sequence=stream_sequence,
                reason=f"not appended after {meta.num_delivered - 1} deliveries",
                max_payload_bytes=self.settings.max_payload_bytes,
                cause="refused",
            )
            # A readable event the log kept refusing: kept raw, it still takes its producer sequence, so the
            # producer's later events are not held behind it and no replay is asked for what is here.
            return IngestItem(draft, counts_as_seen=True)
        draft, parsed = draft_from_message(
            msg,
            stream=self.stream,
            stream_sequence=stream_sequence,
            producer=self.producer,
            max_payload_bytes=self.settings.max_payload_bytes,
        )
        return IngestItem(draft, counts_as_seen=parsed)

    async def process(self, msgs: list[Msg]) -> None:
        """Append what may be appended now in one transaction, then ack it; hold the rest. On failure,
        isolate the messages one by one."""
        pairs = [*self._held, *((m, self._item(m)) for m in msgs)]
        try:
            ready, held = await self._in_order(pairs)
        except Exception:
            self._held = pairs  # the database is away: all of it waits in memory for the next poll
            raise
        self._held = held
        fresh = {id(m) for m in msgs}
        self.stats.held += sum(1 for m, _ in held if id(m) in fresh)
        exist = self._exist(held)
        await self._keep_held()
        if not ready:
            if exist:
                await self._ingest([], exist=exist)
            return
        msgs = [m for m, _ in ready]
        items = [i for _, i in ready]
        try:
            await self._ingest(items, exist=exist)
        except Exception as exc:
            if database_down(exc) or len(msgs) == 1:
                await self._nak_all(msgs, exc)
                raise
            log.warning("audit consumer %s: batch failed (%r); retrying one by one", self.durable, exc)
            for msg, item in zip(msgs, items, strict=True):
                try:
                    await self._ingest([item])
                except Exception as one_exc:
                    await self._nak_all([msg], one_exc)
                    if database_down(one_exc):
                        raise
                    continue
                await self._ack([msg])
            return
        await self._ack(msgs)

    async def _in_order(
        self, pairs: list[tuple[Msg, IngestItem]]
    ) -> tuple[list[tuple[Msg, IngestItem]], list[tuple[Msg, IngestItem]]]:
        """Split into (appendable now, in producer order) and (held: an earlier sequence is missing)."""

        def sequence(pair: tuple[Msg, IngestItem]) -> int | None:
            item = pair[1]
            return item.draft.producer_sequence if item.counts_as_seen else None

        unordered = [p for p in pairs if sequence(p) is None]  # raw entries: nothing to order
        ordered = sorted((p for p in pairs if sequence(p) is not None), key=lambda p: sequence(p) or 0)
        if not ordered:
            return unordered, []
        cursor = await self._settled_up_to()
        ready: list[tuple[Msg, IngestItem]] = []
        held: list[tuple[Msg, IngestItem]] = []
        for pair in ordered:
            n = sequence(pair) or 0
            if n <= cursor + 1 and not held:
                ready.append(pair)  # next in line, or a copy of one already in (a no-op append)
                cursor = max(cursor, n)
            else:
                held.append(pair)
        return unordered + ready, held

    async def _settled_up_to(self) -> int:
        async with self.factory() as session:
            row = await session.get(Producer, self.producer)
        if row is None:
            return 0
        state = state_of(row)
        self._known_last = state.known_last
        return state.settled_up_to()

    def _exist(self, held: list[tuple[Msg, IngestItem]]) -> dict[tuple[str, str | None], int] | None:
        """The highest held sequence, when the log does not know it exists yet (so the gap shows)."""
        highest = max((i.draft.producer_sequence or 0 for _, i in held), default=0)
        if highest <= self._known_last:
            return None
        self._known_last = highest
        return {(self.producer, self.stream): highest}

    async def _keep_held(self) -> None:
        """Tell the server, every third of ``ack_wait``, that held messages are still being worked on."""
        now = time.monotonic()
        if not self._held or now - self._held_touched < self.settings.ack_wait_seconds / 3:
            return
        self._held_touched = now
        for msg, _ in self._held:
            with contextlib.suppress(nats.errors.Error):
                await msg.in_progress()

    async def _ingest(
        self, items: list[IngestItem], *, exist: dict[tuple[str, str | None], int] | None = None
    ) -> None:
        outcome = await ingest(self.factory, self.keeper, items, exist=exist)
        self.stats.batches += 1
        self.stats.appended += len(outcome.appended)
        self.stats.duplicates += len(outcome.duplicates)
        self.stats.raw += sum(1 for r in outcome.appended if is_raw(r.draft))

    async def _ack(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            # A lost ack only means a redelivery, which the log turns into a no-op.
            with contextlib.suppress(nats.errors.Error):
                await msg.ack()

    async def _nak_all(self, msgs: list[Msg], exc: BaseException) -> None:
        log.info(
            "audit consumer %s: %d message(s) not appended (%r); redelivery later",
            self.durable,
            len(msgs),
            exc,
        )
        for msg in msgs:
            self.stats.naks += 1
            delay = min(30.0, 0.5 * (2 ** min(msg.metadata.num_delivered, 6)))
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=delay)

    async def _stream_exists(self) -> bool:
        try:
            await self.js.stream_info(self.stream)
        except NotFoundError:
            return False
        except Exception:
            return True
        return True

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
