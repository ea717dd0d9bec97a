"""API shapes of the log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from audit.chain.models import Entry

__all__ = [
    "ActorRead",
    "BadEntryRead",
    "EntryFilter",
    "EntryRead",
    "ResourceRead",
    "SourceRead",
    "VerifyRead",
]


class ActorRead(BaseModel):
    subject: str | None
    kind: str | None
    name: str | None


class ResourceRead(BaseModel):
    type: str | None
    id: str | None


class SourceRead(BaseModel):
    stream: str | None = Field(description="JetStream stream the event came from.")
    stream_sequence: int | None = Field(description="Its sequence in the stream; null when healed by replay.")
    producer: str | None
    producer_sequence: int | None = Field(description="The producer's gap-free sequence number.")


class EntryRead(BaseModel):
    id: uuid.UUID
    chain: str = Field(description="The client id, or 'platform'.")
    client_id: uuid.UUID | None
    sequence: int
    recorded_at: datetime
    occurred_at: datetime | None
    event_id: str
    actor: ActorRead
    action: str
    resource: ResourceRead
    request_id: str | None
    trace_id: str | None
    payload: Any
    payload_truncated: bool
    source: SourceRead
    flagged: bool
    flag_reason: str | None
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, e: Entry) -> EntryRead:
        return cls(
            id=e.id,
            chain=e.chain_id,
            client_id=e.client_id,
            sequence=e.sequence,
            recorded_at=e.recorded_at,
            occurred_at=e.occurred_at,
            event_id=e.event_id,
            actor=ActorRead(subject=e.actor_subject, kind=e.actor_kind, name=e.actor_name),
            action=e.action,
            resource=ResourceRead(type=e.resource_type, id=e.resource_id),
            request_id=e.request_id,
            trace_id=e.trace_id,
            payload=e.payload,
            payload_truncated=e.payload_truncated,
            source=SourceRead(
                stream=e.source_stream,
                stream_sequence=e.stream_sequence,
                producer=e.producer,
                producer_sequence=e.producer_sequence,
            ),
            flagged=e.flagged,
            flag_reason=e.flag_reason,
            prev_hash=e.prev_hash,
            hash=e.hash,
        )


class EntryFilter(BaseModel):
    """A validated filter (the query parameters of list and export)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chain: str | None = None  # None: every chain (admins only)
    actor: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    flagged: bool | None = None
    order: Literal["asc", "desc"] = "asc"

    def described(self) -> dict[str, Any]:
        """The filter as recorded in the ``audit.read`` entry."""
        return self.model_dump(mode="json", exclude_none=True)


class BadEntryRead(BaseModel):
    sequence: int
    reason: str
    detail: str


class VerifyRead(BaseModel):
    ok: bool
    chain: str
    client_id: uuid.UUID | None
    entries_checked: int
    checkpoints_checked: int
    first_sequence: int | None
    last_sequence: int | None
    first_bad: BadEntryRead | None
