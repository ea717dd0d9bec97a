"""Partition maintenance and retention.

Retention never deletes rows: it drops a whole month partition that lies entirely before the cutoff, in
one transaction that first appends, to every chain the partition held entries of, a
``baton.audit.retention.applied.v1`` entry naming the partition, the removed sequence range, the count,
``removed_digest`` = SHA-256 over the removed entries' hashes (hex, in sequence order, concatenated) and
``last_removed_hash``. ``verify`` then anchors the chain's first remaining entry on that record.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.chain.canonical import PLATFORM_CHAIN, EntryDraft
from audit.chain.records import RETENTION_ACTION
from audit.chain.repository import ensure_partition
from audit.chain.service import PartitionKeeper, append_entries, month_start
from audit.checkpoints.service import SERVICE_ACTOR
from shared.db import utcnow

__all__ = ["Partition", "add_months", "apply_retention", "ensure_partitions_ahead", "list_partitions"]

log = logging.getLogger(__name__)
_NAME = re.compile(r"^entries_(\d{4})_(\d{2})$")
_PAGE = 5000


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    start: datetime
    end: datetime


def add_months(at: datetime, months: int) -> datetime:
    """The first instant of the month ``months`` after (or before) ``at``'s month."""
    index = at.year * 12 + (at.month - 1) + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


async def list_partitions(session: AsyncSession) -> list[Partition]:
    rows = await session.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(current_schema() || '.entries') ORDER BY c.relname"
        )
    )
    out = []
    for (name,) in rows:
        m = _NAME.match(name)
        if m:
            start = datetime(int(m[1]), int(m[2]), 1, tzinfo=UTC)
            out.append(Partition(name, start, add_months(start, 1)))
    return out


async def ensure_partitions_ahead(
    factory: async_sessionmaker[AsyncSession], *, months_ahead: int = 2, now: datetime | None = None
) -> None:
    base = month_start(now or utcnow())
    async with factory() as session, session.begin():
        for i in range(months_ahead + 1):
            await ensure_partition(session, add_months(base, i))


async def _summaries(session: AsyncSession, part: Partition) -> dict[str, dict[str, object]]:
    """Per chain: the removed sequence range, count, digest over the hashes and the last hash."""
    # Keyset pages, not a server-side cursor: an open portal would keep the partition in use.
    out: dict[str, dict[str, object]] = {}
    digests: dict[str, hashlib._Hash] = {}
    after: tuple[str, int] = ("", 0)
    while True:
        rows = (
            await session.execute(
                text(
                    "SELECT chain_id, sequence, hash FROM entries "
                    "WHERE recorded_at >= :lo AND recorded_at < :hi AND (chain_id, sequence) > (:c, :s) "
                    "ORDER BY chain_id, sequence LIMIT :n"
                ),
                {"lo": part.start, "hi": part.end, "c": after[0], "s": after[1], "n": _PAGE},
            )
        ).all()
        for chain_id, sequence, hash_ in rows:
            summary = out.get(chain_id)
            if summary is None:
                summary = out[chain_id] = {"removed_from_sequence": sequence, "removed_count": 0}
                digests[chain_id] = hashlib.sha256()
            summary["removed_to_sequence"] = sequence
            summary["removed_count"] = int(summary["removed_count"]) + 1  # type: ignore[call-overload]
            summary["last_removed_hash"] = hash_
            digests[chain_id].update(hash_.encode("ascii"))
        if len(rows) < _PAGE:
            break
        after = (rows[-1][0], rows[-1][1])
    for chain_id, digest in digests.items():
        out[chain_id]["removed_digest"] = digest.hexdigest()
    return out


def _lock_not_available(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "55P03"


class _PartitionBusy(Exception):
    """The drop could not take its lock in time; its transaction was undone."""


async def _drop(
    factory: async_sessionmaker[AsyncSession], part: Partition, keep_months: int, lock_timeout_seconds: float
) -> tuple[int, int]:
    """In one transaction: the retention entry of every chain ``part`` holds, then the drop. How many
    entries went, in how many chains."""
    async with factory() as session, session.begin():
        summaries = await _summaries(session, part)
        drafts = [
            EntryDraft(
                event_id=f"retention:{part.name}:{chain_id}",
                action=RETENTION_ACTION,
                client_id=None if chain_id == PLATFORM_CHAIN else uuid.UUID(chain_id),
                actor_subject=SERVICE_ACTOR.subject,
                actor_kind=SERVICE_ACTOR.kind,
                actor_name=SERVICE_ACTOR.name,
                resource_type="partition",
                resource_id=part.name,
                payload={
                    "partition": part.name,
                    "from": part.start.isoformat(),
                    "to": part.end.isoformat(),
                    "keep_months": keep_months,
                    **summary,
                },
            )
            for chain_id, summary in sorted(summaries.items())
        ]
        await append_entries(session, drafts)
        timeout_ms = max(1, int(lock_timeout_seconds * 1000))
        await session.execute(text(f"SET LOCAL lock_timeout = '{timeout_ms}ms'"))
        try:
            result = await session.execute(text("SELECT audit_drop_partition(:p)"), {"p": part.name})
        except DBAPIError as exc:
            if _lock_not_available(exc):
                raise _PartitionBusy(part.name) from exc
            raise
        return int(result.scalar_one()), len(drafts)


async def apply_retention(
    factory: async_sessionmaker[AsyncSession],
    keeper: PartitionKeeper,
    *,
    keep_months: int,
    now: datetime | None = None,
    lock_timeout_seconds: float = 2.0,
) -> list[str]:
    """Drop every partition that ended before ``keep_months`` whole months ago; the names dropped.

    Dropping a partition needs an exclusive lock on ``entries``, which a long reader (a verification, an
    export page) holds off; while the drop waits, every append queues behind it. So the drop waits at
    most ``lock_timeout_seconds``: past that its transaction (the retention entries with it) is undone and
    the partition is left for the next run."""
    if keep_months <= 0:
        return []
    now = now or utcnow()
    cutoff = add_months(month_start(now), -keep_months)
    async with factory() as session:
        doomed = [p for p in await list_partitions(session) if p.end <= cutoff]
    dropped: list[str] = []
    for part in doomed:  # oldest first: each drop removes a prefix of every chain
        await keeper.ensure()
        try:
            removed, chains = await _drop(factory, part, keep_months, lock_timeout_seconds)
        except _PartitionBusy:
            log.warning(
                "retention: partition %s is in use (a long read of the log); trying again next run", part.name
            )
            return dropped
        log.warning("retention: dropped partition %s (%d entries in %d chains)", part.name, removed, chains)
        dropped.append(part.name)
    return dropped
