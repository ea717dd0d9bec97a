"""Tables of the log. ``entries`` is range-partitioned by ``recorded_at`` month (retention drops whole
partitions); ``entry_keys`` is its unpartitioned index that enforces, across all partitions, one entry per
event id and one entry per (chain, sequence), so a chain can never fork."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Index, String, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from audit.database import Base

__all__ = ["Chain", "Checkpoint", "Entry", "EntryKey", "Producer"]


class Chain(Base):
    """The head of one chain; its row lock serializes appends across replicas."""

    __tablename__ = "chains"

    chain_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[uuid.UUID | None] = mapped_column()
    head_sequence: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    head_hash: Mapped[str] = mapped_column(String(64))
    last_recorded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    checkpoint_sequence: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    checkpoint_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Entry(Base):
    __tablename__ = "entries"
    __table_args__ = (
        Index("ix_entries_chain_sequence", "chain_id", "sequence"),
        Index("ix_entries_chain_recorded", "chain_id", "recorded_at", "sequence"),
        Index("ix_entries_recorded", "recorded_at", "chain_id", "sequence"),
        Index("ix_entries_chain_action", "chain_id", "action"),
        Index("ix_entries_chain_actor", "chain_id", "actor_subject"),
        Index("ix_entries_chain_resource", "chain_id", "resource_type", "resource_id"),
        {"postgresql_partition_by": "RANGE (recorded_at)"},
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(BigInteger)
    client_id: Mapped[uuid.UUID | None] = mapped_column()
    event_id: Mapped[str] = mapped_column(String(200))
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    actor_subject: Mapped[str | None] = mapped_column(String(200))
    actor_kind: Mapped[str | None] = mapped_column(String(32))
    actor_name: Mapped[str | None] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(200))
    resource_type: Mapped[str | None] = mapped_column(String(100))
    resource_id: Mapped[str | None] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(128))
    trace_id: Mapped[str | None] = mapped_column(String(32))
    payload: Mapped[Any] = mapped_column(JSONB)
    payload_truncated: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    source_stream: Mapped[str | None] = mapped_column(String(64))
    stream_sequence: Mapped[int | None] = mapped_column(BigInteger)
    producer: Mapped[str | None] = mapped_column(String(64))
    producer_sequence: Mapped[int | None] = mapped_column(BigInteger)
    flagged: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    flag_reason: Mapped[str | None] = mapped_column(String(200))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class EntryKey(Base):
    """One row per entry, unpartitioned: the idempotency key (event id) and the no-fork guarantee."""

    __tablename__ = "entry_keys"
    __table_args__ = (UniqueConstraint("chain_id", "sequence"), UniqueConstraint("entry_id"))

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    entry_id: Mapped[uuid.UUID] = mapped_column()
    chain_id: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Checkpoint(Base):
    """A signed statement that chain ``chain_id`` had hash ``hash`` at ``sequence``."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("chain_id", "sequence"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[uuid.UUID | None] = mapped_column()
    sequence: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


class Producer(Base):
    """What the log has seen of one producer's gap-free sequence, and the holes still open."""

    __tablename__ = "producers"

    producer: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream: Mapped[str | None] = mapped_column(String(64))
    high_water: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    max_seen: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # The highest sequence known to exist: seen, or reported by the producer's relay (a lost tail).
    reported_last: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # Seen sequences above ``high_water`` as sorted disjoint [from, to] ranges.
    seen_ranges: Mapped[Any] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # Open gaps: [{"from", "to", "since", "attempts", "last_request_at"}].
    gaps: Mapped[Any] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    replays_requested: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    replayed_entries: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
