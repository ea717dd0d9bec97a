"""SQL of the append path, as named queries. Every statement here runs inside the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from audit.chain.canonical import GENESIS_HASH, EntryRecord
from audit.chain.models import Chain, Entry

__all__ = [
    "ChainHead",
    "create_missing_chains",
    "ensure_partition",
    "existing_event_ids",
    "insert_entries",
    "insert_keys",
    "lock_heads",
    "move_heads",
    "now",
]


@dataclass
class ChainHead:
    chain_id: str
    sequence: int
    hash: str
    last_recorded_at: datetime | None


async def existing_event_ids(session: AsyncSession, event_ids: Sequence[str]) -> set[str]:
    if not event_ids:
        return set()
    rows = await session.execute(
        text("SELECT event_id FROM entry_keys WHERE event_id = ANY(CAST(:ids AS varchar[]))"),
        {"ids": list(event_ids)},
    )
    return set(rows.scalars())


async def create_missing_chains(
    session: AsyncSession, chains: Iterable[tuple[str, uuid.UUID | None]]
) -> None:
    """Insert absent chain heads (sorted, so two appenders creating the same chains cannot deadlock)."""
    values = [
        {"chain_id": c, "client_id": client, "head_hash": GENESIS_HASH} for c, client in sorted(set(chains))
    ]
    if values:
        await session.execute(pg_insert(Chain).values(values).on_conflict_do_nothing())


async def lock_heads(session: AsyncSession, chain_ids: Iterable[str]) -> dict[str, ChainHead]:
    """Row-lock the heads in chain-id order: the one serialization point of appends, deadlock-free."""
    ids = sorted(set(chain_ids))
    rows = await session.execute(
        select(Chain.chain_id, Chain.head_sequence, Chain.head_hash, Chain.last_recorded_at)
        .where(Chain.chain_id.in_(ids))
        .order_by(Chain.chain_id)
        .with_for_update()
    )
    return {r.chain_id: ChainHead(r.chain_id, r.head_sequence, r.head_hash, r.last_recorded_at) for r in rows}


async def now(session: AsyncSession) -> datetime:
    """The database clock at this instant (not the transaction start): shared by every replica."""
    value: datetime = (await session.execute(text("SELECT clock_timestamp()"))).scalar_one()
    return value


async def insert_keys(session: AsyncSession, records: Sequence[EntryRecord]) -> set[str]:
    """Claim the event ids; returns those that were already taken (by a concurrent or earlier append)."""
    if not records:
        return set()
    # One statement of arrays (cached and planned once), not one VALUES row per entry.
    rows = await session.execute(
        text(
            "INSERT INTO entry_keys (event_id, entry_id, chain_id, sequence, recorded_at) "
            "SELECT * FROM unnest(CAST(:event_ids AS varchar[]), CAST(:entry_ids AS uuid[]), "
            "CAST(:chain_ids AS varchar[]), CAST(:sequences AS bigint[]), CAST(:recorded AS timestamptz[])) "
            "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        ),
        {
            "event_ids": [r.draft.event_id for r in records],
            "entry_ids": [r.id for r in records],
            "chain_ids": [r.chain_id for r in records],
            "sequences": [r.sequence for r in records],
            "recorded": [r.recorded_at for r in records],
        },
    )
    inserted = set(rows.scalars())
    return {r.draft.event_id for r in records} - inserted


def _row(r: EntryRecord) -> dict[str, Any]:
    d = r.draft
    return {
        "id": r.id,
        "recorded_at": r.recorded_at,
        "chain_id": r.chain_id,
        "sequence": r.sequence,
        "client_id": d.client_id,
        "event_id": d.event_id,
        "occurred_at": d.occurred_at,
        "actor_subject": d.actor_subject,
        "actor_kind": d.actor_kind,
        "actor_name": d.actor_name,
        "action": d.action,
        "resource_type": d.resource_type,
        "resource_id": d.resource_id,
        "request_id": d.request_id,
        "trace_id": d.trace_id,
        "payload": d.payload,
        "payload_truncated": d.payload_truncated,
        "source_stream": d.source_stream,
        "stream_sequence": d.stream_sequence,
        "producer": d.producer,
        "producer_sequence": d.producer_sequence,
        "flagged": d.flagged,
        "flag_reason": d.flag_reason,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    }


async def insert_entries(session: AsyncSession, records: Sequence[EntryRecord]) -> None:
    if records:
        await session.execute(insert(Entry), [_row(r) for r in records])


async def move_heads(session: AsyncSession, heads: Sequence[ChainHead]) -> None:
    """Advance several heads in one statement."""
    if not heads:
        return
    await session.execute(
        text(
            "UPDATE chains AS c SET head_sequence = v.seq, head_hash = v.hash, last_recorded_at = v.at "
            "FROM unnest(CAST(:ids AS varchar[]), CAST(:seqs AS bigint[]), CAST(:hashes AS varchar[]), "
            "CAST(:ats AS timestamptz[])) AS v(id, seq, hash, at) WHERE c.chain_id = v.id"
        ),
        {
            "ids": [h.chain_id for h in heads],
            "seqs": [h.sequence for h in heads],
            "hashes": [h.hash for h in heads],
            "ats": [h.last_recorded_at for h in heads],
        },
    )


async def ensure_partition(session: AsyncSession, at: datetime) -> str:
    """Create the month partition holding ``at`` if missing (through the privileged function)."""
    name: str = (await session.execute(text("SELECT audit_ensure_partition(:at)"), {"at": at})).scalar_one()
    return name
