"""Real servers for the gateway tests.

- ``upstreams``: five echo servers (identity, projects, documents, workflows, audit), each a uvicorn
  server in a thread on its own port. Identity's also serves the test JWKS. Every echo answers with what it
  received (method, path, headers, body size and hash) and can misbehave on request (``?mode=``); it
  answers with the status ``?echo_status=`` asks for (``mode=problem``: as problem+json with ``?code=``).
- ``gateway``: the real gateway as a ``uvicorn gateway.main:build_app --factory`` subprocess, configured by
  environment variables only, talking to the echo servers, the test JWKS and the test NATS.
- ``start_gateway``: more gateways with other settings, in threads (``build_app(**overrides)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn

from shared.auth.testing import TokenFactory
from shared.embedded import free_port

UPSTREAM_NAMES = ("identity", "projects", "documents", "workflows", "audit")


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class ServerThread:
    """A uvicorn server for ``app`` in a background thread, on a fresh port."""

    def __init__(self, app: Any, *, lifespan: str = "auto") -> None:
        self.sock = _listening_socket()
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            lifespan=lifespan,
            log_level="critical",
            access_log=False,
            ws="none",
            proxy_headers=False,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server thread did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def echo_openapi(name: str) -> dict[str, Any]:
    """A small OpenAPI document per upstream: one routed path, one internal path, one shared schema."""
    name = name.split("#")[0]  # "workflows#2": a second endpoint of the same upstream
    routed = {
        "identity": "/v1/users/{user_id}",
        "projects": "/v1/projects/{project_id}",
        "documents": "/v1/search",
        "workflows": "/v1/tasks",
        "audit": "/v1/audit/entries",
    }[name]
    extra: dict[str, Any] = {}
    if name == "identity":
        extra["/v1/auth/login"] = {"post": {"summary": "Log in", "responses": {"200": {"description": "ok"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": name, "version": "1"},
        "paths": {
            **extra,
            routed: {
                "get": {
                    "summary": f"Read from {name} <b>",
                    "responses": {"200": {"description": "ok"}},
                    "parameters": [
                        {"name": "x", "in": "query", "schema": {"$ref": "#/components/schemas/Thing"}}
                    ],
                }
            },
            "/internal/debug": {"get": {"summary": "internal", "responses": {"200": {"description": "ok"}}}},
            "/healthz": {"get": {"summary": "health", "responses": {"200": {"description": "ok"}}}},
        },
        "components": {
            "schemas": {
                "Thing": {"type": "object", "title": f"Thing of {name}"},
                "HTTPValidationError": {"type": "object", "title": "HTTPValidationError"},
            }
        },
    }


def echo_app(name: str, jwks: Callable[[], dict[str, Any]] | None) -> Any:
    """A raw ASGI app that reports what it received; ``?mode=`` makes it misbehave."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
        mode = query.get("mode", "")
        digest = hashlib.sha256()
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        path = scope["path"]
        if path == "/.well-known/jwks.json" and jwks is not None:
            payload: Any = jwks()
        elif path == "/openapi.json":
            payload = echo_openapi(name)
        else:
            payload = {
                "upstream": name,
                "method": scope["method"],
                "path": path,
                "raw_path": scope["raw_path"].decode("latin-1"),
                "query": scope["query_string"].decode("latin-1"),
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
                "body_bytes": size,
                "body_sha256": digest.hexdigest(),
            }
        if mode == "slow":
            await asyncio.sleep(float(query.get("delay", "3")))
        base = [(b"x-upstream", name.encode()), (b"server", b"echo"), (b"connection", b"keep-alive")]
        base.append((b"x-user-secret", b"upstream-only"))
        if mode == "close-mid-body":
            length = query.get("len", "200000").encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*base, (b"content-length", length)],
                }
            )
            await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
            return  # uvicorn closes the connection: the body stays incomplete
        if mode == "stall-mid-body":
            await send({"type": "http.response.start", "status": 200, "headers": base})
            await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
            await asyncio.sleep(float(query.get("delay", "5")))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        status = int(query.get("echo_status", "200"))
        if mode == "big":
            total = int(query.get("size", "1000000"))
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [*base, (b"content-type", b"application/octet-stream")],
                }
            )
            sent = 0
            while sent < total:
                chunk = min(65536, total - sent)
                await send(
                    {"type": "http.response.body", "body": bytes([sent % 251]) * chunk, "more_body": True}
                )
                sent += chunk
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        content_type = b"application/json"
        if mode == "problem":  # an RFC 9457 answer with the ``code`` asked for
            code = query.get("code", "insufficient_role")
            payload = {"type": "about:blank", "title": "Refused", "status": status, "code": code}
            content_type = b"application/problem+json"
        body = json.dumps(payload).encode()
        headers = [
            *base,
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


@dataclass
class Upstreams:
    servers: dict[str, ServerThread]
    tokens: TokenFactory

    def url(self, name: str) -> str:
        return self.servers[name].url

    @property
    def jwks_url(self) -> str:
        return self.url("identity") + "/.well-known/jwks.json"

    def settings(self) -> dict[str, Any]:
        """Gateway settings pointing at these upstreams and this JWKS."""
        out: dict[str, Any] = {f"{n}_url": self.url(n) for n in UPSTREAM_NAMES}
        out.update(jwks_url=self.jwks_url, jwt_issuer=self.tokens.issuer, jwt_audience=self.tokens.audience)
        return out


@pytest.fixture(scope="session")
def tokens() -> TokenFactory:
    factory = TokenFactory()
    # Published from the start: a key added later is only seen after the JWKS refresh cooldown.
    factory.add_key("RS256", kid="test-rs256", current=False)
    return factory


@pytest.fixture(scope="session")
def rsa_kid(tokens: TokenFactory) -> str:
    return "test-rs256"


@pytest.fixture(scope="session")
def upstreams(tokens: TokenFactory) -> Iterator[Upstreams]:
    servers = {
        n: ServerThread(echo_app(n, tokens.jwks if n == "identity" else None)).start() for n in UPSTREAM_NAMES
    }
    try:
        yield Upstreams(servers, tokens)
    finally:
        for server in servers.values():
            server.stop()


@dataclass
class GatewayProcess:
    url: str
    process: subprocess.Popen[bytes]
    settings: dict[str, Any]


def _env_for(settings: dict[str, Any]) -> dict[str, str]:
    shared_names = {
        "jwks_url",
        "jwt_issuer",
        "jwt_audience",
        "nats_url",
        "max_body_bytes",
        "log_level",
        "environment",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    for key, value in settings.items():
        prefix = "BATON_" if key in shared_names else "BATON_GATEWAY_"
        env[prefix + key.upper()] = json.dumps(value) if isinstance(value, list) else str(value)
    return env


def wait_http(url: str, *, timeout: float = 20.0, expect: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | int | None = None
    while time.monotonic() < deadline:
        try:
            status = httpx.get(url, timeout=1.0).status_code
            if status in expect:
                return
            last = status
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{url} not available: {last!r}")


@pytest.fixture(scope="session")
def gateway(upstreams: Upstreams, nats_url: str) -> Iterator[GatewayProcess]:
    """The real gateway process. Rate limits off, 1 s read and connect timeouts."""
    settings = {
        **upstreams.settings(),
        "nats_url": nats_url,
        "read_timeout_seconds": 1.0,
        "connect_timeout_seconds": 1.0,
        "rate_per_ip": 0,
        "rate_per_principal": 0,
        "cors_allowed_origins": ["https://app.example"],
        "denied_flush_seconds": 0.1,
        "log_level": "WARNING",
    }
    # A port, not ``--fd``: uvicorn takes an inherited descriptor for a Unix socket and leaves Nagle on.
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "gateway.main:build_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--no-proxy-headers",
        "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=_env_for(settings))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/readyz")
        yield GatewayProcess(url=url, process=process, settings=settings)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def client(gateway: GatewayProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as c:
        yield c


@pytest.fixture
def start_gateway(upstreams: Upstreams) -> Iterator[Callable[..., ServerThread]]:
    """Start an in-thread gateway with ``build_app(**(upstream settings | overrides))``."""
    from gateway.main import build_app

    started: list[ServerThread] = []

    def start(**overrides: Any) -> ServerThread:
        settings = {
            **upstreams.settings(),
            "nats_url": "nats://127.0.0.1:1",
            "log_level": "WARNING",
            **overrides,
        }
        server = ServerThread(build_app(**settings), lifespan="on").start()
        started.append(server)
        wait_http(server.url + "/healthz")
        return server

    yield start
    for server in started:
        with contextlib.suppress(Exception):
            server.stop()


@pytest.fixture
def dead_url() -> str:
    """An http URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def auth(tokens: TokenFactory) -> Callable[..., dict[str, str]]:
    def headers(sub: str = "user-1", **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens.issue(sub, **claims)}"}

    return headers
