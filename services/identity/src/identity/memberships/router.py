"""``/v1/clients/{client_id}/members``: product owners of the client (and admins) manage members."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from identity.access import Caller
from identity.memberships import service
from identity.memberships.schemas import MembershipPut, MembershipRead
from identity.paging import after_id, next_cursor
from shared.http import LimitParam, Page, SessionDep, problems

__all__ = ["router"]

router = APIRouter(prefix="/v1/clients/{client_id}/members", tags=["memberships"])
# Only a platform admin may demote or remove a client's last product owner.
_LAST_OWNER = {409: "The last product owner of the client"}


@router.get("", response_model=Page[MembershipRead], responses=problems(400, 401, 403, 404, 422))
async def list_members(
    client_id: uuid.UUID,
    session: SessionDep,
    caller: Caller,
    limit: LimitParam = 50,
    cursor: str | None = None,
) -> Page[MembershipRead]:
    rows = await service.list_members(session, client_id, caller, limit=limit, after=after_id(cursor))
    return Page(
        items=[MembershipRead.model_validate(m) for m in rows],
        next_cursor=next_cursor(rows, limit, lambda m: m.user_id),
    )


@router.put(
    "/{user_id}",
    response_model=MembershipRead,
    responses={
        201: {"model": MembershipRead, "description": "Membership created"},
        **problems(400, 401, 403, 404, 409, 413, 422, described=_LAST_OWNER),
    },
)
async def put_member(
    client_id: uuid.UUID,
    user_id: uuid.UUID,
    body: MembershipPut,
    session: SessionDep,
    caller: Caller,
    response: Response,
) -> MembershipRead:
    membership, created = await service.put_membership(
        session, client_id, user_id, body.role, principal=caller
    )
    if created:
        response.status_code = status.HTTP_201_CREATED
    return MembershipRead.model_validate(membership)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(401, 403, 404, 409, 422, described=_LAST_OWNER),
)
async def remove_member(
    client_id: uuid.UUID, user_id: uuid.UUID, session: SessionDep, caller: Caller
) -> None:
    await service.remove_membership(session, client_id, user_id, principal=caller)
