"""Per-producer sequence state in the database, shared by every audit replica.

Rows are locked in producer-name order and always after any chain heads the same transaction holds
(``append_entries`` locks heads first), so appenders and the healer cannot deadlock each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from audit.chain.models import Producer
from audit.ingest.sequences import Gap, SequenceState

__all__ = ["list_producers", "lock_producers", "record_seen", "state_of", "store_state"]


async def lock_producers(session: AsyncSession, names: Mapping[str, str | None]) -> dict[str, Producer]:
    """Create missing rows (``names``: producer → stream) and lock them all, in name order."""
    ordered = sorted(names)
    if not ordered:
        return {}
    await session.execute(
        pg_insert(Producer)
        .values([{"producer": n, "stream": names[n]} for n in ordered])
        .on_conflict_do_nothing()
    )
    rows = await session.execute(
        select(Producer).where(Producer.producer.in_(ordered)).order_by(Producer.producer).with_for_update()
    )
    return {p.producer: p for p in rows.scalars()}


def state_of(row: Producer) -> SequenceState:
    return SequenceState(
        high_water=row.high_water,
        seen=[(int(a), int(b)) for a, b in (row.seen_ranges or [])],
        known_last=max(row.max_seen, row.reported_last),
        gaps=[Gap.from_json(g) for g in (row.gaps or [])],
    )


def store_state(row: Producer, state: SequenceState, now: datetime) -> None:
    row.high_water = state.high_water
    row.seen_ranges = [[a, b] for a, b in state.seen]
    row.max_seen = state.max_seen
    row.reported_last = max(row.reported_last, state.known_last)
    row.gaps = [g.to_json() for g in state.gaps]
    row.updated_at = now


async def record_seen(
    session: AsyncSession,
    seen: Mapping[tuple[str, str | None], Iterable[int]],
    now: datetime,
    *,
    exist: Mapping[tuple[str, str | None], int] | None = None,
) -> None:
    """Merge the producer sequences a committed batch carried into each producer's state; ``exist`` is
    the highest sequence a consumer holds back (delivered, not appended yet), so a hole below it shows."""
    by_producer: dict[str, list[int]] = {}
    highest: dict[str, int] = {}
    streams: dict[str, str | None] = {}
    for (producer, stream), sequences in seen.items():
        by_producer.setdefault(producer, []).extend(sequences)
        streams[producer] = streams.get(producer) or stream
    for (producer, stream), sequence in (exist or {}).items():
        highest[producer] = max(highest.get(producer, 0), sequence)
        by_producer.setdefault(producer, [])
        streams[producer] = streams.get(producer) or stream
    rows = await lock_producers(session, streams)
    for producer, sequences in by_producer.items():
        row = rows[producer]
        state = state_of(row)
        state.observe(sequences, now)
        if producer in highest:
            state.report_last(highest[producer], now)
        store_state(row, state, now)
        if sequences:
            row.last_seen_at = now
        if streams[producer] and not row.stream:
            row.stream = streams[producer]
    await session.flush()


async def list_producers(session: AsyncSession) -> list[Producer]:
    rows = await session.execute(select(Producer).order_by(Producer.producer))
    return list(rows.scalars())
