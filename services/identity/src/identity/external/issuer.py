"""Verification of tokens from a trusted external OIDC issuer (Keycloak, Auth0, ...).

Only what identity needs to map a person: signature by a key of the issuer's JWKS (fetched and cached by
``shared.auth.JWKSCache``, with its refresh cooldown and stale bound), an algorithm from the configured
allow-list, ``iss`` exact, ``aud`` containing ours, ``exp`` present and not passed, and the subject claim.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError

from identity.config import Settings
from shared.auth import JWKSCache, KeySetUnavailable
from shared.auth.exceptions import InvalidToken

__all__ = ["ExternalIdentity", "ExternalIssuer", "ExternalTokenRejected"]

_FORBIDDEN_HEADERS = ("jku", "x5u", "x5c", "jwk", "crit")
_MAX_TOKEN_BYTES = 16 * 1024


class ExternalTokenRejected(Exception):
    """The external token failed verification (the reason is for logs, not for the caller)."""


@dataclass(frozen=True)
class ExternalIdentity:
    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None


def _header(token: str) -> dict[str, Any]:
    segment = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        raise ExternalTokenRejected("malformed header") from None
    if not isinstance(header, dict):
        raise ExternalTokenRejected("malformed header")
    return header


class ExternalIssuer:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: JWKSCache,
        algorithms: list[str],
        subject_claim: str = "sub",
        email_claim: str = "email",
        leeway_seconds: int = 30,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwks
        self.algorithms = [a for a in algorithms if not a.startswith("HS") and a != "none"]
        self.subject_claim = subject_claim
        self.email_claim = email_claim
        self._claims = jwt.JWTClaimsRegistry(
            leeway=leeway_seconds,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> ExternalIssuer | None:
        issuer, jwks_url, audience = (
            settings.external_issuer,
            settings.external_jwks_url,
            settings.external_audience,
        )
        if not (issuer and jwks_url and audience):
            return None
        jwks = JWKSCache(
            jwks_url,
            cache_seconds=settings.jwks_cache_seconds,
            refresh_cooldown_seconds=settings.jwks_refresh_cooldown_seconds,
            stale_max_seconds=settings.jwks_stale_max_seconds,
            transport=transport,
        )
        return cls(
            issuer=issuer,
            audience=audience,
            jwks=jwks,
            algorithms=settings.external_algorithms,
            subject_claim=settings.external_subject_claim,
            email_claim=settings.external_email_claim,
            leeway_seconds=settings.jwt_leeway_seconds,
        )

    async def verify(self, token: str) -> ExternalIdentity:
        if len(token) > _MAX_TOKEN_BYTES or token.count(".") != 2:
            raise ExternalTokenRejected("not a compact JWS")
        header = _header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise ExternalTokenRejected("algorithm not accepted")
        if any(name in header for name in _FORBIDDEN_HEADERS) or not isinstance(kid, str) or not kid:
            raise ExternalTokenRejected("header not accepted")
        try:
            key = await self.jwks.get_key(kid)
            claims = jwt.decode(token, key, algorithms=[alg]).claims
            self._claims.validate(claims)
        except (InvalidToken, KeySetUnavailable, JoseError, ValueError, TypeError) as exc:
            raise ExternalTokenRejected(type(exc).__name__) from None
        subject = claims.get(self.subject_claim)
        if not isinstance(subject, str) or not subject or len(subject) > 512:
            raise ExternalTokenRejected("no subject")
        email = claims.get(self.email_claim)
        name = claims.get("name")
        return ExternalIdentity(
            issuer=self.issuer,
            subject=subject,
            email=email if isinstance(email, str) and email else None,
            email_verified=claims.get("email_verified") is True,
            name=name if isinstance(name, str) and name else None,
        )

    async def aclose(self) -> None:
        await self.jwks.aclose()
