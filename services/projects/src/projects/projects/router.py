"""``/v1/projects``: parse, authorize coarsely (scopes), call one service function, render."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response, status

from projects.catalog.service import wait_for_workflows
from projects.config import Settings
from projects.http import CursorParam, IfMatch, Reader, SearchParam, Session, Writer, set_etag
from projects.projects import service
from projects.projects.schemas import ProjectCreate, ProjectRead, ProjectStatus, ProjectUpdate
from shared.http import LimitParam, Page, problems, session_factory

__all__ = ["router"]

router = APIRouter(prefix="/v1/projects", tags=["projects"])
CONFLICTS = {
    409: "The name is taken in this client, the client is archived, or the status change is not allowed"
}
UNKNOWN_WORKFLOW = (
    "The body is invalid, or ``type`` / ``workflow_id`` names no known workflow definition "
    "(``unknown_workflow``; ``errors`` names the field; GET /v1/workflow-definitions lists them)"
)


@router.get("", response_model=Page[ProjectRead], responses=problems(400, 401, 403, 404, 422))
async def list_projects(
    principal: Reader,
    session: Session,
    limit: LimitParam = 50,
    cursor: CursorParam = None,
    client_id: uuid.UUID | None = None,
    status: ProjectStatus | None = None,
    q: SearchParam = None,
) -> Page[ProjectRead]:
    """Projects the caller may read, newest first; ``q`` matches name or description."""
    page = await service.list_projects(
        session, principal=principal, client_id=client_id, status=status, q=q, cursor=cursor, limit=limit
    )
    return Page[ProjectRead](
        items=[ProjectRead.model_validate(p) for p in page.items], next_cursor=page.next_cursor
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProjectRead,
    responses=problems(400, 401, 403, 404, 409, 413, 422, described={**CONFLICTS, 422: UNKNOWN_WORKFLOW}),
)
async def create_project(
    principal: Writer, body: ProjectCreate, session: Session, response: Response, request: Request
) -> ProjectRead:
    """Product owners of the client, admins, and the client's agents with ``projects:write``. A workflow
    definition uploaded a moment ago is waited for (``BATON_PROJECTS_WORKFLOW_WAIT_SECONDS``) before the
    project is refused for naming an unknown one."""
    if named := service.named_workflows(body):
        factory = session_factory(request)
        await service.ensure_may_create(factory, body, principal=principal)  # no waiting to be refused
        settings: Settings = request.app.state.settings
        await wait_for_workflows(factory, named, settings.workflow_wait_seconds)
    project = await service.create_project(session, body, principal=principal)
    set_etag(response, project.version)
    response.headers["Location"] = f"/v1/projects/{project.id}"
    return ProjectRead.model_validate(project)


@router.get("/{project_id}", response_model=ProjectRead, responses=problems(401, 403, 404, 422))
async def get_project(
    principal: Reader, project_id: uuid.UUID, session: Session, response: Response
) -> ProjectRead:
    project = await service.get_project(session, project_id, principal=principal)
    set_etag(response, project.version)
    return ProjectRead.model_validate(project)


@router.patch(
    "/{project_id}",
    response_model=ProjectRead,
    responses=problems(
        400, 401, 403, 404, 409, 412, 413, 422, described={**CONFLICTS, 422: UNKNOWN_WORKFLOW}
    ),
)
async def update_project(
    principal: Writer,
    project_id: uuid.UUID,
    body: ProjectUpdate,
    session: Session,
    response: Response,
    if_match: IfMatch = None,
) -> ProjectRead:
    project = await service.update_project(session, project_id, body, principal=principal, if_match=if_match)
    set_etag(response, project.version)
    return ProjectRead.model_validate(project)


@router.delete(
    "/{project_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(401, 403, 404, 412, 422)
)
async def delete_project(
    principal: Writer, project_id: uuid.UUID, session: Session, if_match: IfMatch = None
) -> Response:
    await service.delete_project(session, project_id, principal=principal, if_match=if_match)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
