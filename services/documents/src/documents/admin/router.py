"""Index administration (platform admins): reindex with the active embedding model."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Response

from documents.admin import service
from documents.admin.schemas import ReindexJobRead, ReindexRequest
from documents.deps import EmbedderDep
from shared.auth import AdminPrincipal, require_admin
from shared.http import SessionDep, problems

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post(
    "/reindex", response_model=ReindexJobRead, status_code=202, responses=problems(400, 401, 403, 413, 422)
)
async def reindex(
    principal: AdminPrincipal,
    session: SessionDep,
    embedder: EmbedderDep,
    response: Response,
    body: ReindexRequest | None = None,
) -> ReindexJobRead:
    """Queue a background re-embedding of every chunk with this service's model; searches switch to it
    when it completes. While a job is queued or running, that job is returned."""
    job, _ = await service.request_reindex(
        session, principal, embedder.model_id, force=body.force if body is not None else False
    )
    response.headers["Location"] = f"/v1/admin/reindex/{job.id}"
    return ReindexJobRead.model_validate(job)


@router.get(
    "/reindex/{job_id}",
    response_model=ReindexJobRead,
    dependencies=[Depends(require_admin)],
    responses=problems(401, 403, 404, 422),
)
async def get_reindex(job_id: uuid.UUID, session: SessionDep) -> ReindexJobRead:
    return ReindexJobRead.model_validate(await service.get_job(session, job_id))
