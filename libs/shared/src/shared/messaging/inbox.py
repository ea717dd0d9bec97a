"""Pruning the consumers' inboxes without ever applying an event twice.

Streams keep every message, so a durable consumer created again (deleted by an operator, lost with a NATS
store) would be handed the whole history, and only the inbox rows of the events it already applied keep it
from applying them twice. Deleting old rows is therefore paired with a per-consumer **horizon**
(``inbox_horizon.pruned_before``):

- ``prune_inbox`` first raises the horizon to the cutoff ``now() - retention`` (never moves it back), in
  its own transaction, and only then deletes the consumer's rows processed before ``cutoff - margin``, in
  bounded batches, so it never holds many locks for long.
- A consumer that does not exist yet on the server is created delivering from the horizon
  (``ensure_consumer(start_time=...)``, called by ``ConsumerRunner``): messages stored before it are not
  delivered, and every later one is, its row still there if it was applied.
- ``margin`` covers the clocks: the horizon is Postgres time, a message's stream time is the NATS server's.
  A message stored at or after the horizon was applied at ``processed_at >= horizon - skew``, so with a
  skew under ``margin`` its row is kept.
- ``ConsumerRunner`` caps the horizon at the stream time of the oldest message the consumer may not have
  acknowledged yet (``unacknowledged_since``), so a consumer that falls behind by more than the retention
  and is then created again skips none of the messages it had not applied. It also calls the deletion off
  when the consumer was created again on the server while it pruned (its start may be the old horizon).

Several replicas may prune the same consumer at once: the horizon is one row updated with ``greatest``,
and each batch locks the rows it deletes with ``SKIP LOCKED``, so pruners never wait for each other (no
deadlock) and a row is deleted once. Consumers only insert new rows, which no prune touches.

What the horizon cannot cover: a copy of an event arriving more than ``retention`` after the event was
applied (retention must exceed how late a redelivery or a re-publication can come) would be applied again;
so would one stored after the horizon if the clocks are further apart than ``margin``. ``prune_inbox``
called without ``not_after`` on a consumer that is behind lets a consumer created again skip what it had
not applied before the horizon.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from nats.js.errors import NotFoundError
from sqlalchemy import DateTime, bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.messaging.outbox import inbox, inbox_horizon
from shared.messaging.relay import engine_of
from shared.settings import BaseServiceSettings

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_PRUNE_BATCH",
    "InboxPruning",
    "PruneResult",
    "inbox_horizon_of",
    "prune_inbox",
    "unacknowledged_since",
]

DEFAULT_MARGIN = timedelta(minutes=10)
DEFAULT_PRUNE_BATCH = 5000


@dataclass(frozen=True)
class InboxPruning:
    """How a ``ConsumerRunner`` prunes its inbox: every ``interval`` seconds (±10%; 0 never), the rows
    older than ``retention`` (plus ``margin``), ``batch`` rows per transaction."""

    retention: timedelta = timedelta(days=14)
    interval: float = 3600.0
    margin: timedelta = DEFAULT_MARGIN
    batch: int = DEFAULT_PRUNE_BATCH

    def __post_init__(self) -> None:
        if self.retention <= timedelta(0):
            raise ValueError("the inbox retention must be positive")
        if self.interval < 0:
            raise ValueError("the prune interval cannot be negative (0 disables pruning)")
        if self.margin < timedelta(0):
            raise ValueError("the margin cannot be negative")
        if self.batch < 1:
            raise ValueError("a prune batch holds at least one row")

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> InboxPruning:
        return cls(
            retention=timedelta(days=settings.inbox_retention_days),
            interval=settings.inbox_prune_interval_seconds,
        )


@dataclass(frozen=True)
class PruneResult:
    horizon: datetime  # the consumer's horizon after this prune
    deleted: int


async def prune_inbox(
    db: AsyncEngine | async_sessionmaker[AsyncSession],
    consumer: str,
    *,
    retention: timedelta,
    margin: timedelta = DEFAULT_MARGIN,
    batch: int = DEFAULT_PRUNE_BATCH,
    not_after: datetime | None = None,
    before_delete: Callable[[], Awaitable[bool]] | None = None,
) -> PruneResult:
    """Raise ``consumer``'s horizon to ``now() - retention`` (or ``not_after``, if earlier; never lower
    than it was), then delete its inbox rows processed before that cutoff minus ``margin``.

    The horizon is committed before any row is deleted, so a crash in between leaves rows that are merely
    kept longer. ``before_delete``, awaited once the horizon is committed, may still call the deletion
    off (``False``): the consumer changed under the pruner, so what capped the horizon no longer holds. Rows are deleted ``batch`` at a time, one transaction each, until fewer than ``batch``
    were left to this pruner (a concurrent one takes the rest).
    """
    if retention <= timedelta(0):
        raise ValueError("the inbox retention must be positive")
    if batch < 1:
        raise ValueError("a prune batch holds at least one row")
    engine = engine_of(db)
    cutoff_sql: Any = func.now() - retention
    if not_after is not None:
        cutoff_sql = func.least(cutoff_sql, bindparam("not_after", not_after, type_=DateTime(timezone=True)))
    async with engine.begin() as conn:
        cutoff: datetime = (await conn.execute(select(cutoff_sql))).scalar_one()
        upsert = pg_insert(inbox_horizon).values(consumer=consumer, pruned_before=cutoff)
        upsert = upsert.on_conflict_do_update(
            index_elements=[inbox_horizon.c.consumer],
            set_={
                "pruned_before": func.greatest(inbox_horizon.c.pruned_before, upsert.excluded.pruned_before)
            },
        )
        horizon: datetime = (await conn.execute(upsert.returning(inbox_horizon.c.pruned_before))).scalar_one()
    if before_delete is not None and not await before_delete():
        return PruneResult(horizon=horizon, deleted=0)
    doomed = (
        select(inbox.c.event_id)
        .where(inbox.c.consumer == consumer, inbox.c.processed_at < cutoff - margin)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    statement = delete(inbox).where(inbox.c.consumer == consumer, inbox.c.event_id.in_(doomed))
    deleted = 0
    while True:
        async with engine.begin() as conn:
            count = (await conn.execute(statement)).rowcount
        deleted += count
        if count < batch:
            return PruneResult(horizon=horizon, deleted=deleted)
        await asyncio.sleep(0)  # a long prune leaves room for the consumer's own work


async def inbox_horizon_of(
    db: AsyncEngine | async_sessionmaker[AsyncSession], consumer: str
) -> datetime | None:
    """The time before which ``consumer``'s inbox may have been pruned; ``None`` if it never was."""
    async with engine_of(db).connect() as conn:
        value: datetime | None = await conn.scalar(
            select(inbox_horizon.c.pruned_before).where(inbox_horizon.c.consumer == consumer)
        )
        return value


async def unacknowledged_since(
    js: JetStreamContext,
    stream: str,
    durable: str,
    subjects: Sequence[str],
    *,
    info: ConsumerInfo | None = None,
) -> datetime | None:
    """The stream time of the oldest message of ``subjects`` the consumer may not have acknowledged yet
    (the first after its ack floor); ``None`` when it has nothing pending. Raises ``NotFoundError`` when
    the consumer does not exist. ``info``: the consumer's state, when already read."""
    if info is None:
        info = await js.consumer_info(stream, durable)
    if not info.num_pending and not info.num_ack_pending:
        return None
    after = (info.ack_floor.stream_seq if info.ack_floor is not None else 0) + 1
    oldest: datetime | None = None
    for subject in subjects or [">"]:
        try:
            msg = await js.get_msg(stream, after, subject=subject, next=True)
        except NotFoundError:  # nothing of that subject after the ack floor
            continue
        if msg.time is not None and (oldest is None or msg.time < oldest):
            oldest = msg.time
    return oldest
