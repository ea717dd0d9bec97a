"""``gateway.request_denied`` events: recorded on the request path, published in the background.

Two kinds of denial are recorded: the gateway's own refusals (401/403/429, reason = its problem code),
and a forwarded request that the upstream answered 401 or 403 (reason = the upstream's problem ``code``
when its answer is a small ``application/problem+json`` the proxy reads whole anyway, else
``upstream_<status>``: a streamed answer is never held back to find a reason).

``record`` is a non-blocking append to a bounded in-memory queue; when the queue is full the event is
dropped and counted (``dropped``), so a slow or absent NATS never slows a request. A background task
publishes batches to JetStream (stream ``BATON_GATEWAY``) with ``Nats-Msg-Id`` = event id, waiting for
the acks with a timeout; a batch that fails is counted (``failed``) and not retried. Events still queued
at shutdown get one last flush. These events are best effort: the gateway has no outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any, NamedTuple

import uuid_utils

from shared.events.catalog import schema_uri
from shared.events.gateway import RequestDenied
from shared.messaging.envelope import Actor, Envelope, to_nats
from shared.messaging.streams import ensure_stream

__all__ = ["PROBLEM_REASON_MAX_BYTES", "DenialPublisher", "Denied", "upstream_reason"]

log = logging.getLogger("gateway.denials")
_GATEWAY_ACTOR = Actor(subject="gateway", kind="service", name="gateway")
_ACK_TIMEOUT_SECONDS = 5.0
# An upstream problem body larger than this is not parsed for its code.
PROBLEM_REASON_MAX_BYTES = 4096
_PROBLEM_TYPE = b"application/problem+json"
_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class Denied(NamedTuple):
    """What the request path hands over: plain values, turned into an envelope off the hot path."""

    status: int
    reason: str
    method: str
    path: str
    route: str | None
    request_id: str
    subject: str | None
    kind: str | None
    client_id: str | None
    client_ip: str | None
    at: float


def upstream_reason(status: int, content_type: bytes | None, body: bytes | None) -> str:
    """The reason of an upstream's 401/403: the ``code`` of a small problem+json ``body`` when it is a
    plain identifier, else ``upstream_<status>``. ``body`` None: the answer was streamed, not read."""
    fallback = f"upstream_{status}"
    if body is None or content_type is None or len(body) > PROBLEM_REASON_MAX_BYTES:
        return fallback
    if content_type.partition(b";")[0].strip().lower() != _PROBLEM_TYPE:
        return fallback
    try:
        problem = json.loads(body)
    except ValueError:
        return fallback
    code = problem.get("code") if isinstance(problem, dict) else None
    if isinstance(code, str) and _CODE.fullmatch(code):
        return code
    return fallback


def envelope_for(denied: Denied) -> Envelope:
    data = RequestDenied(
        status=denied.status,  # type: ignore[arg-type]
        reason=denied.reason[:64],
        method=denied.method[:16],
        path=denied.path[:512],
        route=denied.route,
        request_id=denied.request_id[:128],
        subject=denied.subject,
        principal_kind=denied.kind,  # type: ignore[arg-type]
        client_ip=denied.client_ip,
        occurred_at=datetime.fromtimestamp(denied.at, UTC),
    )
    actor = _GATEWAY_ACTOR
    if denied.subject is not None and denied.kind in ("user", "agent"):
        actor = Actor(subject=denied.subject, kind=denied.kind)  # type: ignore[arg-type]
    return Envelope(
        id=str(uuid_utils.uuid7()),
        source="/baton/gateway",
        type=RequestDenied.event_type,
        subject=denied.request_id[:128],
        time=data.occurred_at,
        dataschema=schema_uri(RequestDenied.event_type),
        tenant=denied.client_id,
        actor=actor,
        data=data.model_dump(mode="json"),
    )


class DenialPublisher:
    def __init__(
        self,
        *,
        max_queue: int = 10_000,
        batch_size: int = 256,
        flush_seconds: float = 0.5,
        stream_replicas: int = 1,
    ) -> None:
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.stream_replicas = stream_replicas
        self._queue: deque[Denied] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._nc: Any = None
        self.published = 0
        self.dropped = 0
        self.failed = 0

    def record(self, denied: Denied) -> None:
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        self._queue.append(denied)
        if len(self._queue) >= self.batch_size:
            self._wakeup.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def stats(self) -> dict[str, int]:
        return {
            "queued": len(self._queue),
            "published": self.published,
            "dropped": self.dropped,
            "failed": self.failed,
        }

    def start(self, nc: Any) -> None:
        self._nc = nc
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="gateway-denials")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._task = None
        if self._queue and self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush(self._nc.jetstream()), timeout=2.0)

    async def _run(self) -> None:
        js = self._nc.jetstream()
        while True:
            try:
                await ensure_stream(js, "gateway", replicas=self.stream_replicas)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot declare stream BATON_GATEWAY yet: %s", type(exc).__name__)
                await asyncio.sleep(1.0)
        while True:
            if len(self._queue) < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self.flush_seconds)
            self._wakeup.clear()
            if self._queue:
                await self._flush(js)

    async def _flush(self, js: Any) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            futures: list[asyncio.Future[Any]] = []
            started = time.monotonic()
            try:
                for denied in batch:
                    subject, headers, body = to_nats(envelope_for(denied))
                    futures.append(await js.publish_async(subject, body, headers=headers))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("publishing denied-request events failed: %s", type(exc).__name__)
            if futures:
                done, pending = await asyncio.wait(futures, timeout=_ACK_TIMEOUT_SECONDS)
                for future in pending:
                    future.cancel()
                ok = sum(1 for f in done if not f.cancelled() and f.exception() is None)
                self.published += ok
                self.failed += len(batch) - ok
            else:
                self.failed += len(batch)
            log.debug("published %d denied-request events in %.3fs", len(batch), time.monotonic() - started)
