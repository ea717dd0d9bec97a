"""The gateway app: ``uvicorn gateway.main:build_app --factory --port 8000 --no-access-log --no-proxy-headers``.

Run it with ``--no-proxy-headers``: the gateway decides itself whom to believe about ``X-Forwarded-*``
(``BATON_GATEWAY_TRUSTED_PROXIES``); uvicorn's own handling would trust any local caller.

``GatewayApp`` is a FastAPI app whose entry point hands every HTTP request straight to ``GatewayProxy``,
a bare ASGI callable: the proxy path never goes through FastAPI's routing, middleware or per-request
telemetry. Only the gateway's own endpoints (``/healthz``, ``/readyz``, ``/openapi.json``, ``/docs``)
and the lifespan reach FastAPI. The gateway creates no span per proxied request; it forwards the
caller's ``traceparent`` unchanged, so the upstream's span continues the caller's trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.config import Settings
from gateway.docs import DOCS_CSP, render_docs
from gateway.proxy import GatewayProxy
from gateway.runtime import GatewayRuntime
from shared.errors import install_error_handlers, problem_response
from shared.health import HealthServer
from shared.metrics import Exposition, HttpMetrics
from shared.telemetry import configure_logging, configure_tracing

__all__ = ["GatewayApp", "build_app"]


class GatewayApp(FastAPI):
    """FastAPI for the lifespan and the gateway's own endpoints; ``GatewayProxy`` for everything HTTP."""

    proxy: ASGIApp  # GatewayProxy, its requests counted by HttpMetrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.proxy(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def serve_local(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def build_app(settings: Settings | None = None, **overrides: Any) -> GatewayApp:
    """The gateway; ``overrides`` are ``Settings`` fields (tests pass upstream URLs, limits, ...)."""
    if settings is None:
        settings = Settings(**overrides)
    elif overrides:
        settings = Settings(**{**settings.model_dump(), **overrides})
    configure_logging(settings.service_name, settings.log_level, json_logs=settings.log_json)
    configure_tracing(settings.service_name, otlp_endpoint=settings.otel_exporter_otlp_endpoint)
    runtime = GatewayRuntime(settings)
    registry = CollectorRegistry()
    exposition = Exposition(registry=registry)

    def route_of(scope: Scope) -> str:
        """The route table's pattern (``projects:/v1/projects/{project_id}``), never the raw path."""
        route, _ = runtime.table.resolve(scope["path"], scope["method"])
        return route.name if route is not None else "unmatched"

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        metrics_server = None
        if settings.metrics_port:
            metrics_server = HealthServer(
                settings.metrics_port, _readiness_of(runtime), metrics=exposition.render
            )
            await metrics_server.start()
        try:
            yield
        finally:
            if metrics_server is not None:
                await metrics_server.stop()
            with contextlib.suppress(Exception):
                await runtime.stop()

    app = GatewayApp(
        title="Baton gateway",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    install_error_handlers(app)

    @app.api_route("/healthz", methods=["GET", "HEAD"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/readyz", methods=["GET", "HEAD"], include_in_schema=False)
    async def readyz() -> Any:
        checks = runtime.readiness()
        details = {
            "not_before": "watching" if runtime.not_before.watching else "not watching",
            "denied_events": runtime.denials.stats(),
            "upstreams": runtime.upstream_state(),
        }
        if all(v == "ok" for v in checks.values()):
            return {"status": "ready", "checks": checks, **details}
        return problem_response(503, detail="Not ready", checks=checks, upstreams=details["upstreams"])

    @app.api_route("/openapi.json", methods=["GET", "HEAD"], include_in_schema=False)
    async def openapi() -> Response:
        return Response(await runtime.openapi.document(), media_type="application/json")

    @app.api_route("/docs", methods=["GET", "HEAD"], include_in_schema=False)
    async def docs() -> HTMLResponse:
        page = render_docs(await runtime.openapi.document_dict())
        return HTMLResponse(page, headers={"Content-Security-Policy": DOCS_CSP})

    app.proxy = HttpMetrics(GatewayProxy(app.serve_local, runtime), registry, route_of=route_of)
    return app


def _readiness_of(runtime: GatewayRuntime) -> Callable[[], Awaitable[dict[str, str]]]:
    async def readiness() -> dict[str, str]:
        return runtime.readiness()

    return readiness
