"""Events of the audit service.

``checkpoint.created`` lets anyone outside the platform keep a copy of the log's signed checkpoints and
later prove the log was not rewritten: ``signature`` is Ed25519 (base64url, no padding) over the RFC 8785
canonical JSON of ``{"v": 1, "chain", "client_id", "sequence", "hash", "created_at", "key_id"}``, checked
with the key named ``key_id`` served at ``GET /v1/audit/public-key``. The envelope's ``tenant`` is the
client whose chain it is (none for the platform chain) and its ``subject`` the checkpoint id.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar
from uuid import UUID

from pydantic import Field

from shared.events.catalog import Event, register

__all__ = ["CheckpointCreated"]


@register
class CheckpointCreated(Event):
    """A signed checkpoint of one chain (a client's, or the platform's) was recorded."""

    event_type: ClassVar[str] = "baton.audit.checkpoint.created.v1"
    checkpoint_id: UUID
    chain: str = Field(max_length=64, description="The client id, or 'platform'.")
    client_id: UUID | None = None
    sequence: int = Field(ge=1)
    hash: str = Field(min_length=64, max_length=64, description="SHA-256 (hex) of the entry at sequence.")
    created_at: datetime
    key_id: str = Field(max_length=64)
    signature: str = Field(max_length=128)
