"""Who is calling: the verified identity a service authorizes against.

Access-token layout (identity issues exactly this; every service reads it through ``Principal``):

Header::

    {"typ": "at+jwt", "alg": "Ed25519" | "RS256", "kid": "<key id in the issuer's JWKS>"}

Claims::

    iss          str     the issuer, compared exactly (``BATON_JWT_ISSUER``)
    aud          str | [str]  must contain ``BATON_JWT_AUDIENCE``
    sub          str     user or agent id
    exp, iat     int     NumericDate; ``nbf`` optional
    jti          str     token id (logging, revocation)
    kind         "user" | "agent"
    admin        bool    platform admin (optional, default false)
    memberships  {client_id: role}   role in product_owner, member, viewer, auditor (optional)
    scope        str     space-separated OAuth2 scopes, RFC 8693 style (optional)
    client_id    str     agents only: the one client (tenant) the agent belongs to; required for agents
    project_ids  [str]   agents only, optional: the projects the agent is narrowed to (absent = all)
    bmad_roles   [str]   optional BMAD roles (analyst, pm, architect, po, sm, dev, qa, ux-expert)
    name         str     optional display name

``client_id`` and ``project_ids`` are ignored on user tokens: a user's reach comes from memberships only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from shared.auth.exceptions import InvalidToken

__all__ = [
    "BMAD_ROLES",
    "CLIENT_ROLES",
    "ClientRole",
    "Principal",
    "PrincipalKind",
]

PrincipalKind = Literal["user", "agent"]
ClientRole = Literal["product_owner", "member", "viewer", "auditor"]
CLIENT_ROLES: Final = frozenset({"product_owner", "member", "viewer", "auditor"})
BMAD_ROLES: Final = frozenset({"analyst", "pm", "architect", "po", "sm", "dev", "qa", "ux-expert"})


def _malformed(claim: str) -> InvalidToken:
    return InvalidToken(f"The token claim '{claim}' is malformed")


def _str(claims: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise _malformed(name)
    return value


def _str_list(claims: Mapping[str, Any], name: str) -> frozenset[str] | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _malformed(name)
    return frozenset(value)


def _timestamp(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _malformed(name)
    return int(value)


def _memberships(claims: Mapping[str, Any]) -> dict[str, str]:
    value = claims.get("memberships")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _malformed("memberships")
    for client_id, role in value.items():
        if not isinstance(client_id, str) or not client_id or not isinstance(role, str):
            raise _malformed("memberships")
    return dict(value)


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller. Build it with ``from_claims`` (or ``TokenFactory`` in tests)."""

    subject: str
    kind: PrincipalKind
    token_id: str
    issued_at: int
    expires_at: int
    raw_token: str = field(repr=False, compare=False)
    is_admin: bool = False
    memberships: dict[str, str] = field(default_factory=dict, hash=False)
    scopes: frozenset[str] = frozenset()
    client_id: str | None = None
    project_ids: frozenset[str] | None = None
    bmad_roles: frozenset[str] = frozenset()
    display_name: str | None = None

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], raw_token: str) -> Principal:
        """Map already-verified claims to a principal; a malformed claim raises ``InvalidToken``."""
        kind = claims.get("kind")
        if kind != "user" and kind != "agent":
            raise _malformed("kind")
        admin = claims.get("admin", False)
        if not isinstance(admin, bool):
            raise _malformed("admin")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise _malformed("scope")
        client_id = _str(claims, "client_id", required=kind == "agent")
        project_ids = _str_list(claims, "project_ids")
        return cls(
            subject=_str(claims, "sub", required=True) or "",
            kind=kind,
            token_id=_str(claims, "jti", required=True) or "",
            issued_at=_timestamp(claims, "iat"),
            expires_at=_timestamp(claims, "exp"),
            raw_token=raw_token,
            is_admin=admin,
            memberships=_memberships(claims),
            scopes=frozenset(scope.split()),
            client_id=client_id if kind == "agent" else None,
            project_ids=project_ids if kind == "agent" else None,
            bmad_roles=_str_list(claims, "bmad_roles") or frozenset(),
            display_name=_str(claims, "name", required=False),
        )

    @property
    def is_agent(self) -> bool:
        return self.kind == "agent"

    def role_in(self, client_id: str) -> str | None:
        """The principal's membership role in ``client_id``, or None without a membership."""
        return self.memberships.get(client_id)

    def can_read_client(self, client_id: str) -> bool:
        """May see that the client exists and read within it (the role decides what, per service).

        Admins, members with a known role, and agents belonging to that client.
        """
        if self.is_admin:
            return True
        if self.role_in(client_id) in CLIENT_ROLES:
            return True
        return self.kind == "agent" and self.client_id == client_id

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def has_scopes(self, *scopes: str) -> bool:
        return all(s in self.scopes for s in scopes)

    def can_access_project(self, client_id: str, project_id: str) -> bool:
        """Reach a project of ``client_id``: client-wide for users, narrowed by ``project_ids`` for agents."""
        if self.is_admin:
            return True
        if not self.can_read_client(client_id):
            return False
        if self.kind == "agent" and self.project_ids is not None:
            return project_id in self.project_ids
        return True
