"""The proxy path: a bare ASGI callable in front of the gateway's small FastAPI app.

Per request, in this order (cheapest refusals first): header parsing and path sanity (400), route lookup
(404/405), CORS preflight, per-IP token bucket (429), bearer token verification unless the route is public
(401), per-principal token bucket (429), body limit (413), then forwarding with a keep-alive client.
Routes the gateway serves itself (``/healthz``, ``/readyz``, ``/openapi.json``, ``/docs``) go to the inner
app. Refusals with 401/403/429, and upstream answers 401/403 to forwarded requests, are recorded as
``gateway.request_denied`` events (non-blocking; see ``gateway.denials``). A token refused by the subject's
not-before (``token_revoked``) is refused after verification, so its event names the subject.

Bodies: a request body with a Content-Length up to ``buffer_bytes`` is read whole (and so an idempotent
request can be retried once if the connection fails); larger or chunked ones are streamed to the upstream
while counted against the limit. Responses up to ``buffer_bytes`` are read whole (a failure is still a
clean 502/504); larger or unsized ones are streamed, and if the upstream fails mid-body the client's
response is cut off (never completed, never a hang: every upstream read has the read timeout).

Upstreams with several endpoints (``gateway.balancer``): requests take turns; a request whose connection
could not be made goes on to the next endpoint, whatever its method, since nothing of it was sent.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.denials import Denied, upstream_reason
from gateway.headers import Inbound, parse_inbound, response_headers
from gateway.problems import MethodNotAllowed, send_error, send_problem
from gateway.routes import GATEWAY, Route
from gateway.runtime import GatewayRuntime
from gateway.upstream import UpstreamFailure, UpstreamResponse
from shared.auth.exceptions import InvalidToken
from shared.errors import (
    BadRequest,
    BatonError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = ["GatewayProxy"]

log = logging.getLogger("gateway.proxy")
Header = tuple[bytes, bytes]
# fail(error, route=None, principal=None): render a problem (and record a denial for 401/403/429).
Fail = Callable[..., Awaitable[None]]
# denied(status, reason): record that the upstream refused the forwarded request.
UpstreamDenied = Callable[[int, str], None]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Encoded separators or NUL in the raw path, dot segments / empty segments / control characters decoded:
# the upstream would see a different path than the one routed here.
_BAD_RAW_PATH = re.compile(rb"%(?:2[fF]|5[cC]|00)")
_BAD_PATH = re.compile(r"(?:^|/)\.{1,2}(?:/|$)|//|[\x00-\x1f\x7f\\]")
_BEARER = b"bearer"


class _BodyAbort(Exception):
    """The request body cannot be forwarded: too large, or the client went away."""

    def __init__(self, too_large: bool) -> None:
        super().__init__("request body aborted")
        self.too_large = too_large


class _RequestBody:
    """Streams the ASGI request body to the upstream, enforcing the limit while counting."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self.error: _BodyAbort | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        while True:
            message = await self._receive()
            if message["type"] != "http.request":
                self.error = _BodyAbort(too_large=False)
                raise self.error
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self._limit:
                self.error = _BodyAbort(too_large=True)
                raise self.error
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


async def _read_body(receive: Receive, limit: int) -> bytes:
    parts: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _BodyAbort(too_large=False)
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise _BodyAbort(too_large=True)
        parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


class GatewayProxy:
    def __init__(self, app: ASGIApp, runtime: GatewayRuntime) -> None:
        self.app = app
        self.rt = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._handle(scope, receive, tracked_send)
        except Exception:
            log.exception("gateway error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                rid = str(scope.get("state", {}).get("request_id", "")).encode()
                await send_problem(
                    send,
                    500,
                    "internal_error",
                    "Internal server error",
                    "An unexpected error occurred",
                    path=scope["path"],
                    request_id=rid,
                    headers=[(b"x-request-id", rid), *self.rt.security_always],
                )

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        rt = self.rt
        path: str = scope["path"]
        method: str = scope["method"]
        inbound = parse_inbound(scope["headers"])
        rid = inbound.request_id or os.urandom(16).hex().encode()
        scope.setdefault("state", {})["request_id"] = rid.decode("latin-1")
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        client_ip, proto, xff = rt.addresses.resolve(
            peer, scope.get("scheme", "http"), inbound.forwarded_for, inbound.forwarded_proto
        )
        out_headers = [(b"x-request-id", rid), *rt.security_always]
        if proto == "https":
            out_headers.extend(rt.security_https)
        preflight = inbound.cors_preflight and method == "OPTIONS" and inbound.origin is not None
        if inbound.origin is not None and not preflight:
            out_headers.extend(rt.cors.response_headers(inbound.origin))
        head = method == "HEAD"

        async def fail(error: BatonError, route: Route | None = None, principal: object = None) -> None:
            if error.status in (401, 403, 429):
                self._record_denial(
                    error.status, error.instance_code, method, path, route, rid, principal, client_ip
                )
            await send_error(send, error, path=path, request_id=rid, headers=out_headers, head_only=head)

        raw_path: bytes = scope.get("raw_path") or path.encode()
        if inbound.invalid or _BAD_PATH.search(path) or _BAD_RAW_PATH.search(raw_path):
            await fail(BadRequest(inbound.invalid or "The request path is not acceptable"))
            return

        if preflight:
            await self._preflight(inbound, path, send, out_headers, fail)
            return

        route, allowed = rt.table.resolve(path, method)
        if route is None:
            if allowed:
                allow = ", ".join(sorted(allowed))
                await fail(MethodNotAllowed(headers={"Allow": allow}))
            else:
                await fail(NotFound("No such route"))
            return

        if route.upstream == GATEWAY:
            await self._serve_local(scope, receive, send, out_headers)
            return

        wait = rt.ip_buckets.take(client_ip)
        if wait:
            await fail(RateLimited("Too many requests from this address", retry_after=_ceil(wait)), route)
            return

        principal = None
        if not route.public:
            try:
                principal = await rt.verifier.verify(_bearer(inbound))
            except BatonError as exc:
                await fail(exc, route)
                return
            if rt.not_before.revokes(principal.subject, principal.issued_at):
                await fail(InvalidToken("The token has been revoked", code="token_revoked"), route, principal)
                return
            wait = rt.principal_buckets.take(principal.subject)
            if wait:
                await fail(RateLimited(retry_after=_ceil(wait)), route, principal)
                return

        limit = rt.settings.upload_max_body_bytes if route.large_body else rt.settings.max_body_bytes
        length = inbound.content_length
        if length is not None and length > limit:
            await fail(PayloadTooLarge(f"Request body exceeds {limit} bytes"), route)
            return

        body: bytes | _RequestBody | None = None
        content_length: int | None = None
        forward = inbound.forward
        if inbound.chunked or (length is not None and length > rt.settings.buffer_bytes):
            body = _RequestBody(receive, limit)
            content_length = None if inbound.chunked else length
        elif length:
            try:
                body = await _read_body(receive, limit)
            except _BodyAbort as exc:
                if exc.too_large:
                    await fail(PayloadTooLarge(f"Request body exceeds {limit} bytes"), route)
                return
        forward.append((b"x-request-id", rid))
        forward.append((b"x-forwarded-for", xff.encode("latin-1")))
        forward.append((b"x-forwarded-proto", proto.encode("latin-1")))
        if inbound.host is not None:
            forward.append((b"x-forwarded-host", inbound.host))
        query: bytes = scope.get("query_string", b"")
        target = raw_path + b"?" + query if query else raw_path

        response = await self._send_upstream(method, route, target, forward, body, content_length, fail)
        if response is None:
            return

        def denied(status: int, reason: str) -> None:
            self._record_denial(status, reason, method, path, route, rid, principal, client_ip)

        try:
            await self._relay_response(response, method, send, out_headers, fail, route, denied)
        finally:
            response.close()  # no-op once released

    async def _send_upstream(
        self,
        method: str,
        route: Route,
        target: bytes,
        forward: list[Header],
        body: bytes | _RequestBody | None,
        content_length: int | None,
        fail: Fail,
    ) -> UpstreamResponse | None:
        # A request no endpoint received goes to the next one, whatever its method; one that may have
        # been received is sent once more only when idempotent and its body can be sent again.
        endpoints = self.rt.upstreams[route.upstream]
        order = endpoints.order()
        resend = method in IDEMPOTENT and not isinstance(body, _RequestBody)
        refused: set[str] = set()
        index = 0
        while True:
            base_url = order[index]
            try:
                response = await self.rt.client.send(
                    base_url, method.encode(), target, forward, body, content_length=content_length
                )
            except _BodyAbort as abort:
                if abort.too_large:
                    await fail(PayloadTooLarge("The request body is too large"), route)
                return None  # the client went away: nobody to answer
            except UpstreamFailure as failure:
                if isinstance(body, _RequestBody) and body.error is not None:
                    if body.error.too_large:
                        await fail(PayloadTooLarge("The request body is too large"), route)
                    return None
                if failure.unsent:
                    endpoints.failed(base_url)
                    refused.add(base_url)
                    if index + 1 < len(order):
                        index += 1
                        continue
                if failure.retryable and resend:
                    resend = False
                    index = _resend_index(order, index, refused)
                    log.info("retrying %s %s once: %s", method, route.pattern, failure.detail)
                    continue
                log.warning("upstream %s failed: %s", route.upstream, failure.detail)
                if failure.kind == "timeout":
                    await fail(UpstreamTimeout(failure.detail), route)
                else:
                    await fail(UpstreamUnavailable(failure.detail), route)
                return None
            endpoints.succeeded(base_url)
            return response

    async def _relay_response(
        self,
        response: UpstreamResponse,
        method: str,
        send: Send,
        out_headers: list[Header],
        fail: Fail,
        route: Route,
        denied: UpstreamDenied,
    ) -> None:
        rt = self.rt
        headers, names = response_headers(response.raw_headers)
        for name, value in out_headers:
            if name not in names or name == b"x-request-id" or name == b"vary":
                headers.append((name, value))
        status = response.status
        length = response.content_length
        refused = status in (401, 403)
        if (
            method == "HEAD"
            or status in (204, 304)
            or (length is not None and length <= rt.settings.buffer_bytes)
        ):
            try:
                data = await response.read()
            except UpstreamFailure as failure:
                log.warning("upstream %s broke off its answer: %s", route.upstream, failure.detail)
                if failure.kind == "timeout":
                    await fail(
                        UpstreamTimeout("The upstream service did not finish its answer in time"), route
                    )
                else:
                    await fail(UpstreamUnavailable("The upstream service broke off its answer"), route)
                return
            response.release()
            if refused:
                denied(status, upstream_reason(status, _content_type(response.raw_headers), data))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": data})
            return
        if refused:
            denied(status, upstream_reason(status, None, None))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        try:
            while chunk := await response.readany():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamFailure as failure:
            # Too late for a status: the client's response stays incomplete and the connection closes.
            log.warning("upstream %s broke off a streamed answer: %s", route.upstream, failure.detail)
            return
        response.release()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _serve_local(self, scope: Scope, receive: Receive, send: Send, extra: list[Header]) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend((n, v) for n, v in extra if n not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _preflight(
        self, inbound: Inbound, path: str, send: Send, out_headers: list[Header], fail: Fail
    ) -> None:
        rt = self.rt
        assert inbound.origin is not None
        if not rt.cors.origins or not rt.cors.allows(inbound.origin):
            await fail(Forbidden("This origin is not allowed", code="cors_origin_not_allowed"))
            return
        route, allowed = rt.table.resolve(path, "OPTIONS")
        if route is None and not allowed:
            await fail(NotFound("No such route"))
            return
        headers = [*out_headers, *rt.cors.preflight_headers(inbound.origin, inbound.cors_request_headers)]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def _record_denial(
        self,
        status: int,
        reason: str,
        method: str,
        path: str,
        route: Route | None,
        rid: bytes,
        principal: object,
        client_ip: str,
    ) -> None:
        subject = getattr(principal, "subject", None)
        kind = getattr(principal, "kind", None)
        client_id = getattr(principal, "client_id", None)
        self.rt.denials.record(
            Denied(
                status=status,
                reason=reason,
                method=method,
                path=path,
                route=route.name if route is not None else None,
                request_id=rid.decode("latin-1"),
                subject=subject,
                kind=kind,
                client_id=client_id,
                client_ip=client_ip,
                at=time.time(),
            )
        )


def _ceil(seconds: float) -> int:
    return max(1, int(seconds + 0.999))


def _content_type(raw_headers: Sequence[Header]) -> bytes | None:
    for name, value in raw_headers:
        if name.lower() == b"content-type":
            return value
    return None


def _bearer(inbound: Inbound) -> str:
    """The bearer credential; ``Unauthorized`` when absent or not exactly one ``Bearer <token>``."""
    values = inbound.authorization
    if not values:
        raise Unauthorized("A bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    scheme, _, credential = values[0].strip().partition(b" ")
    credential = credential.strip()
    if len(values) > 1 or scheme.lower() != _BEARER or not credential or b" " in credential:
        raise Unauthorized(
            "The Authorization header must be 'Bearer <token>'",
            code="invalid_authorization_header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return credential.decode("latin-1")


def _resend_index(order: Sequence[str], current: int, refused: set[str]) -> int:
    """Where a request that may have been received is sent once more: the next endpoint that did not refuse
    its connection, else the one it was sent to."""
    for step in range(1, len(order) + 1):
        index = (current + step) % len(order)
        if order[index] not in refused:
            return index
    return current
