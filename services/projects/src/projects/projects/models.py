"""The ``projects`` table. Names are unique per client among live projects; deletes are soft."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from projects.database import Base
from shared.db import new_id, utcnow

__all__ = ["PROJECT_KINDS", "PROJECT_STATUSES", "Project"]

PROJECT_KINDS = ("greenfield", "brownfield")
PROJECT_STATUSES = ("active", "paused", "completed", "archived")


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint("kind IN ('greenfield', 'brownfield')", name="kind"),
        CheckConstraint("status IN ('active', 'paused', 'completed', 'archived')", name="status"),
        CheckConstraint("version >= 1", name="version_positive"),
        Index(
            "uq_projects_client_id_name_live",
            "client_id",
            func.lower(text("name")),
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_projects_client_id_id", "client_id", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=new_id)
    client_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("clients.id"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    kind: Mapped[str] = mapped_column(String(16))
    type: Mapped[str] = mapped_column(String(64))
    # An explicit BMAD workflow id chosen at creation; None lets the workflows service derive it.
    workflow_id: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
