"""The identity HTTP service: ``uvicorn identity.main:build_app --factory --port 8001``."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from identity import tables as _tables  # noqa: F401 - every model registered before the first query
from identity.agents.router import router as agents_router
from identity.config import Settings
from identity.context import IdentityContext
from identity.external.issuer import ExternalIssuer
from identity.keys.router import router as keys_router
from identity.keys.service import ensure_signing_key
from identity.memberships.router import router as memberships_router
from identity.tokens.router import router as tokens_router
from identity.users.router import router as users_router
from shared.app import create_app
from shared.auth import JWKSCache, TokenVerifier
from shared.db import transaction

__all__ = ["build_app"]

# Identity verifies its own tokens against its own JWKS route, called in-process (no network hop).
_SELF_JWKS_URL = "http://identity.internal/.well-known/jwks.json"


def build_app(
    settings: Settings | None = None,
    *,
    external_transport: httpx.AsyncBaseTransport | None = None,
    context: IdentityContext | None = None,
    **overrides: Any,
) -> FastAPI:
    """The app. ``overrides`` go to ``shared.app.create_app`` (tests pass ``engine=``, ``use_nats=False``,
    ``token_verifier=``); ``external_transport`` reaches the external issuer's JWKS (tests)."""
    settings = settings or Settings()
    ctx = context or IdentityContext.from_settings(settings)
    if ctx.external is None:
        ctx.external = ExternalIssuer.from_settings(settings, transport=external_transport)

    async def ensure_key(app: FastAPI) -> None:
        async with transaction(app.state.resources.session_factory) as session:
            await ensure_signing_key(session, ctx.keyring, settings)

    async def close_clients(_app: FastAPI) -> None:
        if ctx.external is not None:
            await ctx.external.aclose()

    overrides.setdefault("use_nats", False)  # the HTTP side never publishes: the worker's relay does
    app = create_app(
        settings,
        [tokens_router, keys_router, users_router, memberships_router, agents_router],
        title="Baton identity",
        on_startup=[ensure_key, *overrides.pop("on_startup", ())],
        on_shutdown=[close_clients, *overrides.pop("on_shutdown", ())],
        **overrides,
    )
    app.state.identity = ctx
    if app.state.token_verifier is None:
        jwks = JWKSCache(
            _SELF_JWKS_URL,
            cache_seconds=settings.jwks_cache_seconds,
            refresh_cooldown_seconds=1.0,
            stale_max_seconds=settings.jwks_stale_max_seconds,
            transport=httpx.ASGITransport(app),
        )
        app.state.token_verifier = TokenVerifier(settings, jwks=jwks)
    return app
