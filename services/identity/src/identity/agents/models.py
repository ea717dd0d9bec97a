"""Agents: machine principals of one client, authenticated by a client secret."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, LargeBinary, String
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from identity.database import Base, Timestamps
from shared.db import new_id

__all__ = ["Agent"]


class Agent(Timestamps, Base):
    """``project_ids`` NULL means every project of the client. ``secret_hash`` is SHA-256 of the secret
    (secrets are 256 random bits, so a slow hash adds nothing). ``deleted`` agents are kept for the record
    but behave as missing."""

    __tablename__ = "agents"
    __table_args__ = (CheckConstraint("status IN ('active', 'disabled', 'deleted')", name="status"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    project_ids: Mapped[list[uuid.UUID] | None] = mapped_column(ARRAY(UUID(as_uuid=True)))
    bmad_roles: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_by: Mapped[uuid.UUID | None] = mapped_column()
    tokens_valid_after: Mapped[int] = mapped_column(BigInteger, default=0)
    version: Mapped[int] = mapped_column(default=1)
