"""Clients as identity knows them (from the projects service's events) and users' roles in them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from identity.database import Base, Timestamps
from shared.db import utcnow

__all__ = ["KnownClient", "Membership"]


class KnownClient(Base):
    """A client announced by ``baton.projects.client.created.v1``. A deleted client stays as a tombstone
    (``deleted_at``) so that a late, reordered ``client.created`` cannot bring it back."""

    __tablename__ = "clients"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Membership(Timestamps, Base):
    __tablename__ = "memberships"
    __table_args__ = (
        CheckConstraint("role IN ('product_owner', 'member', 'viewer', 'auditor')", name="role"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(32))
