"""Discovery (``/.well-known/*``, public) and signing-key administration (``/v1/auth/keys``, admins)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from identity.access import AdminCaller
from identity.agents.schemas import AGENT_SCOPES
from identity.context import ContextDep
from identity.keys.repository import SigningKeyRepository
from identity.keys.service import published_jwks, rotate_signing_key
from identity.outbox import actor_of
from shared.db import utcnow
from shared.http import JSON_INTEGER, SessionDep, problems

__all__ = ["router"]

router = APIRouter(tags=["keys"])


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["Ed25519", "RS256"] | None = None
    # A JSON number of seconds: ``2`` or ``2.0``, never ``false`` or ``"2"``.
    publish_ahead_seconds: Annotated[int, Field(ge=0, le=86400), JSON_INTEGER] | None = None


class KeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kid: str
    algorithm: str
    created_at: datetime
    signs_from: datetime
    retired_at: datetime | None
    publish_until: datetime | None


class KeyList(BaseModel):
    items: list[KeyRead]


@router.get("/.well-known/jwks.json", responses=problems())
async def jwks(session: SessionDep) -> JSONResponse:
    """Public keys that verify Baton access tokens (current, announced, and retired but still live)."""
    body = await published_jwks(session)
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=60"})


@router.get("/.well-known/openid-configuration")
async def openid_configuration(ctx: ContextDep) -> JSONResponse:
    """OAuth 2.0 authorization server metadata (RFC 8414) in the OIDC discovery location.

    Baton issues access tokens only (no ID tokens, no authorization endpoint)."""
    s = ctx.settings
    issuer = s.jwt_issuer.rstrip("/")
    grants = ["client_credentials", "refresh_token"]
    if s.external_enabled:
        grants.append("urn:ietf:params:oauth:grant-type:token-exchange")
    body: dict[str, Any] = {
        "issuer": s.jwt_issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{issuer}/v1/auth/token",
        "grant_types_supported": grants,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA", "RS256"],
        "token_endpoint_auth_signing_alg_values_supported": ["Ed25519", "RS256"],
        "scopes_supported": sorted(AGENT_SCOPES),
        "access_token_signing_alg_values_supported": ["Ed25519", "RS256"],
    }
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=300"})


@router.get("/v1/auth/keys", response_model=KeyList, tags=["keys"], responses=problems(401, 403))
async def list_keys(session: SessionDep, _: AdminCaller) -> KeyList:
    rows = await SigningKeyRepository(session).published(utcnow())
    return KeyList(items=[KeyRead.model_validate(r) for r in rows])


@router.post(
    "/v1/auth/keys/rotate",
    response_model=KeyRead,
    status_code=status.HTTP_201_CREATED,
    responses=problems(400, 401, 403, 413, 422),
)
async def rotate_key(body: KeyRotate, session: SessionDep, caller: AdminCaller, ctx: ContextDep) -> KeyRead:
    """Introduce a new signing key now or after ``publish_ahead_seconds``; older keys retire then."""
    row = await rotate_signing_key(
        session,
        ctx.keyring,
        ctx.settings,
        algorithm=body.algorithm,
        publish_ahead_seconds=body.publish_ahead_seconds,
        actor=actor_of(caller),
    )
    return KeyRead.model_validate(row)
