"""A tiny HTTP endpoint for probes and metrics, apart from any public port.

Kubernetes probes a worker on ``BATON_WORKER_HEALTH_PORT``: ``/healthz`` answers while the event loop
runs; ``/readyz`` answers 200 only when the given check passes (e.g. database and NATS reachable);
``/metrics`` answers Prometheus when the server is given a ``metrics`` renderer (``shared.metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

__all__ = ["HealthServer"]

ReadyCheck = Callable[[], Awaitable[dict[str, str]]]
MetricsRender = Callable[[], Awaitable[bytes]]
_JSON = "application/json"
_METRICS = CONTENT_TYPE_PLAIN_0_0_4  # the text generate_latest writes


class HealthServer:
    def __init__(
        self,
        port: int,
        ready: ReadyCheck | None = None,
        host: str = "0.0.0.0",
        *,
        metrics: MetricsRender | None = None,
    ) -> None:
        self.port = port
        self.host = host
        self.ready = ready
        self.metrics = metrics
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            status, content_type, payload = await self._respond(path.split("?", 1)[0])
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _respond(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics" and self.metrics is not None:
            return 200, _METRICS, await self.metrics()
        status, body = await self._answer(path)
        return status, _JSON, json.dumps(body).encode()

    async def _answer(self, path: str) -> tuple[int, dict[str, object]]:
        if path == "/healthz":
            return 200, {"status": "ok"}
        if path == "/readyz":
            checks: dict[str, str] = {}
            if self.ready is not None:
                try:
                    checks = await asyncio.wait_for(self.ready(), timeout=3)
                except Exception as exc:
                    checks = {"check": f"failed: {type(exc).__name__}"}
            ok = all(v == "ok" for v in checks.values())
            return (200 if ok else 503), {"status": "ready" if ok else "unready", "checks": checks}
        return 404, {"status": "not found"}
