"""``/v1/projects/{id}/workflow`` and ``/v1/projects/{id}/sprint-status``."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import CurrentPrincipal, Principal
from shared.db import utcnow
from shared.http import SessionDep, etag_for, problems
from workflows.access import ensure_read
from workflows.engine.stories import render_yaml, sprint_status
from workflows.instances.models import InstanceRow
from workflows.instances.read import instance_read
from workflows.instances.schemas import InstanceRead
from workflows.instances.service import InstanceNotFound, engine_for, instance_by_project

router = APIRouter(prefix="/v1/projects", tags=["workflow instances"])


async def _instance(session: AsyncSession, principal: Principal, project_id: uuid.UUID) -> InstanceRow:
    row = await instance_by_project(session, project_id)
    if row is None:
        raise InstanceNotFound(f"Project {project_id} has no workflow")
    ensure_read(
        principal,
        row.client_id,
        row.project_id,
        not_found=lambda: InstanceNotFound(f"Project {project_id} has no workflow"),
    )
    return row


@router.get("/{project_id}/workflow", response_model=InstanceRead, responses=problems(401, 403, 404, 422))
async def get_workflow(
    project_id: uuid.UUID, session: SessionDep, principal: CurrentPrincipal, response: Response
) -> InstanceRead:
    """The project's workflow instance: current phase and step, every step's state, open tasks and
    decisions, stories, and the history of what happened (the latest entries)."""
    row = await _instance(session, principal, project_id)
    engine = await engine_for(session, row)
    response.headers["ETag"] = etag_for(row.version)
    return instance_read(row, engine)


@router.get(
    "/{project_id}/sprint-status",
    responses={
        200: {"content": {"application/json": {}, "application/yaml": {}}},
        **problems(401, 403, 404, 422),
    },
)
async def get_sprint_status(
    project_id: uuid.UUID,
    session: SessionDep,
    principal: CurrentPrincipal,
    accept: Annotated[str | None, Header()] = None,
    format: Annotated[Literal["json", "yaml"] | None, Query()] = None,
) -> Response:
    """The v6 ``sprint-status.yaml`` of the project (YAML when asked by ``Accept`` or ``format=yaml``)."""
    row = await _instance(session, principal, project_id)
    engine = await engine_for(session, row)
    status = sprint_status(engine.state, project=row.project_name, generated=utcnow())
    wants_yaml = format == "yaml" or (format is None and accept is not None and "yaml" in accept.lower())
    headers = {"ETag": etag_for(row.version)}
    if wants_yaml:
        return Response(render_yaml(status), media_type="application/yaml", headers=headers)
    return Response(json.dumps(status), media_type="application/json", headers=headers)
