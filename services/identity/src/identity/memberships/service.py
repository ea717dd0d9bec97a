"""Membership rules: who may grant and revoke, the last product owner, not-before on every loss of rights.

A client must keep a product owner: only a platform admin may remove or demote the last one.
Any change that takes rights away (revocation, a role change) stamps the user's not-before, so tokens
that still claim the old role are refused by the gateway and the user refreshes into the new claims.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from identity.memberships.models import Membership
from identity.memberships.repository import (
    ClientNotFound,
    KnownClientRepository,
    MembershipNotFound,
    MembershipRepository,
)
from identity.memberships.schemas import Role
from identity.notbefore.stamps import next_stamp
from identity.outbox import actor_of, record
from identity.users.repository import UserRepository
from shared.auth import CLIENT_ROLES, Principal, ensure_client_role
from shared.errors import Conflict
from shared.events.identity import MembershipGranted, MembershipRevoked
from shared.messaging.envelope import Actor

__all__ = [
    "LastProductOwnerViolated",
    "list_members",
    "put_membership",
    "remove_membership",
    "revoke_membership",
]

MANAGERS = frozenset({"product_owner"})


class LastProductOwnerViolated(Conflict):
    code = "last_product_owner_violated"


async def list_members(
    session: AsyncSession, client_id: uuid.UUID, principal: Principal, *, limit: int, after: uuid.UUID | None
) -> Sequence[Membership]:
    """Every member of a client may see who else is in it."""
    ensure_client_role(principal, str(client_id), CLIENT_ROLES)
    if await KnownClientRepository(session).live(client_id) is None:
        raise ClientNotFound()
    return await MembershipRepository(session).of_client(client_id, limit=limit, after=after)


async def _guard_last_owner(session: AsyncSession, membership: Membership, principal: Principal) -> None:
    if principal.is_admin or membership.role != "product_owner":
        return
    if await MembershipRepository(session).product_owner_count(membership.client_id) <= 1:
        raise LastProductOwnerViolated("A client must keep at least one product owner")


async def put_membership(
    session: AsyncSession, client_id: uuid.UUID, user_id: uuid.UUID, role: Role, *, principal: Principal
) -> tuple[Membership, bool]:
    """Grant or change a role; returns the membership and whether it was created."""
    ensure_client_role(principal, str(client_id), MANAGERS)
    if await KnownClientRepository(session).live(client_id) is None:
        raise ClientNotFound()
    users = UserRepository(session)
    user = await users.get_for_update(user_id)
    if user is None:
        raise users.not_found()
    repo = MembershipRepository(session)
    membership = await repo.one(client_id, user_id, for_update=True)
    if membership is not None and membership.role == role:
        return membership, False
    previous: str | None = None
    stamp: int | None = None
    if membership is None:
        membership = await repo.add(Membership(user_id=user_id, client_id=client_id, role=role))
        created = True
    else:
        await _guard_last_owner(session, membership, principal)
        previous, membership.role = membership.role, role
        user.tokens_valid_after = stamp = next_stamp(user.tokens_valid_after)
        await session.flush()
        created = False
    event = MembershipGranted(
        user_id=user_id,
        client_id=client_id,
        role=role,
        previous_role=previous,  # type: ignore[arg-type]
        not_before=stamp,
    )
    await record(session, event, actor=actor_of(principal), tenant=client_id, resource_id=user_id)
    return membership, created


async def remove_membership(
    session: AsyncSession, client_id: uuid.UUID, user_id: uuid.UUID, *, principal: Principal
) -> None:
    ensure_client_role(principal, str(client_id), MANAGERS)
    membership = await MembershipRepository(session).one(client_id, user_id, for_update=True)
    if membership is None:
        raise MembershipNotFound()
    await _guard_last_owner(session, membership, principal)
    await revoke_membership(session, membership, actor=actor_of(principal), reason="removed")


async def revoke_membership(
    session: AsyncSession, membership: Membership, *, actor: Actor, reason: str
) -> None:
    """Delete a membership, stamp the user's not-before and record ``membership.revoked``."""
    user = await UserRepository(session).get_for_update(membership.user_id)
    stamp = next_stamp(user.tokens_valid_after if user else 0)
    if user is not None:
        user.tokens_valid_after = stamp
    client_id, user_id, role = membership.client_id, membership.user_id, membership.role
    await MembershipRepository(session).delete(membership)
    event = MembershipRevoked(
        user_id=user_id,
        client_id=client_id,
        role=role,  # type: ignore[arg-type]
        not_before=stamp,
        reason=reason,  # type: ignore[arg-type]
    )
    await record(session, event, actor=actor, tenant=client_id, resource_id=user_id)
