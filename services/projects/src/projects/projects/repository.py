"""Named queries on projects. Deleted projects are invisible to every query here."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import select, update

from projects.clients.repository import Lock
from projects.listing import text_filter
from projects.projects.models import Project
from shared.db import Repository

__all__ = ["ProjectRepository"]


class ProjectRepository(Repository[Project]):
    model = Project

    async def get_live(self, project_id: uuid.UUID, *, lock: Lock = None) -> Project | None:
        stmt = select(Project).where(Project.id == project_id, Project.deleted_at.is_(None))
        if lock is not None:
            # FOR UPDATE serializes writers, so the version check runs on the latest committed row;
            # FOR SHARE keeps the row from changing (or being deleted) while a dependent row is added.
            stmt = stmt.with_for_update(read=lock == "share")
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_page(
        self,
        *,
        readable_clients: Collection[uuid.UUID] | None,
        visible_projects: Collection[uuid.UUID] | None,
        client_id: uuid.UUID | None,
        status: str | None,
        q: str | None,
        after: uuid.UUID | None,
        limit: int,
    ) -> Sequence[Project]:
        """Up to ``limit`` live projects, newest first, within what the caller may read (None: no bound)."""
        stmt = select(Project).where(Project.deleted_at.is_(None))
        if readable_clients is not None:
            stmt = stmt.where(Project.client_id.in_(list(readable_clients)))
        if visible_projects is not None:
            stmt = stmt.where(Project.id.in_(list(visible_projects)))
        if client_id is not None:
            stmt = stmt.where(Project.client_id == client_id)
        if status is not None:
            stmt = stmt.where(Project.status == status)
        if q:
            stmt = stmt.where(text_filter(q, Project.name, Project.description))
        if after is not None:
            stmt = stmt.where(Project.id < after)
        stmt = stmt.order_by(Project.id.desc()).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

    async def soft_delete_of_client(
        self, client_id: uuid.UUID, now: datetime
    ) -> Sequence[tuple[uuid.UUID, int]]:
        """Delete every live project of a client in one statement; ``(id, new version)`` of each."""
        stmt = (
            update(Project)
            .where(Project.client_id == client_id, Project.deleted_at.is_(None))
            .values(deleted_at=now, updated_at=now, version=Project.version + 1)
            .returning(Project.id, Project.version)
            .execution_options(synchronize_session=False)
        )
        rows = (await self.session.execute(stmt)).all()
        return [(row[0], row[1]) for row in rows]
