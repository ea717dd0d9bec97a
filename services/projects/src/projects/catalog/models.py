"""``workflow_definitions``: the workflow ids the workflows service announced, with the highest version seen.

A copy fed by ``definition.published`` (services never read each other's schema), so creating a project
can refuse a ``type`` or ``workflow_id`` no workflow would ever start for.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from projects.database import Base

__all__ = ["KnownWorkflow"]


class KnownWorkflow(Base):
    __tablename__ = "workflow_definitions"
    __table_args__ = (CheckConstraint("version >= 1", name="version_positive"),)

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(300))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
