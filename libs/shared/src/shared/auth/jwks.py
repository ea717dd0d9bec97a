"""The issuer's public signing keys (JWKS), fetched over HTTP and cached.

Contract:
- a fresh set (younger than ``cache_seconds``) is served from memory without locking;
- an unknown ``kid`` or an expired set triggers a fetch, but at most one per ``refresh_cooldown_seconds``
  (a flood of made-up ``kid`` values costs the issuer one request per cooldown); concurrent callers
  wait on one ``asyncio.Lock`` and share that fetch;
- while the issuer cannot be reached the last good set keeps being served until
  ``stale_max_seconds`` after the last successful fetch; after that verification fails closed
  (``KeySetUnavailable``);
- ``url`` may list several URLs separated by commas (the replicas of an issuer with nothing in front of
  them): a fetch tries them in turn, starting with the one that answered last, until one serves a set;
- symmetric (``oct``) keys, encryption keys, keys without ``kid`` and ``kid`` values that appear twice
  are never used, so a JWKS can never enable HMAC verification or an ambiguous lookup.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from joserfc.jwk import JWKRegistry, Key

from shared.auth.exceptions import InvalidToken, KeySetUnavailable

if TYPE_CHECKING:
    from shared.settings import BaseServiceSettings

__all__ = ["MAX_JWKS_BYTES", "JWKSCache", "parse_jwks"]

log = logging.getLogger("shared.auth.jwks")

# A JWKS with a handful of RSA keys is a few KiB; anything near this is not a key set.
MAX_JWKS_BYTES = 256 * 1024


def _verification_key(entry: Mapping[str, Any]) -> Key | None:
    if entry.get("kty") == "oct":
        return None
    use = entry.get("use")
    if use is not None and use != "sig":
        return None
    ops = entry.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    try:
        key = JWKRegistry.import_key(dict(entry))
        if key.is_private:
            public = {k: v for k, v in key.as_dict(private=False).items() if k != "key_ops"}
            key = JWKRegistry.import_key(public)
    except Exception:  # untrusted input: any parse failure means "not a usable key"
        return None
    return key


def parse_jwks(document: object) -> dict[str, Key]:
    """Public verification keys of a JWK set by ``kid``; raises ``ValueError`` if it is not a set."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set")
    keys: dict[str, Key] = {}
    duplicates: set[str] = set()
    for entry in document["keys"]:
        if not isinstance(entry, Mapping):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if kid in keys or kid in duplicates:
            duplicates.add(kid)
            keys.pop(kid, None)
            continue
        key = _verification_key(entry)
        if key is not None:
            keys[kid] = key
    if duplicates:
        log.warning("JWKS lists %d kid value(s) more than once; those keys are ignored", len(duplicates))
    return keys


class JWKSCache:
    """Keys by ``kid`` for ``TokenVerifier``. Use ``from_settings`` in services, ``from_static`` for a
    fixed set (tests, or identity verifying its own tokens)."""

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float = 300,
        refresh_cooldown_seconds: float = 30.0,
        stale_max_seconds: float = 3600,
        timeout_seconds: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._urls = tuple(part.strip() for part in url.split(","))
        for part in self._urls:
            if not part.startswith(("https://", "http://")):
                raise ValueError(f"jwks url must be an http(s) URL: {part!r}")
        self._url = self._urls[0]  # the one that answered last
        self._cache_seconds = cache_seconds
        self._cooldown = refresh_cooldown_seconds
        self._stale_max = stale_max_seconds
        self._timeout = timeout_seconds
        self._transport = transport
        self._client = client
        self._owns_client = client is None
        self._clock = clock
        self._lock = asyncio.Lock()
        self._keys: dict[str, Key] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._static = False

    @classmethod
    def from_settings(
        cls,
        settings: BaseServiceSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> JWKSCache:
        return cls(
            settings.jwks_url,
            cache_seconds=settings.jwks_cache_seconds,
            refresh_cooldown_seconds=settings.jwks_refresh_cooldown_seconds,
            stale_max_seconds=settings.jwks_stale_max_seconds,
            transport=transport,
            client=client,
        )

    @classmethod
    def from_static(cls, jwks: Mapping[str, Any]) -> JWKSCache:
        """A fixed key set that is never fetched nor expires. Private members are dropped."""
        keys = parse_jwks(jwks)
        if not keys:
            raise ValueError("the key set has no usable verification key")
        cache = cls("http://static.invalid/jwks.json")
        cache._keys = keys
        cache._static = True
        return cache

    @property
    def url(self) -> str:
        """The URL that served the set last (the first listed before any fetch)."""
        return self._url

    def kids(self) -> frozenset[str]:
        """The ``kid`` values currently cached (for diagnostics)."""
        return frozenset(self._keys)

    async def get_key(self, kid: str) -> Key:
        """The verification key for ``kid``; ``InvalidToken`` if unknown, ``KeySetUnavailable`` if
        the set is too stale to trust."""
        key = self._keys.get(kid)
        if key is not None and (self._static or self._is_fresh(self._clock())):
            return key
        if self._static:
            raise InvalidToken("The token signing key is unknown")
        async with self._lock:
            now = self._clock()
            if not (kid in self._keys and self._is_fresh(now)) and self._cooldown_over(now):
                await self._fetch()
                now = self._clock()
            if not self._is_usable(now):
                raise KeySetUnavailable()
            key = self._keys.get(kid)
            if key is None:
                raise InvalidToken("The token signing key is unknown")
            return key

    async def refresh(self) -> bool:
        """Fetch now, ignoring the cooldown (warm-up at startup). Returns whether it succeeded."""
        if self._static:
            return True
        async with self._lock:
            return await self._fetch()

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> JWKSCache:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _is_fresh(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self._cache_seconds

    def _is_usable(self, now: float) -> bool:
        if not self._keys or self._fetched_at is None:
            return False
        age = now - self._fetched_at
        return age < self._cache_seconds or age <= self._stale_max

    def _cooldown_over(self, now: float) -> bool:
        return self._last_attempt is None or now - self._last_attempt >= self._cooldown

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(transport=self._transport, timeout=self._timeout)
            self._owns_client = True
        return self._client

    async def _fetch(self) -> bool:
        """One fetch; keeps the previous set on any failure. Caller holds the lock."""
        self._last_attempt = self._clock()
        start = self._urls.index(self._url)
        for url in (*self._urls[start:], *self._urls[:start]):
            try:
                body = await self._download(url)
                keys = parse_jwks(orjson.loads(body))
                if not keys:
                    raise ValueError("no usable verification key")
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("JWKS fetch from %s failed: %s", url, type(exc).__name__)
                continue
            self._keys = keys
            self._fetched_at = self._clock()
            self._url = url
            log.info("JWKS fetched from %s: %d key(s)", url, len(keys))
            return True
        return False

    async def _download(self, url: str) -> bytes:
        headers = {"Accept": "application/jwk-set+json, application/json"}
        async with self._http().stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                raise ValueError(f"unexpected status {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("key set too large")
            return bytes(body)
