"""``/v1/users``: admins manage users; every user reads (and edits parts of) itself."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from identity.access import AdminCaller, Caller
from identity.context import ContextDep
from identity.memberships.repository import MembershipRepository
from identity.outbox import actor_of
from identity.paging import after_id, next_cursor
from identity.users import service
from identity.users.repository import UserNotFound, UserRepository
from identity.users.schemas import MembershipSummary, UserCreate, UserMeRead, UserRead, UserUpdate
from shared.http import LimitParam, Page, SessionDep, etag_for, problems

__all__ = ["router"]

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.get("", response_model=Page[UserRead], responses=problems(400, 401, 403, 422))
async def list_users(
    session: SessionDep,
    _: AdminCaller,
    limit: LimitParam = 50,
    cursor: str | None = None,
    email: Annotated[str | None, Query(max_length=320, pattern=r"^[^\x00]*$")] = None,
) -> Page[UserRead]:
    users = await service.list_users(session, limit=limit, after=after_id(cursor), email=email)
    return Page(
        items=[UserRead.model_validate(u) for u in users],
        next_cursor=next_cursor(users, limit, lambda u: u.id),
    )


@router.post(
    "",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    responses=problems(400, 401, 403, 409, 413, 422, described={409: "A user with this email exists"}),
)
async def create_user(
    body: UserCreate, session: SessionDep, caller: AdminCaller, ctx: ContextDep
) -> UserRead:
    user = await service.create_user(session, ctx.hasher, body, actor=actor_of(caller))
    return UserRead.model_validate(user)


@router.get(
    "/me",
    response_model=UserMeRead,
    responses=problems(401, 404, described={404: "The caller is an agent, not a user"}),
)
async def read_me(session: SessionDep, caller: Caller, response: Response) -> UserMeRead:
    if caller.kind != "user":
        raise UserNotFound("Agents are not users; see the agent in its client")
    user = await UserRepository(session).get_or_raise(uuid.UUID(caller.subject))
    memberships = await MembershipRepository(session).of_user(user.id)
    response.headers["ETag"] = etag_for(user.version)
    return UserMeRead.model_validate(
        {
            **UserRead.model_validate(user).model_dump(),
            "memberships": [MembershipSummary.model_validate(m) for m in memberships],
        }
    )


@router.get("/{user_id}", response_model=UserRead, responses=problems(401, 404, 422))
async def read_user(user_id: uuid.UUID, session: SessionDep, caller: Caller, response: Response) -> UserRead:
    user = await service.get_visible_user(session, user_id, caller)
    response.headers["ETag"] = etag_for(user.version)
    return UserRead.model_validate(user)


@router.patch(
    "/{user_id}",
    response_model=UserRead,
    responses=problems(
        400,
        401,
        403,
        404,
        409,
        412,
        413,
        422,
        described={
            403: "Only administrators change status or admin rights",
            409: "The last active administrator cannot be demoted or disabled",
        },
    ),
)
async def update_user(
    user_id: uuid.UUID,
    body: UserUpdate,
    session: SessionDep,
    caller: Caller,
    ctx: ContextDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> UserRead:
    user = await service.update_user(session, ctx.hasher, user_id, body, principal=caller, if_match=if_match)
    response.headers["ETag"] = etag_for(user.version)
    return UserRead.model_validate(user)
