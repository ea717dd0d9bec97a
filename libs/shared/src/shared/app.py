"""``create_app``: the one way a Baton service builds its FastAPI application.

It wires the database engine, the NATS connection, token verification, error rendering, request ids,
tracing of incoming requests, a body-size limit, the ``/healthz`` / ``/readyz`` probes, and request
metrics served to Prometheus on ``BATON_METRICS_PORT`` (a port of its own, never the API's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.db import create_engine, create_session_factory
from shared.errors import install_error_handlers, problem_response
from shared.health import HealthServer
from shared.metrics import Exposition, HttpMetrics
from shared.settings import BaseServiceSettings
from shared.telemetry import configure_logging, configure_tracing, request_id_var

__all__ = ["AppResources", "BodySizeLimit", "RequestContext", "create_app"]

log = logging.getLogger("shared.app")
Hook = Callable[[FastAPI], Awaitable[None]]


@dataclass
class AppResources:
    """What the lifespan opened; kept on ``app.state.resources``."""

    engine: AsyncEngine | None = None
    session_factory: async_sessionmaker[AsyncSession] | None = None
    nats: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class RequestContext:
    """ASGI middleware: request id (kept or generated), a SERVER span continuing an incoming ``traceparent``."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.tracer = trace.get_tracer(f"baton.{service}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id") or str(uuid.uuid4())
        if len(rid) > 128:
            rid = rid[:128]
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)
        ctx = propagate.extract(headers)

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            with self.tracer.start_as_current_span(
                f"{scope['method']} {scope['path']}", context=ctx, kind=SpanKind.SERVER
            ) as span:
                span.set_attribute("http.request.method", scope["method"])
                span.set_attribute("url.path", scope["path"])
                span.set_attribute("baton.request_id", rid)
                try:
                    await self.app(scope, receive, send_with_id)
                except Exception as exc:
                    # Rendered here rather than by Starlette's outermost handler, so the 500 carries the
                    # request id header too; the traceback goes to the log, never to the client.
                    span.record_exception(exc)
                    log.error("unhandled error on %s %s", scope["method"], scope["path"], exc_info=exc)
                    if started:
                        raise
                    from starlette.requests import Request

                    response = problem_response(
                        500, detail="An unexpected error occurred", request=Request(scope, receive)
                    )
                    await response(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodySizeLimit:
    """Refuses bodies over ``max_bytes`` while they stream in (413), by Content-Length or by counting."""

    def __init__(self, app: ASGIApp, max_bytes: int, *, exempt: Callable[[str], bool] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exempt is not None and self.exempt(scope["path"])):
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.max_bytes:
                await self._reject(scope, receive, send)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.requests import Request

        response = problem_response(
            413, detail=f"Request body exceeds {self.max_bytes} bytes", request=Request(scope, receive)
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


async def _check_database(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("select 1"))


def create_app(
    settings: BaseServiceSettings,
    routers: Sequence[APIRouter] = (),
    *,
    title: str | None = None,
    version: str = "0.1.0",
    use_database: bool = True,
    use_nats: bool = True,
    token_verifier: Any = None,
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
    engine: AsyncEngine | None = None,
    configure_observability: bool = True,
) -> FastAPI:
    """Build a service's app. ``engine`` may be given (tests bind a fresh schema); otherwise one is made."""
    if configure_observability:
        configure_logging(settings.service_name, settings.log_level, json_logs=settings.log_json)
        configure_tracing(settings.service_name, otlp_endpoint=settings.otel_exporter_otlp_endpoint)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        res: AppResources = app.state.resources
        if use_database and res.engine is None:
            res.engine = create_engine(
                settings.database_url, schema=settings.schema_name, pool_size=settings.database_pool_size
            )
        if res.engine is not None:
            res.session_factory = create_session_factory(res.engine)
        if use_nats:
            res.nats = await _connect_nats(settings.nats_url, settings.service_name)
        if app.state.token_verifier is None:
            from shared.auth import TokenVerifier

            app.state.token_verifier = TokenVerifier.from_settings(settings)
        for hook in on_startup:
            await hook(app)
        metrics_server = None
        if settings.metrics_port:
            metrics_server = HealthServer(
                settings.metrics_port, lambda: _readiness(app), metrics=exposition.render
            )
            await metrics_server.start()
        try:
            yield
        finally:
            if metrics_server is not None:
                await metrics_server.stop()
            for hook in on_shutdown:
                with contextlib.suppress(Exception):
                    await hook(app)
            verifier = app.state.token_verifier
            if verifier is not None and hasattr(verifier, "aclose"):
                with contextlib.suppress(Exception):
                    await verifier.aclose()
            if res.nats is not None:
                with contextlib.suppress(Exception):
                    await res.nats.close()
            if res.engine is not None and engine is None:
                await res.engine.dispose()

    app = FastAPI(title=title or f"Baton {settings.service_name}", version=version, lifespan=lifespan)
    app.state.settings = settings
    app.state.resources = AppResources(engine=engine)
    app.state.token_verifier = token_verifier
    install_error_handlers(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Any:
        checks = await _readiness(app)
        ready = all(v == "ok" for v in checks.values())
        if ready:
            return {"status": "ready", "checks": checks}
        return problem_response(503, detail="Not ready", checks=checks)

    for router in routers:
        app.include_router(router)
    registry = CollectorRegistry()
    exposition = Exposition(registry=registry)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext, service=settings.service_name)
    app.add_middleware(HttpMetrics, registry=registry)
    app.state.use_nats = use_nats
    return app


async def _readiness(app: FastAPI) -> dict[str, str]:
    """``/readyz``'s checks: the database answers, NATS is connected (those the app uses)."""
    res: AppResources = app.state.resources
    checks: dict[str, str] = {}
    if res.engine is not None:
        try:
            await asyncio.wait_for(_check_database(res.engine), timeout=2.0)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
    if app.state.use_nats:
        nc = res.nats
        checks["nats"] = "ok" if nc is not None and nc.is_connected else "unavailable"
    return checks


async def _connect_nats(url: str, name: str) -> Any:
    import nats

    async def on_error(exc: Exception) -> None:
        log.warning("nats: %s", exc)

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        allow_reconnect=True,
        error_cb=on_error,
        connect_timeout=2,
    )
