"""Which workflow ids a project may name: those the workflows service announced (``definition.published``).

The catalog only grows (definitions are never deleted) and is eventually consistent: a definition uploaded
a moment ago is known once the projects worker has applied its announcement, a few milliseconds later, so
a new project naming it first waits a little for it (``wait_for_workflows``) rather than be refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from projects.catalog.repository import CatalogRepository
from projects.errors import UnknownWorkflow

__all__ = ["record_definition", "require_known", "wait_for_workflows"]

_POLL_SECONDS = 0.05


async def require_known(session: AsyncSession, refs: Mapping[str, str]) -> None:
    """``refs`` maps a body field (``type``, ``workflow_id``) to the workflow id it names; raises
    ``UnknownWorkflow`` naming every field whose id is not in the catalog."""
    known = await CatalogRepository(session).known_ids(set(refs.values()))
    unknown = {field: ref for field, ref in refs.items() if ref not in known}
    if unknown:
        raise UnknownWorkflow(unknown)


async def record_definition(session: AsyncSession, definition_id: str, version: int, name: str) -> bool:
    """Add a definition or raise its version; an older or repeated announcement changes nothing (False)."""
    return await CatalogRepository(session).record(definition_id, version, name)


async def wait_for_workflows(
    factory: async_sessionmaker[AsyncSession], ids: set[str], wait_seconds: float
) -> bool:
    """Whether every workflow id in ``ids`` is in the catalog, waiting up to ``wait_seconds`` for it.

    Each poll is a short session of its own, so a waiting request holds no connection or transaction (nor
    the client's row lock the creation takes) meanwhile.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        async with factory() as session:
            if ids <= await CatalogRepository(session).known_ids(ids):
                return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL_SECONDS)
