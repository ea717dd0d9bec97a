"""Events published by the identity service (stream ``BATON_IDENTITY``, subjects ``baton.identity.>``).

``not_before`` fields are epoch seconds: access tokens of that subject issued (``iat``) before it are no
longer accepted. Identity writes the same value to the NATS KV bucket ``baton_not_before`` (key = the
subject id, value = the decimal seconds), where the gateway reads it. No event carries password,
secret or token material.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from shared.events.catalog import Event, register

__all__ = [
    "AgentCreated",
    "AgentDisabled",
    "AgentSecretRotated",
    "AgentUpdated",
    "LoginFailed",
    "MembershipGranted",
    "MembershipRevoked",
    "RefreshTokenReused",
    "SigningKeyRotated",
    "TokenIssued",
    "UserCreated",
    "UserDisabled",
    "UserUpdated",
]

ClientRole = Literal["product_owner", "member", "viewer", "auditor"]
GrantType = Literal["password", "refresh_token", "client_credentials", "token_exchange"]


@register
class UserCreated(Event):
    """A user account was created (by an admin, by the first-run bootstrap, or from the external issuer)."""

    event_type: ClassVar[str] = "baton.identity.user.created.v1"
    user_id: UUID
    email: str
    display_name: str
    is_admin: bool
    origin: Literal["admin", "bootstrap", "external"] = "admin"


@register
class UserUpdated(Event):
    """A user's profile, admin flag or status changed (``changed`` names the fields). ``not_before`` is
    set when the change alters what the user's tokens claim (admin flag, re-enabling)."""

    event_type: ClassVar[str] = "baton.identity.user.updated.v1"
    user_id: UUID
    changed: list[str]
    not_before: int | None = None


@register
class UserDisabled(Event):
    """A user was disabled: refresh tokens revoked; access tokens issued before ``not_before`` refused."""

    event_type: ClassVar[str] = "baton.identity.user.disabled.v1"
    user_id: UUID
    not_before: int


@register
class AgentCreated(Event):
    """An agent (machine client) was created for a client; its secret was shown once and is not here."""

    event_type: ClassVar[str] = "baton.identity.agent.created.v1"
    agent_id: UUID
    client_id: UUID
    name: str
    scopes: list[str]
    project_ids: list[UUID] | None = None
    bmad_roles: list[str] = Field(default_factory=list)


@register
class AgentUpdated(Event):
    """An agent's name, scopes, projects, BMAD roles or status changed (``changed`` names the fields)."""

    event_type: ClassVar[str] = "baton.identity.agent.updated.v1"
    agent_id: UUID
    client_id: UUID
    changed: list[str]
    not_before: int | None = None


@register
class AgentSecretRotated(Event):
    """An agent got a new secret; the old one stopped working and tokens issued before are refused."""

    event_type: ClassVar[str] = "baton.identity.agent.secret_rotated.v1"
    agent_id: UUID
    client_id: UUID
    not_before: int


@register
class AgentDisabled(Event):
    """An agent was disabled or deleted (``reason``), or its client was deleted."""

    event_type: ClassVar[str] = "baton.identity.agent.disabled.v1"
    agent_id: UUID
    client_id: UUID
    not_before: int
    reason: Literal["disabled", "deleted", "client_deleted"] = "disabled"


@register
class MembershipGranted(Event):
    """A user got a role in a client, or their role changed (``previous_role`` set, and ``not_before``
    so that tokens carrying the old role are refused)."""

    event_type: ClassVar[str] = "baton.identity.membership.granted.v1"
    user_id: UUID
    client_id: UUID
    role: ClientRole
    previous_role: ClientRole | None = None
    not_before: int | None = None


@register
class MembershipRevoked(Event):
    """A user lost their role in a client (removed, or the client was deleted)."""

    event_type: ClassVar[str] = "baton.identity.membership.revoked.v1"
    user_id: UUID
    client_id: UUID
    role: ClientRole
    not_before: int
    reason: Literal["removed", "client_deleted"] = "removed"


@register
class LoginFailed(Event):
    """An authentication attempt failed. ``user_id`` / ``agent_id`` only when the account exists; no
    email, password, secret or token is recorded."""

    event_type: ClassVar[str] = "baton.identity.auth.login_failed.v1"
    grant: GrantType
    reason: str
    user_id: UUID | None = None
    agent_id: UUID | None = None
    client_ip: str | None = None


@register
class TokenIssued(Event):
    """An access token was issued (``jti`` identifies it; the token itself is not here)."""

    event_type: ClassVar[str] = "baton.identity.auth.token_issued.v1"
    subject: str
    kind: Literal["user", "agent"]
    grant: GrantType
    jti: str
    issued_at: int
    expires_at: int
    kid: str
    client_id: UUID | None = None
    scope: str = ""


@register
class RefreshTokenReused(Event):
    """An already rotated refresh token was presented again: its whole family was revoked."""

    event_type: ClassVar[str] = "baton.identity.auth.refresh_reused.v1"
    user_id: UUID
    family_id: UUID
    client_ip: str | None = None


@register
class SigningKeyRotated(Event):
    """A new signing key was generated; it signs from ``signs_from`` and replaces ``previous_kid``."""

    event_type: ClassVar[str] = "baton.identity.signing_key.rotated.v1"
    kid: str
    algorithm: str
    signs_from: int
    previous_kid: str | None = None
