"""What request handlers need besides the session: settings, the password hasher, the key ring and the
optional external issuer. Built once per app (``main.build_app``) and kept on ``app.state.identity``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from identity.config import Settings
from identity.keys.service import KeyRing
from identity.users.passwords import PasswordHasher

if TYPE_CHECKING:
    from identity.external.issuer import ExternalIssuer

__all__ = ["ContextDep", "IdentityContext", "get_context"]


@dataclass
class IdentityContext:
    settings: Settings
    hasher: PasswordHasher
    keyring: KeyRing
    external: ExternalIssuer | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> IdentityContext:
        return cls(
            settings=settings,
            hasher=PasswordHasher.from_settings(settings),
            keyring=KeyRing.from_settings(settings),
        )


def get_context(request: Request) -> IdentityContext:
    ctx = request.app.state.identity
    assert isinstance(ctx, IdentityContext)
    return ctx


ContextDep = Annotated[IdentityContext, Depends(get_context)]
