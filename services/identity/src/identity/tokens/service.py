"""The grants: password login, refresh-token rotation, client credentials, and logout.

Refresh tokens are opaque (``brt_`` + 256 random bits), stored as SHA-256, rotated on every use. Each
login starts a family; presenting a token that was already rotated means someone kept a copy, so the
whole family is revoked (the holder of the newest token has to log in again).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from identity.agents.repository import AgentRepository
from identity.agents.service import hash_secret
from identity.context import IdentityContext
from identity.memberships.repository import KnownClientRepository
from identity.outbox import SERVICE_ACTOR, record
from identity.tokens.errors import InvalidCredentials, OAuthError
from identity.tokens.issuer import IssuedToken, issue_agent_token, issue_user_token
from identity.tokens.models import RefreshToken
from identity.tokens.repository import RefreshTokenRepository
from identity.tokens.schemas import TokenResponse
from identity.tokens.throttle import LoginThrottle, account_key, ip_key
from identity.users.models import User
from identity.users.repository import UserRepository
from shared.db import utcnow
from shared.events.identity import GrantType, LoginFailed, RefreshTokenReused, TokenIssued
from shared.messaging.envelope import Actor

__all__ = [
    "REFRESH_PREFIX",
    "client_credentials_grant",
    "issue_for_user",
    "logout",
    "password_login",
    "refresh_grant",
]

REFRESH_PREFIX = "brt_"
# An agent id that does not exist still costs one hash and one comparison, like a real one.
_NO_SECRET = hashlib.sha256(b"no agent").digest()


def _refresh_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _user_actor(user: User) -> Actor:
    return Actor(subject=str(user.id), kind="user", name=user.display_name)


async def _announce(
    session: AsyncSession,
    issued: IssuedToken,
    *,
    subject: uuid.UUID,
    kind: str,
    grant: GrantType,
    actor: Actor,
    client_id: uuid.UUID | None = None,
) -> None:
    event = TokenIssued(
        subject=str(subject),
        kind=kind,  # type: ignore[arg-type]
        grant=grant,
        jti=issued.jti,
        issued_at=issued.issued_at,
        expires_at=issued.expires_at,
        kid=issued.kid,
        client_id=client_id,
        scope=issued.scope,
    )
    await record(session, event, actor=actor, tenant=client_id, resource_id=subject)


async def issue_for_user(
    session: AsyncSession,
    ctx: IdentityContext,
    user: User,
    *,
    grant: GrantType,
    family_id: uuid.UUID | None = None,
) -> TokenResponse:
    """An access token plus a new refresh token (in ``family_id``, or a new family)."""
    issued = await issue_user_token(session, ctx.keyring, ctx.settings, user)
    refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    await RefreshTokenRepository(session).add(
        RefreshToken(
            family_id=family_id or uuid.uuid4(),
            user_id=user.id,
            token_hash=_refresh_hash(refresh),
            created_at=now,
            expires_at=now + timedelta(seconds=ctx.settings.refresh_token_ttl_seconds),
        )
    )
    await _announce(session, issued, subject=user.id, kind="user", grant=grant, actor=_user_actor(user))
    return TokenResponse(
        access_token=issued.token,
        expires_in=issued.expires_at - issued.issued_at,
        refresh_token=refresh,
    )


async def password_login(
    session: AsyncSession, ctx: IdentityContext, email: str, password: str, *, client_ip: str | None
) -> TokenResponse:
    """Locked keys → 429 before any check; otherwise every failure is the same ``InvalidCredentials``
    after the same Argon2 work (a dummy hash stands in for a missing account or password)."""
    throttle = LoginThrottle(session, ctx.settings)
    account = account_key(email)
    ip = ip_key(client_ip) if client_ip else None
    await throttle.check([account] if ip is None else [account, ip])
    user = await UserRepository(session).by_email(email)
    valid = await ctx.hasher.verify(user.password_hash if user else None, password)
    if user is None or not valid or not user.is_active:
        reason = (
            "unknown_account" if user is None else ("wrong_password" if not valid else "account_disabled")
        )
        await throttle.failed(account, ip)
        event = LoginFailed(
            grant="password", reason=reason, user_id=user.id if user else None, client_ip=client_ip
        )
        actor = _user_actor(user) if user else SERVICE_ACTOR
        await record(session, event, actor=actor, resource_id=user.id if user else "anonymous")
        raise InvalidCredentials()
    await throttle.succeeded(account)
    if user.password_hash is not None and ctx.hasher.needs_rehash(user.password_hash):
        user.password_hash = await ctx.hasher.hash(password)
    return await issue_for_user(session, ctx, user, grant="password")


async def refresh_grant(
    session: AsyncSession, ctx: IdentityContext, token: str, *, client_ip: str | None
) -> TokenResponse:
    repo = RefreshTokenRepository(session)
    row = await repo.by_hash_for_update(_refresh_hash(token)) if token.startswith(REFRESH_PREFIX) else None
    now = utcnow()
    if row is None or row.revoked_at is not None:
        raise OAuthError("invalid_grant", "The refresh token is invalid or revoked")
    if row.used_at is not None:
        await repo.revoke_family(row.family_id, now)
        event = RefreshTokenReused(user_id=row.user_id, family_id=row.family_id, client_ip=client_ip)
        await record(session, event, actor=SERVICE_ACTOR, resource_id=row.user_id)
        raise OAuthError("invalid_grant", "The refresh token was already used; its session has been revoked")
    if row.expires_at <= now:
        raise OAuthError("invalid_grant", "The refresh token has expired")
    user = await UserRepository(session).get(row.user_id)
    if user is None or not user.is_active:
        await repo.revoke_family(row.family_id, now)
        raise OAuthError("invalid_grant", "The refresh token is invalid or revoked")
    row.used_at = now
    await session.flush()
    return await issue_for_user(session, ctx, user, grant="refresh_token", family_id=row.family_id)


async def client_credentials_grant(
    session: AsyncSession,
    ctx: IdentityContext,
    client_id: str,
    client_secret: str,
    *,
    scope: str | None,
    client_ip: str | None,
) -> TokenResponse:
    try:
        agent_id: uuid.UUID | None = uuid.UUID(client_id)
    except ValueError:
        agent_id = None
    agent = await AgentRepository(session).get(agent_id) if agent_id else None
    presented = hash_secret(client_secret)
    matches = hmac.compare_digest(agent.secret_hash if agent else _NO_SECRET, presented)
    usable = (
        agent is not None
        and matches
        and agent.status == "active"
        and await KnownClientRepository(session).live(agent.client_id) is not None
    )
    if not usable or agent is None:
        event = LoginFailed(
            grant="client_credentials",
            reason="invalid_client",
            agent_id=agent.id if agent else None,
            client_ip=client_ip,
        )
        await record(
            session,
            event,
            actor=SERVICE_ACTOR,
            tenant=agent.client_id if agent else None,
            resource_id=agent.id if agent else "anonymous",
        )
        raise OAuthError("invalid_client", "Client authentication failed")
    granted = set(agent.scopes)
    if scope is not None:
        requested = set(scope.split())
        if not requested or not requested <= granted:
            raise OAuthError("invalid_scope", "The requested scope exceeds what the agent was granted")
        granted = requested
    issued = await issue_agent_token(session, ctx.keyring, ctx.settings, agent, granted)
    actor = Actor(subject=str(agent.id), kind="agent", name=agent.name)
    await _announce(
        session,
        issued,
        subject=agent.id,
        kind="agent",
        grant="client_credentials",
        actor=actor,
        client_id=agent.client_id,
    )
    return TokenResponse(
        access_token=issued.token, expires_in=issued.expires_at - issued.issued_at, scope=issued.scope
    )


async def logout(session: AsyncSession, token: str) -> None:
    """Revoke the token's family. Unknown tokens are ignored: the answer never says whether it existed."""
    if not token.startswith(REFRESH_PREFIX):
        return
    repo = RefreshTokenRepository(session)
    row = await repo.by_hash_for_update(_refresh_hash(token))
    if row is not None:
        await repo.revoke_family(row.family_id, utcnow())
