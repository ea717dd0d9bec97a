"""Exchanging an external issuer's token for Baton tokens (RFC 8693 token exchange at /v1/auth/token).

Mapping, in order: a user already linked to (issuer, subject); else the user whose email equals the
token's email *if the issuer says it is verified* (the link is then stored); else, with
``BATON_IDENTITY_EXTERNAL_AUTO_CREATE``, a new user without password or memberships. Memberships always
come from identity, never from the external token.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from identity.context import IdentityContext
from identity.external.issuer import ExternalIdentity, ExternalTokenRejected
from identity.outbox import SERVICE_ACTOR, record
from identity.tokens.errors import OAuthError
from identity.tokens.schemas import TokenResponse
from identity.tokens.service import issue_for_user
from identity.users.models import User
from identity.users.repository import UserRepository, email_key
from identity.users.service import announce_created
from shared.events.identity import LoginFailed

__all__ = ["ACCESS_TOKEN_TYPE", "SUBJECT_TOKEN_TYPES", "exchange_external_token"]

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TOKEN_TYPES = frozenset(
    {
        "urn:ietf:params:oauth:token-type:jwt",
        "urn:ietf:params:oauth:token-type:id_token",
        ACCESS_TOKEN_TYPE,
    }
)


async def _map_user(session: AsyncSession, ctx: IdentityContext, ident: ExternalIdentity) -> User | None:
    repo = UserRepository(session)
    user = await repo.by_external_subject(ident.issuer, ident.subject)
    if user is not None:
        return user
    if ident.email is None or not ident.email_verified:
        return None
    user = await repo.by_email(ident.email)
    if user is not None:
        if user.external_subject is not None:
            return None  # linked to another external identity: never re-link silently
        user.external_issuer, user.external_subject = ident.issuer, ident.subject
        await session.flush()
        return user
    if not ctx.settings.external_auto_create:
        return None
    user = User(
        email=ident.email,
        email_key=email_key(ident.email),
        display_name=(ident.name or ident.email)[:200],
        password_hash=None,
        status="active",
        is_admin=False,
        external_issuer=ident.issuer,
        external_subject=ident.subject,
    )
    await repo.add(user)
    await announce_created(session, user, actor=SERVICE_ACTOR, origin="external")
    return user


async def exchange_external_token(
    session: AsyncSession,
    ctx: IdentityContext,
    subject_token: str,
    subject_token_type: str,
    *,
    client_ip: str | None,
) -> TokenResponse:
    if ctx.external is None:
        raise OAuthError("unsupported_grant_type", "No external issuer is configured")
    if subject_token_type not in SUBJECT_TOKEN_TYPES:
        raise OAuthError("invalid_request", "Unsupported subject_token_type")
    try:
        ident = await ctx.external.verify(subject_token)
    except ExternalTokenRejected:
        raise OAuthError("invalid_grant", "The subject token is not valid") from None
    user = await _map_user(session, ctx, ident)
    if user is None or not user.is_active:
        event = LoginFailed(
            grant="token_exchange",
            reason="unmapped_subject" if user is None else "account_disabled",
            user_id=user.id if user else None,
            client_ip=client_ip,
        )
        await record(session, event, actor=SERVICE_ACTOR, resource_id=user.id if user else "anonymous")
        raise OAuthError("invalid_grant", "No active Baton user is mapped to this identity")
    response = await issue_for_user(session, ctx, user, grant="token_exchange")
    return response.model_copy(update={"issued_token_type": ACCESS_TOKEN_TYPE})
