"""The identity schema's declarative base. Every model of this service hangs off ``Base.metadata``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import schema_metadata, utcnow
from shared.messaging.outbox import add_messaging_tables

__all__ = ["MESSAGING", "Base", "Timestamps"]


class Base(DeclarativeBase):
    metadata = schema_metadata()


class Timestamps:
    """``created_at`` / ``updated_at`` columns, both timezone-aware and set by the application."""

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


# The outbox, inbox and dead-letter tables live in this schema too.
MESSAGING = add_messaging_tables(Base.metadata)
