"""User rules: creation, profile and status changes, the admin invariant, the caller's own view."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from identity.notbefore.stamps import next_stamp
from identity.outbox import actor_of, record
from identity.tokens.repository import RefreshTokenRepository
from identity.users.models import User
from identity.users.passwords import PasswordHasher
from identity.users.repository import UserNotFound, UserRepository, email_key
from identity.users.schemas import UserCreate, UserUpdate
from shared.auth import Principal
from shared.db import utcnow
from shared.errors import Conflict, Forbidden, ValidationFailed
from shared.events.identity import UserCreated, UserDisabled, UserUpdated
from shared.http import check_if_match
from shared.messaging.envelope import Actor

__all__ = [
    "EmailTaken",
    "LastAdminViolated",
    "create_user",
    "get_visible_user",
    "list_users",
    "update_user",
]


class EmailTaken(Conflict):
    code = "email_taken"


class LastAdminViolated(Conflict):
    code = "last_admin_violated"


class CurrentPasswordRequired(ValidationFailed):
    code = "current_password_required"


async def create_user(
    session: AsyncSession,
    hasher: PasswordHasher,
    data: UserCreate,
    *,
    actor: Actor,
    origin: Literal["admin", "bootstrap", "external"] = "admin",
) -> User:
    repo = UserRepository(session)
    if await repo.by_email(data.email) is not None:
        raise EmailTaken("A user with this email already exists")
    user = User(
        email=data.email,
        email_key=email_key(data.email),
        display_name=data.display_name,
        password_hash=await hasher.hash(data.password),
        is_admin=data.is_admin,
        status="active",
    )
    try:
        await repo.add(user)
    except IntegrityError:  # a concurrent request created the same email first
        raise EmailTaken("A user with this email already exists") from None
    await announce_created(session, user, actor=actor, origin=origin)
    return user


async def announce_created(
    session: AsyncSession, user: User, *, actor: Actor, origin: Literal["admin", "bootstrap", "external"]
) -> None:
    event = UserCreated(
        user_id=user.id,
        email=user.email,
        display_name=user.display_name,
        is_admin=user.is_admin,
        origin=origin,
    )
    await record(session, event, actor=actor, resource_id=user.id)


async def list_users(
    session: AsyncSession, *, limit: int, after: uuid.UUID | None, email: str | None
) -> Sequence[User]:
    return await UserRepository(session).page(limit=limit, after=after, email=email)


async def get_visible_user(session: AsyncSession, user_id: uuid.UUID, principal: Principal) -> User:
    """Admins see everyone; a user sees itself; anything else is a 404 like a missing user."""
    if not principal.is_admin and not (principal.kind == "user" and principal.subject == str(user_id)):
        raise UserNotFound()
    return await UserRepository(session).get_or_raise(user_id)


async def update_user(
    session: AsyncSession,
    hasher: PasswordHasher,
    user_id: uuid.UUID,
    data: UserUpdate,
    *,
    principal: Principal,
    if_match: str | None,
) -> User:
    user = await get_visible_user(session, user_id, principal)
    repo = UserRepository(session)
    user = await repo.get_for_update(user.id) or user
    check_if_match(if_match, user.version)
    fields = data.model_fields_set
    if not principal.is_admin and fields & {"status", "is_admin"}:
        raise Forbidden("Only administrators change status or admin rights", code="admin_required")
    changed: list[str] = []
    tokens = RefreshTokenRepository(session)
    now = utcnow()

    if data.display_name is not None and data.display_name != user.display_name:
        user.display_name = data.display_name
        changed.append("display_name")
    if data.password is not None:
        own = not principal.is_admin or principal.subject == str(user.id)
        if own and (
            data.current_password is None
            or not await hasher.verify(user.password_hash, data.current_password)
        ):
            raise CurrentPasswordRequired("The current password is required and must be correct")
        user.password_hash = await hasher.hash(data.password)
        await tokens.revoke_user(user.id, now)
        changed.append("password")

    demoted = data.is_admin is False and user.is_admin
    disabling = data.status == "disabled" and user.status == "active"
    losing_admin = (demoted or disabling) and user.is_admin and user.status == "active"
    if losing_admin and await repo.count_active_admins() <= 1:
        raise LastAdminViolated("The last active administrator cannot be demoted or disabled")
    if data.is_admin is not None and data.is_admin != user.is_admin:
        user.is_admin = data.is_admin
        changed.append("is_admin")
    if data.status is not None and data.status != user.status:
        user.status = data.status
        changed.append("status")

    stamp: int | None = None
    if demoted or disabling:
        user.tokens_valid_after = stamp = next_stamp(user.tokens_valid_after)
    if disabling:
        await tokens.revoke_user(user.id, now)
    if not changed:
        return user
    user.version += 1
    await session.flush()
    actor = actor_of(principal)
    if disabling:
        await record(
            session,
            UserDisabled(user_id=user.id, not_before=user.tokens_valid_after),
            actor=actor,
            resource_id=user.id,
        )
    other = [c for c in changed if c != "status" or not disabling]
    if other:
        event = UserUpdated(user_id=user.id, changed=other, not_before=stamp if demoted else None)
        await record(session, event, actor=actor, resource_id=user.id)
    return user
