"""A small keep-alive HTTP/1.1 client for the upstream services: asyncio protocols + the httptools parser.

Why not a general client: on the proxy path the per-request CPU of the client is most of the gateway's
cost (see ``bench/gateway.py``), and the gateway needs little: send bytes it already has, parse a response
head, hand body chunks on. Headers stay bytes end to end; bodies are never decoded or decompressed;
redirects pass through; no cookies; HTTP/1.1 only (upstreams are uvicorn).

- One pool per upstream ``host:port``: at most ``pool_size`` requests in flight (more wait for a slot),
  idle connections reused newest first and dropped after ``keepalive_seconds`` (keep it below the
  upstream's own idle timeout: uvicorn closes after 5 s).
- Timeouts: ``connect_timeout`` to open a connection; ``read_timeout`` for the response head and for every
  later body chunk (a stalled upstream can never hang a request).
- Failures are ``UpstreamFailure``: ``timeout`` (504) or ``unavailable`` (502). ``retryable`` means the
  request certainly was not processed (no connection, or the connection closed before any byte of
  a response), so an idempotent request may be sent again. ``unsent`` means no connection was made, so
  not a byte of the request left: any request may go to another endpoint.
- Flow control both ways: request bodies wait for the socket to drain; response bodies pause reading
  while more than 1 MiB is buffered and unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import AsyncIterable
from typing import Literal, cast
from urllib.parse import urlsplit

import httptools

__all__ = ["UpstreamClient", "UpstreamFailure", "UpstreamResponse"]

Header = tuple[bytes, bytes]
_HIGH_WATER = 1024 * 1024
_LOW_WATER = 256 * 1024
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})


class UpstreamFailure(Exception):
    def __init__(
        self,
        kind: Literal["unavailable", "timeout"],
        detail: str,
        *,
        retryable: bool,
        unsent: bool = False,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.retryable = retryable or unsent
        self.unsent = unsent


def _unavailable(detail: str, *, retryable: bool = False, unsent: bool = False) -> UpstreamFailure:
    return UpstreamFailure("unavailable", detail, retryable=retryable, unsent=unsent)


def _timeout(detail: str, *, retryable: bool = False, unsent: bool = False) -> UpstreamFailure:
    return UpstreamFailure("timeout", detail, retryable=retryable, unsent=unsent)


def _expire(future: asyncio.Future[None], detail: str) -> None:
    if not future.done():
        future.set_exception(_timeout(detail))


async def _wait(future: asyncio.Future[None], timeout: float, detail: str) -> None:
    """Await ``future``; if it is not done within ``timeout`` it fails with a timeout ``UpstreamFailure``.
    (A timer on the future itself: cheaper than ``wait_for`` + ``shield`` on every request.)"""
    if future.done():
        future.result()
        return
    handle = asyncio.get_running_loop().call_later(timeout, _expire, future, detail)
    try:
        await future
    finally:
        handle.cancel()


class UpstreamResponse:
    """A response whose head has arrived. Read the body with ``readany``/``read``, then ``release``
    (connection back to the pool) or ``close`` (connection dropped). Both are idempotent."""

    def __init__(self, conn: _Connection, read_timeout: float, head_request: bool) -> None:
        self._conn = conn
        self._read_timeout = read_timeout
        self._head_request = head_request
        self.status = 0
        self.raw_headers: list[Header] = []
        self.content_length: int | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._done = False
        self._error: UpstreamFailure | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._finished = False
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.received_any = False
        # Neither Content-Length nor chunked: the body ends when the upstream closes the connection.
        self.until_close = False

    # --- fed by the connection --------------------------------------------------------------------
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_head(self, status: int, headers: list[Header]) -> None:
        self.status = status
        self.raw_headers = headers
        chunked = False
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length" and value.isdigit():
                self.content_length = int(value)
            elif lower == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if self._head_request or status in (204, 304):
            self._done = True  # no body follows, whatever the headers say
        else:
            self.until_close = self.content_length is None and not chunked
        if not self.head.done():
            self.head.set_result(None)

    def _on_body(self, data: bytes) -> None:
        if self._done:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._paused:
            self._paused = True
            self._conn.pause_reading()
        self._wake()

    def _on_complete(self) -> None:
        self._done = True
        self._wake()

    def _on_error(self, error: UpstreamFailure) -> None:
        if not self._done:
            self._error = error
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: the waiter may have gone
        self._wake()

    # --- used by the proxy ---------------------------------------------------------------------------
    async def readany(self) -> bytes:
        """The next body chunk; ``b""`` at the end. Raises ``UpstreamFailure`` if the upstream breaks
        off or stays silent longer than the read timeout."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered < _LOW_WATER:
                    self._paused = False
                    self._conn.resume_reading()
                return chunk
            if self._done:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await _wait(
                    self._waiter, self._read_timeout, "The upstream service stopped sending its answer"
                )
            except UpstreamFailure as failure:
                self._error = failure
                self.close()
                raise
            finally:
                self._waiter = None

    async def read(self) -> bytes:
        parts: list[bytes] = []
        while chunk := await self.readany():
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._conn.finish(reusable=self._done and self._error is None and not self._head_request)

    def close(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._conn.finish(reusable=False)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; serves one request at a time."""

    def __init__(self, pool: _HostPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.response: UpstreamResponse | None = None
        self._headers: list[Header] = []
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._keep_alive = True

    # --- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # nothing was asked: a confused upstream
            self.abort()
            return
        response.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            response._on_error(_unavailable("The upstream service sent an invalid answer"))
            self.abort()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002 - the cause does not matter
        self.closed = True
        self._can_write.set()
        response = self.response
        if response is not None and response.until_close and response.head.done():
            response._on_complete()
        elif response is not None and not response._done:
            retryable = not response.received_any
            response._on_error(
                _unavailable("The upstream service closed the connection", retryable=retryable)
            )

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # --- httptools callbacks -----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        headers, self._headers = self._headers, []
        if status < 200 or self.response is None:
            return  # 1xx: another head follows
        self._keep_alive = self.parser.should_keep_alive()
        self.response._on_head(status, headers)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._on_body(body)

    def on_message_complete(self) -> None:
        if self.response is not None and self.response.status >= 200:
            self.response._on_complete()

    # --- used by the pool and the response ---------------------------------------------------------
    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def write(self, data: bytes, timeout: float) -> None:
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            raise ConnectionResetError("connection closed")
        transport.write(data)
        if not self._can_write.is_set():
            await asyncio.wait_for(self._can_write.wait(), timeout)
            if self.closed:
                raise ConnectionResetError("connection closed")

    def finish(self, *, reusable: bool) -> None:
        self.response = None
        if reusable and self._keep_alive and not self.closed:
            self.pool.put(self)
        else:
            self.abort()
            self.pool.release_slot()


class _HostPool:
    def __init__(
        self, host: str, port: int, netloc: str, size: int, keepalive: float, connect_timeout: float
    ) -> None:
        self.host = host
        self.port = port
        self.hostport = netloc.encode("idna")
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(size)

    async def acquire(self) -> _Connection:
        """A connection for one request (holding a slot until ``finish``)."""
        await self.slots.acquire()
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive:
                return conn
            conn.abort()
        try:
            loop = asyncio.get_running_loop()
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port),
                self.connect_timeout,
            )
        except TimeoutError:
            self.slots.release()
            raise _timeout(
                "The upstream service did not accept the connection in time", unsent=True
            ) from None
        except OSError:
            self.slots.release()
            raise _unavailable("The upstream service is unreachable", unsent=True) from None
        except BaseException:
            self.slots.release()
            raise
        return protocol

    def put(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        self.slots.release()

    def release_slot(self) -> None:
        self.slots.release()

    def close(self) -> None:
        for conn in self.idle:
            conn.abort()
        self.idle.clear()


class UpstreamClient:
    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        pool_size: int,
        keepalive_seconds: float,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.pool_size = pool_size
        self.keepalive_seconds = keepalive_seconds
        self._pools: dict[str, _HostPool] = {}

    async def start(self) -> None:
        """Nothing to open ahead: connections are made on demand."""

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def pool(self, base_url: str) -> _HostPool:
        """The pool of an ``http://host:port`` base URL."""
        pool = self._pools.get(base_url)
        if pool is None:
            parts = urlsplit(base_url)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(f"upstream URLs must be http://host[:port]: {base_url!r}")
            pool = _HostPool(
                parts.hostname,
                parts.port or 80,
                parts.netloc,
                self.pool_size,
                self.keepalive_seconds,
                self.connect_timeout,
            )
            self._pools[base_url] = pool
        return pool

    async def send(
        self,
        base_url: str,
        method: bytes,
        target: bytes,
        headers: list[Header],
        body: bytes | AsyncIterable[bytes] | None,
        *,
        content_length: int | None = None,
    ) -> UpstreamResponse:
        """Send one request; returns once the response head has arrived. ``target`` is the raw path and
        query; ``headers`` must not contain Host, Content-Length or Transfer-Encoding."""
        pool = self.pool(base_url)
        conn = await pool.acquire()
        response = UpstreamResponse(conn, self.read_timeout, head_request=method == b"HEAD")
        conn.response = response
        lines = [method, b" ", target, b" HTTP/1.1\r\nhost: ", pool.hostport, b"\r\n"]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        stream = None if body is None or isinstance(body, bytes) else body
        streamed = stream is not None
        if isinstance(body, bytes):
            lines += (b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body)
        elif streamed and content_length is not None:
            lines += (b"content-length: ", str(content_length).encode(), b"\r\n\r\n")
        elif streamed:
            lines.append(b"transfer-encoding: chunked\r\n\r\n")
        elif method in _BODY_METHODS:
            lines.append(b"content-length: 0\r\n\r\n")
        else:
            lines.append(b"\r\n")
        try:
            await conn.write(b"".join(lines), self.read_timeout)
            if stream is not None:
                await self._stream(conn, stream, chunked=content_length is None)
            await _wait(response.head, self.read_timeout, "The upstream service did not answer in time")
        except TimeoutError:
            response.close()
            raise _timeout("The upstream service did not answer in time") from None
        except UpstreamFailure:
            response.close()
            raise
        except (ConnectionError, OSError):
            if response.head.done() and response.head.exception() is None:
                return response  # it answered before it stopped reading (e.g. an early 413)
            response.close()
            raise _unavailable(
                "The upstream service closed the connection", retryable=not response.received_any
            ) from None
        except BaseException:
            response.close()
            raise
        return response

    async def _stream(self, conn: _Connection, body: AsyncIterable[bytes], *, chunked: bool) -> None:
        async for chunk in body:
            if conn.response is not None and conn.response.head.done():
                return  # the upstream answered early; the rest of the body is not needed
            if not chunk:
                continue
            if chunked:
                await conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk), self.read_timeout)
            else:
                await conn.write(chunk, self.read_timeout)
        if chunked:
            await conn.write(b"0\r\n\r\n", self.read_timeout)

    async def get(self, url: str, *, timeout: float, max_bytes: int) -> bytes | None:
        """A small GET for the gateway's own use (OpenAPI documents); None on any failure."""
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            async with asyncio.timeout(timeout):
                response = await self.send(
                    base, b"GET", target.encode(), [(b"accept", b"application/json")], None
                )
                try:
                    if response.status != 200:
                        return None
                    body = bytearray()
                    while chunk := await response.readany():
                        body += chunk
                        if len(body) > max_bytes:
                            return None
                    return bytes(body)
                finally:
                    response.release()
        except (UpstreamFailure, TimeoutError, OSError, ValueError):
            return None
