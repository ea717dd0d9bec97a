"""One ingestion transaction: append drafts and record the producer sequences they carry, together.

Shared by the stream consumers and the gap healer. Committing both at once means the producer state
never claims a sequence whose entry is not in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.chain.canonical import EntryDraft
from audit.chain.service import AppendOutcome, ConcurrentAppend, PartitionKeeper, append_entries
from audit.ingest.producers import record_seen
from shared.db import utcnow

__all__ = ["IngestItem", "database_down", "ingest"]

log = logging.getLogger(__name__)

_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class IngestItem:
    draft: EntryDraft
    # Whether the draft's producer sequence counts as seen (true for readable events only).
    counts_as_seen: bool = True


def database_down(exc: BaseException) -> bool:
    """Whether an error means "the database cannot be reached" (retry later) rather than "this input"."""
    if isinstance(exc, OperationalError | InterfaceError | OSError | ConnectionError | TimeoutError):
        return True
    return bool(getattr(exc, "connection_invalidated", False))


async def ingest(
    factory: async_sessionmaker[AsyncSession],
    keeper: PartitionKeeper,
    items: Sequence[IngestItem],
    *,
    exist: Mapping[tuple[str, str | None], int] | None = None,
) -> AppendOutcome:
    """Append ``items`` and merge their producer sequences, retrying a concurrent-append conflict;
    ``exist``: see ``record_seen``."""
    await keeper.ensure()
    seen: dict[tuple[str, str | None], list[int]] = {}
    for item in items:
        d = item.draft
        if item.counts_as_seen and d.producer is not None and d.producer_sequence is not None:
            seen.setdefault((d.producer, d.source_stream), []).append(d.producer_sequence)
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            async with factory() as session, session.begin():
                outcome = await append_entries(session, [i.draft for i in items])
                if seen or exist:
                    await record_seen(session, seen, utcnow(), exist=exist)
            return outcome
        except ConcurrentAppend:
            if attempt == _ATTEMPTS:
                raise
            log.info("concurrent append on the same event ids; retrying the batch")
    raise AssertionError("unreachable")
