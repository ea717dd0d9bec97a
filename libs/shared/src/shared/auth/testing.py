"""Mint access tokens in tests, for any principal, signed by keys only the test knows.

    tokens = TokenFactory()                      # one Ed25519 key
    app.state.token_verifier = tokens.verifier()
    headers = {"Authorization": f"Bearer {tokens.issue('u1', memberships={client_id: 'viewer'})}"}

``issue`` follows the claim layout documented in ``shared.auth.principal``; ``extra_claims`` and
``headers`` override it (a ``None`` value removes the member), so tests can also mint broken tokens.
Not for production: keys live in memory and nothing here is hardened.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from joserfc.jwk import ECKey, Key, KeyParameters, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from shared.auth.jwks import JWKSCache
from shared.auth.principal import Principal, PrincipalKind
from shared.auth.verify import TokenVerifier

if TYPE_CHECKING:
    from shared.settings import BaseServiceSettings

__all__ = ["DEFAULT_AUDIENCE", "DEFAULT_ISSUER", "TokenFactory", "b64url", "generate_signing_key"]

DEFAULT_ISSUER = "http://127.0.0.1:8000"
DEFAULT_AUDIENCE = "baton"
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521", "ES256K": "secp256k1"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def generate_signing_key(algorithm: str, kid: str) -> Key:
    """A private key suited to ``algorithm`` with ``kid``, ``alg`` and ``use`` set."""
    params: KeyParameters = {"kid": kid, "alg": algorithm, "use": "sig"}
    if algorithm in ("Ed25519", "EdDSA"):
        return OKPKey.generate_key("Ed25519", parameters=params)
    if algorithm == "Ed448":
        return OKPKey.generate_key("Ed448", parameters=params)
    if algorithm.startswith(("RS", "PS")):
        return RSAKey.generate_key(2048, parameters=params)
    if algorithm in _EC_CURVES:
        return ECKey.generate_key(_EC_CURVES[algorithm], parameters=params)
    raise ValueError(f"no key type known for {algorithm!r}")


def _merge(base: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    for name, value in (overrides or {}).items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


class TokenFactory:
    """Signing keys plus the issuer/audience a verifier expects; see the module docstring."""

    def __init__(
        self,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        algorithm: str = "Ed25519",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.clock = clock
        self._keys: dict[str, Key] = {}
        self._withdrawn: set[str] = set()
        self._counter = itertools.count(1)
        self.current_kid = self.add_key(algorithm)

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings, *, algorithm: str = "Ed25519") -> TokenFactory:
        return cls(issuer=settings.jwt_issuer, audience=settings.jwt_audience, algorithm=algorithm)

    def add_key(self, algorithm: str = "Ed25519", *, kid: str | None = None, current: bool = True) -> str:
        """Generate and publish another key (e.g. ``"RS256"``, ``"ES256"``); returns its ``kid``."""
        kid = kid or f"test-{algorithm.lower()}-{next(self._counter)}-{uuid.uuid4().hex[:8]}"
        self._keys[kid] = generate_signing_key(algorithm, kid)
        if current:
            self.current_kid = kid
        return kid

    def remove_key(self, kid: str) -> None:
        """Stop publishing ``kid`` (it can still sign, to test rotated-out keys)."""
        if kid not in self._keys:
            raise KeyError(kid)
        self._withdrawn.add(kid)

    def key(self, kid: str | None = None) -> Key:
        return self._keys[kid or self.current_kid]

    def jwks(self) -> dict[str, Any]:
        """The public JWK set, as identity would serve it."""
        published = (key for kid, key in self._keys.items() if kid not in self._withdrawn)
        return {"keys": [key.as_dict(private=False) for key in published]}

    def jwks_cache(self) -> JWKSCache:
        return JWKSCache.from_static(self.jwks())

    def verifier(self, **kwargs: Any) -> TokenVerifier:
        """A ``TokenVerifier`` over a static copy of the current JWKS; ``kwargs`` override defaults."""
        options: dict[str, Any] = {
            "issuer": self.issuer,
            "audience": self.audience,
            "jwks": self.jwks_cache(),
            "clock": self.clock,
        }
        options.update(kwargs)
        return TokenVerifier(**options)

    def claims(
        self,
        sub: str = "user-1",
        *,
        kind: PrincipalKind = "user",
        admin: bool = False,
        memberships: Mapping[str, str] | None = None,
        scopes: Iterable[str] = (),
        client_id: str | None = None,
        project_ids: Iterable[str] | None = None,
        bmad_roles: Iterable[str] = (),
        name: str | None = None,
        ttl: int = 300,
        issued_at: int | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The claim set ``issue`` signs."""
        now = int(self.clock()) if issued_at is None else issued_at
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "kind": kind,
            "admin": admin,
            "memberships": dict(memberships or {}),
            "scope": " ".join(scopes),
        }
        if client_id is not None:
            claims["client_id"] = client_id
        if project_ids is not None:
            claims["project_ids"] = list(project_ids)
        roles = list(bmad_roles)
        if roles:
            claims["bmad_roles"] = roles
        if name is not None:
            claims["name"] = name
        return _merge(claims, extra_claims)

    def issue(
        self,
        sub: str = "user-1",
        *,
        kid: str | None = None,
        headers: Mapping[str, Any] | None = None,
        **claim_options: Any,
    ) -> str:
        """A signed compact JWT for ``sub``; ``claim_options`` are those of ``claims``."""
        return self.sign(self.claims(sub, **claim_options), kid=kid, headers=headers)

    def principal(self, sub: str = "user-1", **claim_options: Any) -> Principal:
        """The ``Principal`` a valid token with these claims yields (for unit tests without HTTP)."""
        claims = self.claims(sub, **claim_options)
        return Principal.from_claims(claims, self.sign(claims))

    def sign(
        self,
        claims: Mapping[str, Any] | bytes,
        *,
        kid: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign anything: the header defaults to ``{alg, typ: at+jwt, kid}`` and ``headers`` override it
        (a header ``alg`` picks the algorithm used, even one the key was not meant for)."""
        kid = kid or self.current_kid
        key = self._keys[kid]
        header = _merge({"alg": key.alg, "typ": "at+jwt", "kid": kid}, headers)
        payload = claims if isinstance(claims, bytes) else json.dumps(dict(claims)).encode()
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(payload)}"
        algorithm = JWSRegistry.algorithms[str(header.get("alg") or key.alg)]
        signature = algorithm.sign(signing_input.encode("ascii"), key)
        return f"{signing_input}.{b64url(signature)}"
