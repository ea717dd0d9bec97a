"""The audit schema's declarative base (Baton naming conventions, schema chosen by the search path),
with the messaging tables (outbox for checkpoint events) in the same metadata."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from shared.db import schema_metadata
from shared.messaging import add_messaging_tables

__all__ = ["Base", "messaging"]


class Base(DeclarativeBase):
    metadata = schema_metadata()


messaging = add_messaging_tables(Base.metadata)
