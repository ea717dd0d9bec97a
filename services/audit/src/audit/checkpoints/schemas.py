"""API shapes of checkpoints and the public key."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from audit.chain.models import Checkpoint
from audit.checkpoints.signing import statement

__all__ = ["CheckpointRead", "PublicKeyRead"]


class CheckpointRead(BaseModel):
    id: uuid.UUID
    chain: str
    client_id: uuid.UUID | None
    sequence: int
    hash: str
    created_at: datetime
    key_id: str
    signature: str = Field(description="Ed25519 over the RFC 8785 canonical JSON of `statement`, base64url.")
    statement: dict[str, Any]

    @classmethod
    def of(cls, cp: Checkpoint) -> CheckpointRead:
        return cls(
            id=cp.id,
            chain=cp.chain_id,
            client_id=cp.client_id,
            sequence=cp.sequence,
            hash=cp.hash,
            created_at=cp.created_at,
            key_id=cp.key_id,
            signature=cp.signature,
            statement=statement(
                chain=cp.chain_id,
                client_id=None if cp.client_id is None else str(cp.client_id),
                sequence=cp.sequence,
                hash_=cp.hash,
                created_at=cp.created_at,
                key_id=cp.key_id,
            ),
        )


class PublicKeyRead(BaseModel):
    """The checkpoint signing key as a JWK (RFC 8037: OKP / Ed25519)."""

    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str
