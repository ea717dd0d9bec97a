"""``POST /v1/search``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from documents.deps import EmbedderDep, SettingsDep
from documents.search import service
from documents.search.schemas import SearchRequest, SearchResponse
from shared.auth import Principal, require_any_scope
from shared.http import SessionDep, problems

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["search"])


_may_search = require_any_scope("search", "documents:read")  # agents; users' reach is their memberships


@router.post(
    "/search",
    response_model=SearchResponse,
    responses=problems(
        400,
        401,
        403,
        413,
        422,
        described={
            503: "The index is being rebuilt, queries cannot be embedded, or the database is unavailable"
        },
    ),
)
async def search(
    body: SearchRequest,
    principal: Annotated[Principal, Depends(_may_search)],
    session: SessionDep,
    settings: SettingsDep,
    embedder: EmbedderDep,
) -> SearchResponse:
    """Ranked chunks of the documents the caller may read: ``hybrid`` (vector + full text, RRF),
    ``semantic`` or ``keyword``."""
    return await service.search(session, principal, body, embedder, ef_search=settings.hnsw_ef_search)
