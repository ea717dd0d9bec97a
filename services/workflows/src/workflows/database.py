"""The declarative base of this service: its tables, in the ``workflows`` schema (chosen by search path).

The messaging tables (outbox, inbox, dead letters, relay state) live in the same metadata, so a test
schema built with ``create_all`` and the migrated one hold the same tables.
"""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from shared.db import schema_metadata
from shared.messaging.outbox import add_messaging_tables

__all__ = ["Base", "messaging"]


class Base(DeclarativeBase):
    metadata = schema_metadata()


messaging = add_messaging_tables(Base.metadata)
