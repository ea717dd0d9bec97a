"""Imports every model, so ``Base.metadata`` describes the whole schema (migrations check, tests)."""

from __future__ import annotations

from identity.agents.models import Agent
from identity.database import MESSAGING, Base
from identity.keys.models import SigningKey
from identity.memberships.models import KnownClient, Membership
from identity.tokens.models import LoginFailure, RefreshToken
from identity.users.models import User

__all__ = [
    "MESSAGING",
    "Agent",
    "Base",
    "KnownClient",
    "LoginFailure",
    "Membership",
    "RefreshToken",
    "SigningKey",
    "User",
    "metadata",
]

metadata = Base.metadata
