"""``/v1/clients/{client_id}/agents``: product owners of the client (and admins) manage its agents."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Response, status

from identity.access import Caller
from identity.agents import service
from identity.agents.schemas import AgentCreate, AgentRead, AgentUpdate, AgentWithSecret
from identity.paging import after_id, next_cursor
from shared.http import LimitParam, Page, SessionDep, etag_for, problems

__all__ = ["router"]

router = APIRouter(prefix="/v1/clients/{client_id}/agents", tags=["agents"])
_NO_STORE = {"Cache-Control": "no-store"}


def _with_secret(agent: object, secret: str, response: Response) -> AgentWithSecret:
    response.headers.update(_NO_STORE)
    return AgentWithSecret.model_validate(
        {**AgentRead.model_validate(agent).model_dump(), "client_secret": secret}
    )


@router.get("", response_model=Page[AgentRead], responses=problems(400, 401, 403, 404, 422))
async def list_agents(
    client_id: uuid.UUID,
    session: SessionDep,
    caller: Caller,
    limit: LimitParam = 50,
    cursor: str | None = None,
) -> Page[AgentRead]:
    rows = await service.list_agents(
        session, client_id, principal=caller, limit=limit, after=after_id(cursor)
    )
    return Page(
        items=[AgentRead.model_validate(a) for a in rows],
        next_cursor=next_cursor(rows, limit, lambda a: a.id),
    )


@router.post(
    "",
    response_model=AgentWithSecret,
    status_code=status.HTTP_201_CREATED,
    responses=problems(400, 401, 403, 404, 413, 422),
)
async def create_agent(
    client_id: uuid.UUID, body: AgentCreate, session: SessionDep, caller: Caller, response: Response
) -> AgentWithSecret:
    agent, secret = await service.create_agent(session, client_id, body, principal=caller)
    return _with_secret(agent, secret, response)


@router.get("/{agent_id}", response_model=AgentRead, responses=problems(401, 403, 404, 422))
async def read_agent(
    client_id: uuid.UUID, agent_id: uuid.UUID, session: SessionDep, caller: Caller, response: Response
) -> AgentRead:
    agent = await service.get_agent(session, client_id, agent_id, principal=caller)
    response.headers["ETag"] = etag_for(agent.version)
    return AgentRead.model_validate(agent)


@router.patch("/{agent_id}", response_model=AgentRead, responses=problems(400, 401, 403, 404, 412, 413, 422))
async def update_agent(
    client_id: uuid.UUID,
    agent_id: uuid.UUID,
    body: AgentUpdate,
    session: SessionDep,
    caller: Caller,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> AgentRead:
    agent = await service.update_agent(
        session, client_id, agent_id, body, principal=caller, if_match=if_match
    )
    response.headers["ETag"] = etag_for(agent.version)
    return AgentRead.model_validate(agent)


@router.post(
    "/{agent_id}/rotate-secret", response_model=AgentWithSecret, responses=problems(401, 403, 404, 422)
)
async def rotate_secret(
    client_id: uuid.UUID, agent_id: uuid.UUID, session: SessionDep, caller: Caller, response: Response
) -> AgentWithSecret:
    agent, secret = await service.rotate_secret(session, client_id, agent_id, principal=caller)
    return _with_secret(agent, secret, response)


@router.delete("/{agent_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(401, 403, 404, 422))
async def delete_agent(
    client_id: uuid.UUID, agent_id: uuid.UUID, session: SessionDep, caller: Caller
) -> None:
    await service.delete_agent(session, client_id, agent_id, principal=caller)
