"""Everything the gateway keeps between requests, and its background work.

Started by the app's lifespan: the upstream client pool; a NATS connection (retried in the background,
so the gateway starts even while NATS is down), which feeds the not-before watcher and the denied-request
publisher; the JWKS warm-up (retried until identity answers); the OpenAPI refresher.
Ready (``/readyz``) once the JWKS has been loaded at least once and NATS is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gateway.balancer import Endpoints
from gateway.config import Settings
from gateway.denials import DenialPublisher
from gateway.headers import ClientAddress, CorsPolicy, security_headers
from gateway.notbefore import NotBeforeStore
from gateway.openapi import OpenAPIAggregator
from gateway.ratelimit import TokenBuckets
from gateway.routes import RouteTable
from gateway.upstream import UpstreamClient
from shared.auth.jwks import JWKSCache
from shared.auth.verify import TokenVerifier

__all__ = ["GatewayRuntime"]

log = logging.getLogger("gateway.runtime")


class GatewayRuntime:
    def __init__(self, settings: Settings, *, table: RouteTable | None = None) -> None:
        self.settings = settings
        self.table = table or RouteTable()
        self.upstreams = {
            name: Endpoints(name, urls, eject_seconds=settings.eject_seconds)
            for name, urls in settings.upstream_urls().items()
        }
        missing = self.table.upstreams() - self.upstreams.keys()
        if missing:
            raise ValueError(f"the route table names upstreams without a URL setting: {sorted(missing)}")
        self.not_before = NotBeforeStore(settings.not_before_bucket)
        # Not-before is checked by the proxy once the token is verified (``NotBeforeStore.revokes``).
        self.verifier = TokenVerifier(
            settings, jwks=JWKSCache.from_settings(settings), cache_size=settings.token_cache_size
        )
        self.ip_buckets = TokenBuckets(
            settings.rate_per_ip, settings.burst_per_ip, max_keys=settings.rate_limit_max_keys
        )
        self.principal_buckets = TokenBuckets(
            settings.rate_per_principal, settings.burst_per_principal, max_keys=settings.rate_limit_max_keys
        )
        self.addresses = ClientAddress(settings.trusted_proxies)
        self.cors = CorsPolicy(
            settings.cors_allowed_origins,
            allow_credentials=settings.cors_allow_credentials,
            max_age=settings.cors_max_age_seconds,
        )
        self.security_always, self.security_https = security_headers(settings.hsts_seconds)
        self.client = UpstreamClient(
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            pool_size=settings.pool_size,
            keepalive_seconds=settings.keepalive_seconds,
        )
        self.denials = DenialPublisher(
            max_queue=settings.denied_queue_size,
            batch_size=settings.denied_batch_size,
            flush_seconds=settings.denied_flush_seconds,
            stream_replicas=settings.nats_stream_replicas,
        )
        self.openapi = OpenAPIAggregator(
            self.client,
            self.table,
            self.upstreams,
            refresh_seconds=settings.openapi_refresh_seconds,
            timeout_seconds=settings.openapi_fetch_timeout_seconds,
        )
        self.nats: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def jwks_loaded(self) -> bool:
        return bool(self.verifier.jwks.kids())

    def upstream_state(self) -> dict[str, dict[str, Any]]:
        return {name: endpoints.state() for name, endpoints in self.upstreams.items()}

    def readiness(self) -> dict[str, str]:
        return {
            "jwks": "ok" if self.jwks_loaded else "not loaded",
            "nats": "ok" if self.nats is not None and self.nats.is_connected else "unavailable",
        }

    async def start(self) -> None:
        await self.client.start()
        self._tasks = [
            asyncio.create_task(self._connect_nats(), name="gateway-nats"),
            asyncio.create_task(self._warm_jwks(), name="gateway-jwks"),
        ]
        self.openapi.start()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        await self.openapi.stop()
        await self.not_before.stop()
        await self.denials.stop()
        if self.nats is not None:
            with contextlib.suppress(Exception):
                await self.nats.close()
            self.nats = None
        await self.verifier.aclose()
        await self.client.close()

    async def _warm_jwks(self) -> None:
        delay = 0.5
        while not await self.verifier.jwks.refresh():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _connect_nats(self) -> None:
        import nats

        async def on_error(exc: Exception) -> None:
            log.warning("nats: %s", type(exc).__name__)

        async def on_reconnected() -> None:
            self.not_before.restart()

        while True:
            try:
                self.nats = await nats.connect(
                    self.settings.nats_url,
                    name="gateway",
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    error_cb=on_error,
                    reconnected_cb=on_reconnected,
                )
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot connect to NATS yet: %s", type(exc).__name__)
                await asyncio.sleep(1.0)
        self.not_before.start(self.nats)
        self.denials.start(self.nats)
