"""Read queries of the log. Keyset pagination on (recorded_at, chain_id, sequence), which is also each
chain's order, so pages never skip or repeat entries while the log grows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from audit.chain.models import Entry, EntryKey
from audit.entries.schemas import EntryFilter

__all__ = ["Position", "get_entry", "list_entries"]

Position = tuple[datetime, str, int]


def _filtered(f: EntryFilter) -> Select[Entry]:
    q = select(Entry)
    if f.chain is not None:
        q = q.where(Entry.chain_id == f.chain)
    if f.actor is not None:
        q = q.where(Entry.actor_subject == f.actor)
    if f.action is not None:
        q = q.where(Entry.action.startswith(f.action, autoescape=True))
    if f.resource_type is not None:
        q = q.where(Entry.resource_type == f.resource_type)
    if f.resource_id is not None:
        q = q.where(Entry.resource_id == f.resource_id)
    if f.since is not None:
        q = q.where(Entry.recorded_at >= f.since)
    if f.until is not None:
        q = q.where(Entry.recorded_at < f.until)
    if f.flagged is not None:
        q = q.where(Entry.flagged.is_(f.flagged))
    return q


def _after(position: Position, order: str) -> Any:
    key = tuple_(Entry.recorded_at, Entry.chain_id, Entry.sequence)
    at, chain, seq = position
    if order == "asc":
        return or_(Entry.recorded_at > at, and_(Entry.recorded_at == at, key > tuple_(at, chain, seq)))
    return or_(Entry.recorded_at < at, and_(Entry.recorded_at == at, key < tuple_(at, chain, seq)))


async def list_entries(
    session: AsyncSession, f: EntryFilter, *, limit: int, after: Position | None = None
) -> list[Entry]:
    q = _filtered(f)
    if after is not None:
        q = q.where(_after(after, f.order))
    if f.order == "asc":
        q = q.order_by(Entry.recorded_at, Entry.chain_id, Entry.sequence)
    else:
        q = q.order_by(Entry.recorded_at.desc(), Entry.chain_id.desc(), Entry.sequence.desc())
    rows = await session.execute(q.limit(limit))
    return list(rows.scalars())


async def get_entry(session: AsyncSession, entry_id: uuid.UUID) -> Entry | None:
    """By id: the key row names the partition (recorded_at), so only one partition is read."""
    recorded_at = (
        await session.execute(select(EntryKey.recorded_at).where(EntryKey.entry_id == entry_id))
    ).scalar_one_or_none()
    if recorded_at is None:
        return None
    row = await session.execute(select(Entry).where(Entry.id == entry_id, Entry.recorded_at == recorded_at))
    return row.scalar_one_or_none()
