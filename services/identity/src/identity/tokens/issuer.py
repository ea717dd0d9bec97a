"""Access tokens: the claim layout of ``shared.auth.principal``, signed with the current key.

User token claims::

    iss aud sub iat exp jti kind="user" admin memberships={client_id: role} scope="" name

Agent token claims::

    iss aud sub iat exp jti kind="agent" admin=false memberships={} scope="<space-separated>"
    client_id [project_ids] [bmad_roles] name

``project_ids`` is present only when the agent is narrowed to some projects, ``bmad_roles`` only when
it has any. ``iat`` is never before the subject's not-before (see ``notbefore.stamps``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from identity.agents.models import Agent
from identity.config import Settings
from identity.keys.service import KeyRing, signing_key
from identity.memberships.repository import MembershipRepository
from identity.notbefore.stamps import issue_time
from identity.users.models import User

__all__ = ["IssuedToken", "issue_agent_token", "issue_user_token"]


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    issued_at: int
    expires_at: int
    kid: str
    scope: str


def _base_claims(
    settings: Settings, subject: uuid.UUID, valid_after: int, kind: Literal["user", "agent"]
) -> dict[str, Any]:
    iat = issue_time(valid_after)
    return {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": str(subject),
        "iat": iat,
        "exp": iat + settings.access_token_ttl_seconds,
        "jti": str(uuid.uuid4()),
        "kind": kind,
    }


async def _sign(session: AsyncSession, ring: KeyRing, claims: dict[str, Any]) -> IssuedToken:
    key = await signing_key(session)
    return IssuedToken(
        token=ring.sign(key, claims),
        jti=claims["jti"],
        issued_at=claims["iat"],
        expires_at=claims["exp"],
        kid=key.kid,
        scope=claims["scope"],
    )


async def issue_user_token(
    session: AsyncSession, ring: KeyRing, settings: Settings, user: User
) -> IssuedToken:
    memberships = await MembershipRepository(session).of_user(user.id)
    claims = _base_claims(settings, user.id, user.tokens_valid_after, "user")
    claims.update(
        admin=user.is_admin,
        memberships={str(m.client_id): m.role for m in memberships},
        scope="",
        name=user.display_name,
    )
    return await _sign(session, ring, claims)


async def issue_agent_token(
    session: AsyncSession, ring: KeyRing, settings: Settings, agent: Agent, scopes: Iterable[str]
) -> IssuedToken:
    claims = _base_claims(settings, agent.id, agent.tokens_valid_after, "agent")
    claims.update(admin=False, memberships={}, scope=" ".join(sorted(scopes)), client_id=str(agent.client_id))
    if agent.project_ids is not None:
        claims["project_ids"] = [str(p) for p in agent.project_ids]
    if agent.bmad_roles:
        claims["bmad_roles"] = list(agent.bmad_roles)
    claims["name"] = agent.name
    return await _sign(session, ring, claims)
