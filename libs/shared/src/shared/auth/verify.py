"""Access-token verification (RFC 9068 profile, RFC 8725 rules). One path for gateway and services.

Order, cheapest and most hostile-input-proof first:
1. size cap before anything is decoded (``max_token_bytes``, default 8 KiB);
2. shape: exactly three non-empty base64url segments;
3. header, parsed without trusting it: ``alg`` in the explicit allow-list (``none`` and every HMAC
   algorithm can never be configured), no ``jku`` / ``x5u`` / ``x5c`` / ``jwk`` (keys only ever come from
   our JWKS, those URLs are never fetched), no ``crit``, ``typ`` is ``at+jwt``, ``kid`` present;
4. key by ``kid`` from ``JWKSCache`` (an unknown ``kid`` may refresh it); the key's own ``alg``, if any,
   must equal the header's (so an ``Ed25519`` key never verifies an ``EdDSA`` header: publish keys under
   the name tokens use);
5. signature via ``joserfc.jwt.decode`` with the explicit algorithm list;
6. claims: ``iss`` exact, ``aud`` contains ours, ``exp``/``sub``/``iat``/``jti`` present, time checks with
   ``leeway_seconds``; then the ``Principal`` claims; then the per-subject not-before hook.

Every failure is ``InvalidToken`` (401) with a stable ``code`` and a fixed short ``detail``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

import httpx
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
    SecurityWarning,
)
from joserfc.jwk import Key

from shared.auth.exceptions import InvalidToken
from shared.auth.jwks import JWKSCache
from shared.auth.principal import Principal

if TYPE_CHECKING:
    from shared.settings import BaseServiceSettings

__all__ = [
    "ACCEPTED_TOKEN_TYPES",
    "MAX_TOKEN_BYTES",
    "SUPPORTED_ALGORITHMS",
    "NotBeforeLookup",
    "TokenVerifier",
]

MAX_TOKEN_BYTES: Final = 8 * 1024
ACCEPTED_TOKEN_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})
# Asymmetric signatures only: a verifier holding only public keys can never be tricked into HMAC.
SUPPORTED_ALGORITHMS: Final = frozenset(
    {"Ed25519", "Ed448", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    | {"ES256", "ES384", "ES512", "ES256K"}
)
MAX_LEEWAY_SECONDS: Final = 30
_FORBIDDEN_HEADERS: Final = ("jku", "x5u", "x5c", "jwk", "crit")
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAX_KID_LENGTH: Final = 256

# Given a subject, the time (epoch seconds) before which its tokens are no longer accepted, or None.
NotBeforeLookup = Callable[[str], int | None]


def _no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError("duplicate header member")
        out[name] = value
    return out


def _decode_header(token: str) -> dict[str, Any]:
    segment = token.partition(".")[0]
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        header = json.loads(raw, object_pairs_hook=_no_duplicate_members)
    except (ValueError, binascii.Error, RecursionError):
        raise InvalidToken("The token header is malformed") from None
    if not isinstance(header, dict):
        raise InvalidToken("The token header is malformed")
    return header


class TokenVerifier:
    """Verifies bearer access tokens and returns the ``Principal``.

    Configure it from ``settings`` (``jwt_issuer``, ``jwt_audience``, ``jwt_algorithms``,
    ``jwt_leeway_seconds``) and/or the explicit keyword arguments, which win.
    ``cache_size`` > 0 keeps up to that many verified tokens (by SHA-256) until they expire; a cached
    token still goes through the expiry and not-before checks, but a key removed from the JWKS does not
    evict tokens it signed before (they are short-lived).
    """

    def __init__(
        self,
        settings: BaseServiceSettings | None = None,
        *,
        jwks: JWKSCache,
        issuer: str | None = None,
        audience: str | None = None,
        algorithms: Iterable[str] | None = None,
        leeway_seconds: int | None = None,
        not_before: NotBeforeLookup | None = None,
        cache_size: int = 0,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        issuer = issuer if issuer is not None else (settings.jwt_issuer if settings else None)
        audience = audience if audience is not None else (settings.jwt_audience if settings else None)
        if algorithms is None:
            algorithms = settings.jwt_algorithms if settings else ("Ed25519", "RS256")
        if leeway_seconds is None:
            leeway_seconds = settings.jwt_leeway_seconds if settings else MAX_LEEWAY_SECONDS
        if not issuer or not audience:
            raise ValueError("TokenVerifier needs an issuer and an audience")
        allowed = tuple(dict.fromkeys(algorithms))
        if not allowed or not set(allowed) <= SUPPORTED_ALGORITHMS:
            raise ValueError(f"algorithms must be a non-empty subset of {sorted(SUPPORTED_ALGORITHMS)}")
        if not 0 <= leeway_seconds <= MAX_LEEWAY_SECONDS:
            raise ValueError(f"leeway_seconds must be between 0 and {MAX_LEEWAY_SECONDS}")
        if cache_size < 0 or max_token_bytes < 256:
            raise ValueError("cache_size must be >= 0 and max_token_bytes >= 256")
        self._issuer = issuer
        self._audience = audience
        self._algorithms = allowed
        self._leeway = leeway_seconds
        self._jwks = jwks
        self._not_before = not_before
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, Principal] = OrderedDict()
        self._max_token_bytes = max_token_bytes
        self._clock = clock
        self._claims_registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=leeway_seconds,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )

    @classmethod
    def from_settings(
        cls,
        settings: BaseServiceSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        not_before: NotBeforeLookup | None = None,
        cache_size: int = 0,
    ) -> TokenVerifier:
        """A verifier over the issuer's JWKS at ``settings.jwks_url``."""
        jwks = JWKSCache.from_settings(settings, transport=transport)
        return cls(settings, jwks=jwks, not_before=not_before, cache_size=cache_size)

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def audience(self) -> str:
        return self._audience

    @property
    def algorithms(self) -> tuple[str, ...]:
        return self._algorithms

    @property
    def jwks(self) -> JWKSCache:
        return self._jwks

    async def aclose(self) -> None:
        await self._jwks.aclose()

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; ``InvalidToken`` (or ``KeySetUnavailable``) otherwise."""
        if not isinstance(token, str) or len(token) > self._max_token_bytes:
            raise InvalidToken("The token is too large")
        digest = hashlib.sha256(token.encode()).digest() if self._cache_size else b""
        cached = self._cached(digest)
        if cached is not None:
            self._check_not_before(cached)
            return cached

        header = self._check_header(token)
        alg: str = header["alg"]
        key = await self._jwks.get_key(header["kid"])
        if key.alg is not None and key.alg != alg:
            raise InvalidToken("The token algorithm does not match its key")
        claims = self._decode(token, key, alg)
        self._check_claims(claims)
        principal = Principal.from_claims(claims, token)
        self._check_not_before(principal)
        self._remember(digest, principal)
        return principal

    def _check_header(self, token: str) -> dict[str, Any]:
        if not _COMPACT_JWS.fullmatch(token):
            raise InvalidToken("The token is not a compact JWS")
        header = _decode_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise InvalidToken("The token algorithm is not accepted")
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                raise InvalidToken(f"The token header parameter '{name}' is not accepted")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TOKEN_TYPES:
            raise InvalidToken("The token type is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_LENGTH:
            raise InvalidToken("The token has no valid key id")
        return header

    def _decode(self, token: str, key: Key, alg: str) -> dict[str, Any]:
        try:
            with warnings.catch_warnings():
                if alg == "EdDSA":  # allowed explicitly by configuration; joserfc flags it deprecated
                    warnings.simplefilter("ignore", SecurityWarning)
                return jwt.decode(token, key, algorithms=self._algorithms).claims
        except BadSignatureError:
            raise InvalidToken("The token signature is invalid") from None
        except (JoseError, ValueError, TypeError):
            raise InvalidToken("The token is malformed") from None

    def _check_claims(self, claims: dict[str, Any]) -> None:
        try:
            self._claims_registry.validate(claims)
        except ExpiredTokenError:
            raise InvalidToken("The token has expired", code="token_expired") from None
        except MissingClaimError as exc:
            raise InvalidToken(f"The token lacks required claims: {exc.claim}") from None
        except InvalidClaimError as exc:
            raise self._claim_error(exc.claim, claims.get(exc.claim)) from None

    @staticmethod
    def _claim_error(claim: str, value: object) -> InvalidToken:
        if claim == "iss":
            return InvalidToken("The token issuer is not accepted")
        if claim == "aud":
            return InvalidToken("The token audience is not accepted")
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if claim in ("nbf", "iat") and numeric:
            return InvalidToken("The token is not valid yet", code="token_not_yet_valid")
        if claim in ("exp", "nbf", "iat", "sub", "jti"):
            return InvalidToken(f"The token claim '{claim}' is malformed")
        return InvalidToken("The token claims are invalid")

    def _check_not_before(self, principal: Principal) -> None:
        if self._not_before is None:
            return
        not_before = self._not_before(principal.subject)
        if not_before is not None and principal.issued_at < not_before:
            raise InvalidToken("The token has been revoked", code="token_revoked")

    def _cached(self, digest: bytes) -> Principal | None:
        if not digest:
            return None
        principal = self._cache.get(digest)
        if principal is None:
            return None
        if principal.expires_at <= self._clock() - self._leeway:
            del self._cache[digest]
            return None
        self._cache.move_to_end(digest)
        return principal

    def _remember(self, digest: bytes, principal: Principal) -> None:
        if not digest:
            return
        self._cache[digest] = principal
        self._cache.move_to_end(digest)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
