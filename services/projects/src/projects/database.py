"""The declarative base of this service: its tables, in the ``projects`` schema (chosen by search path)."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from shared.db import schema_metadata

__all__ = ["Base"]


class Base(DeclarativeBase):
    metadata = schema_metadata()
