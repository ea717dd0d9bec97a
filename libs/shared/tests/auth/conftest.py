"""Fixtures for the auth tests: a token factory, a fake monotonic clock and a stand-in issuer whose
JWKS endpoint is an ``httpx.MockTransport`` that records every request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from shared.auth import JWKSCache, TokenVerifier
from shared.auth.testing import TokenFactory

JWKS_URL = "http://identity.test/.well-known/jwks.json"


class FakeClock:
    def __init__(self, now: float = 10_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Issuer:
    """Serves ``tokens.jwks()`` at JWKS_URL; can be taken down or made slow; records all requests."""

    def __init__(self, tokens: TokenFactory) -> None:
        self.tokens = tokens
        self.requests: list[httpx.Request] = []
        self.down = False
        self.delay = 0.0
        self.response: httpx.Response | None = None

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if str(request.url) != JWKS_URL:
            return httpx.Response(404)
        if self.down:
            raise httpx.ConnectError("issuer down", request=request)
        if self.response is not None:
            return self.response
        return httpx.Response(200, json=self.tokens.jwks())

    @property
    def fetches(self) -> int:
        return sum(1 for r in self.requests if str(r.url) == JWKS_URL)

    @property
    def urls(self) -> set[str]:
        return {str(r.url) for r in self.requests}

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def issuer(tokens: TokenFactory) -> Issuer:
    return Issuer(tokens)


@pytest.fixture
async def jwks_cache(issuer: Issuer, clock: FakeClock) -> AsyncIterator[JWKSCache]:
    cache = JWKSCache(
        JWKS_URL,
        cache_seconds=300,
        refresh_cooldown_seconds=30,
        stale_max_seconds=3600,
        transport=issuer.transport(),
        clock=clock,
    )
    async with cache:
        yield cache


@pytest.fixture
def remote_verifier(tokens: TokenFactory, jwks_cache: JWKSCache) -> TokenVerifier:
    """A verifier that fetches the JWKS from the stand-in issuer."""
    return TokenVerifier(issuer=tokens.issuer, audience=tokens.audience, jwks=jwks_cache)


@pytest.fixture
def verifier(tokens: TokenFactory) -> TokenVerifier:
    """A verifier over a static copy of the factory's JWKS."""
    return tokens.verifier()
