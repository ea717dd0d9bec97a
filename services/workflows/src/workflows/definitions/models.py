"""Stored definitions: one row per workflow id, one immutable row per version (source text + model)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from workflows.database import Base

__all__ = ["DefinitionRow", "DefinitionVersionRow"]


class DefinitionRow(Base):
    __tablename__ = "definitions"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    format: Mapped[str] = mapped_column(String(32))
    latest_version: Mapped[int] = mapped_column(Integer)
    # The latest version announced with ``definition.published`` (NULL: stored before announcements).
    announced_version: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DefinitionVersionRow(Base):
    __tablename__ = "definition_versions"
    __table_args__ = (Index("ix_definition_versions_hash", "definition_id", "content_hash"),)

    definition_id: Mapped[str] = mapped_column(ForeignKey("definitions.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(80))
    source_text: Mapped[str] = mapped_column(Text)
    model: Mapped[dict[str, Any]] = mapped_column(JSONB)
    origin: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
