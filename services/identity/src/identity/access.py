"""The caller's rights as identity's own database says, not as the token remembers them.

Identity owns users, agents and memberships, so it authorizes against the current rows: a token whose
subject was disabled, demoted or removed since it was issued (``iat`` before the subject's not-before)
is refused here even before the gateway's not-before reaches it, and role checks use today's roles.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession

from identity.agents.repository import AgentRepository
from identity.memberships.repository import KnownClientRepository, MembershipRepository
from identity.users.repository import UserRepository
from shared.auth import CurrentPrincipal, InvalidToken, Principal
from shared.errors import Forbidden
from shared.http import SessionDep

__all__ = ["AdminCaller", "Caller", "current_rights", "get_caller", "require_admin_caller"]


def _revoked() -> InvalidToken:
    return InvalidToken("The token has been revoked", code="token_revoked")


def _subject_id(principal: Principal) -> uuid.UUID:
    try:
        return uuid.UUID(principal.subject)
    except ValueError:
        raise _revoked() from None


async def current_rights(session: AsyncSession, principal: Principal) -> Principal:
    """``principal`` with admin flag, memberships and scopes replaced by the current rows."""
    subject = _subject_id(principal)
    if principal.kind == "user":
        user = await UserRepository(session).get(subject)
        if user is None or not user.is_active or principal.issued_at < user.tokens_valid_after:
            raise _revoked()
        memberships = {str(m.client_id): m.role for m in await MembershipRepository(session).of_user(user.id)}
        return dataclasses.replace(principal, is_admin=user.is_admin, memberships=memberships)
    agent = await AgentRepository(session).get(subject)
    if (
        agent is None
        or agent.status != "active"
        or principal.issued_at < agent.tokens_valid_after
        or principal.client_id != str(agent.client_id)
        or await KnownClientRepository(session).live(agent.client_id) is None
    ):
        raise _revoked()
    return dataclasses.replace(
        principal, is_admin=False, memberships={}, scopes=principal.scopes & frozenset(agent.scopes)
    )


async def get_caller(principal: CurrentPrincipal, session: SessionDep) -> Principal:
    return await current_rights(session, principal)


Caller = Annotated[Principal, Depends(get_caller)]


async def require_admin_caller(caller: Caller) -> Principal:
    if not caller.is_admin:
        raise Forbidden("Platform administrators only", code="admin_required")
    return caller


AdminCaller = Annotated[Principal, Depends(require_admin_caller)]
