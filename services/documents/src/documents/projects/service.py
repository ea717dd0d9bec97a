"""Looking up projects for requests, waiting briefly for one that was just created elsewhere."""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from documents.projects.models import KnownProject
from documents.projects.repository import ProjectRepository
from shared.errors import NotFound

__all__ = ["ProjectNotFound", "find_project", "wait_for_project"]

_POLL_SECONDS = 0.1


class ProjectNotFound(NotFound):
    code = "project_not_found"


async def find_project(session: AsyncSession, project_id: uuid.UUID) -> KnownProject:
    """The live project, or ``ProjectNotFound``."""
    project = await ProjectRepository(session).live(project_id)
    if project is None:
        raise ProjectNotFound("Project not found")
    return project


async def wait_for_project(
    factory: async_sessionmaker[AsyncSession], project_id: uuid.UUID, wait_seconds: float
) -> bool:
    """Whether the project is known, waiting up to ``wait_seconds`` for it to become so.

    This service learns projects from the projects service's events, a few milliseconds after they are
    created; a client that creates a project and uploads at once would race that event. Each poll is a
    short session of its own, so a waiting request holds no connection (and no transaction) meanwhile.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        async with factory() as session:
            if await ProjectRepository(session).live(project_id) is not None:
                return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL_SECONDS)
