"""Which workflow ids a project may name: those the workflows service announced (``definition.published``).

The catalog only grows (definitions are never deleted) and is eventually consistent: a definition uploaded
a moment ago is refused until the projects worker has applied its announcement.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from projects.catalog.repository import CatalogRepository
from projects.errors import UnknownWorkflow

__all__ = ["record_definition", "require_known"]


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
