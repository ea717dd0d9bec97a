"""``/v1/clients``: parse, authorize coarsely (scopes, admin), call one service function, render."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from projects.clients import service
from projects.clients.schemas import ClientCreate, ClientRead, ClientStatus, ClientUpdate
from projects.http import CursorParam, IfMatch, Reader, SearchParam, Session, Writer, set_etag
from shared.auth import AdminPrincipal
from shared.http import LimitParam, Page, problems

__all__ = ["router"]

router = APIRouter(prefix="/v1/clients", tags=["clients"])
CONFLICTS = {409: "The slug is taken, or the status change is not allowed"}


@router.get("", response_model=Page[ClientRead], responses=problems(400, 401, 403, 422))
async def list_clients(
    principal: Reader,
    session: Session,
    limit: LimitParam = 50,
    cursor: CursorParam = None,
    status: ClientStatus | None = None,
    q: SearchParam = None,
) -> Page[ClientRead]:
    """Clients the caller may read (platform admins: all), newest first."""
    page = await service.list_clients(
        session, principal=principal, status=status, q=q, cursor=cursor, limit=limit
    )
    return Page[ClientRead](
        items=[ClientRead.model_validate(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ClientRead,
    responses=problems(400, 401, 403, 409, 413, 422, described=CONFLICTS),
)
async def create_client(
    principal: AdminPrincipal, body: ClientCreate, session: Session, response: Response
) -> ClientRead:
    client = await service.create_client(session, body, principal=principal)
    set_etag(response, client.version)
    response.headers["Location"] = f"/v1/clients/{client.id}"
    return ClientRead.model_validate(client)


@router.get("/{client_id}", response_model=ClientRead, responses=problems(401, 403, 404, 422))
async def get_client(
    principal: Reader, client_id: uuid.UUID, session: Session, response: Response
) -> ClientRead:
    client = await service.get_client(session, client_id, principal=principal)
    set_etag(response, client.version)
    return ClientRead.model_validate(client)


@router.patch(
    "/{client_id}",
    response_model=ClientRead,
    responses=problems(400, 401, 403, 404, 409, 412, 413, 422, described=CONFLICTS),
)
async def update_client(
    principal: Writer,
    client_id: uuid.UUID,
    body: ClientUpdate,
    session: Session,
    response: Response,
    if_match: IfMatch = None,
) -> ClientRead:
    """Admins change every field; a client's product owners change name, contact and metadata."""
    client = await service.update_client(session, client_id, body, principal=principal, if_match=if_match)
    set_etag(response, client.version)
    return ClientRead.model_validate(client)


@router.delete(
    "/{client_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(401, 403, 404, 412, 422)
)
async def delete_client(
    principal: Writer, client_id: uuid.UUID, session: Session, if_match: IfMatch = None
) -> Response:
    """Platform admins only; the client's projects are deleted with it."""
    await service.delete_client(session, client_id, principal=principal, if_match=if_match)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
