"""Appending to the chains.

Contract of ``append_entries``: inside the caller's transaction, every draft whose event id is not yet
recorded becomes the next entry of its chain (client chain, or the platform chain), in the order given.
Heads are row-locked in chain-id order, so any number of appenders (replicas) can run at once without
forks or deadlocks; an event id already recorded is skipped (idempotency); ``recorded_at`` is the database
clock taken after the locks and never goes backwards within a chain, so month partitions hold a prefix of
each chain. The month partition must exist (``PartitionKeeper``) before the transaction starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.chain import repository as repo
from audit.chain.canonical import EntryDraft, EntryRecord
from shared.db import new_id, utcnow

__all__ = ["AppendOutcome", "ConcurrentAppend", "PartitionKeeper", "append_entries", "month_start"]


class ConcurrentAppend(Exception):
    """An event id was claimed by another transaction meanwhile: roll back and run the batch again."""


@dataclass
class AppendOutcome:
    appended: list[EntryRecord] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


async def append_entries(
    session: AsyncSession, drafts: Sequence[EntryDraft], *, at: datetime | None = None
) -> AppendOutcome:
    """Append ``drafts`` (see the module contract). ``at`` fixes ``recorded_at`` (maintenance and tests)."""
    outcome = AppendOutcome()
    unique: list[EntryDraft] = []
    seen: set[str] = set()
    for draft in drafts:
        if draft.event_id in seen:
            outcome.duplicates.append(draft.event_id)
        else:
            seen.add(draft.event_id)
            unique.append(draft)
    # Cheap pre-check: a redelivered batch is skipped without taking any lock.
    known = await repo.existing_event_ids(session, [d.event_id for d in unique])
    pending = [d for d in unique if d.event_id not in known]
    outcome.duplicates.extend(d.event_id for d in unique if d.event_id in known)
    if not pending:
        return outcome

    await repo.create_missing_chains(session, ((d.chain_id, d.client_id) for d in pending))
    heads = await repo.lock_heads(session, (d.chain_id for d in pending))
    # Holding the locks, anything a competitor appended to these chains is committed and visible.
    known = await repo.existing_event_ids(session, [d.event_id for d in pending])
    if known:
        outcome.duplicates.extend(d.event_id for d in pending if d.event_id in known)
        pending = [d for d in pending if d.event_id not in known]
        if not pending:
            return outcome
    ts = at if at is not None else await repo.now(session)

    records: list[EntryRecord] = []
    for draft in pending:
        head = heads[draft.chain_id]
        recorded_at = ts if head.last_recorded_at is None else max(ts, head.last_recorded_at)
        record = EntryRecord(
            id=new_id(),
            chain_id=draft.chain_id,
            sequence=head.sequence + 1,
            recorded_at=recorded_at,
            prev_hash=head.hash,
            draft=draft,
        ).sealed()
        head.sequence, head.hash, head.last_recorded_at = record.sequence, record.hash, recorded_at
        records.append(record)

    taken = await repo.insert_keys(session, records)
    if taken:
        raise ConcurrentAppend(f"{len(taken)} event id(s) recorded concurrently")
    await repo.insert_entries(session, records)
    await repo.move_heads(session, [heads[c] for c in sorted({r.chain_id for r in records})])
    outcome.appended = records
    return outcome


def month_start(at: datetime) -> datetime:
    """The first instant (UTC) of the month holding ``at``: partitions are UTC months."""
    return at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class PartitionKeeper:
    """Makes sure the month partitions an append may hit exist, in a transaction of their own (creating a
    partition inside an append would lock the parent table while chain heads are held)."""

    def __init__(self, factory: async_sessionmaker[AsyncSession], *, ahead: timedelta = timedelta(days=1)):
        self._factory = factory
        self._ahead = ahead
        self._months: set[datetime] = set()
        self._lock = asyncio.Lock()

    async def ensure(self, at: datetime | None = None) -> None:
        at = at or utcnow()
        months = {month_start(at), month_start(at + self._ahead)}
        if months <= self._months:
            return
        async with self._lock:
            missing = sorted(months - self._months)
            if not missing:
                return
            async with self._factory() as session, session.begin():
                for month in missing:
                    await repo.ensure_partition(session, month)
            self._months.update(missing)
