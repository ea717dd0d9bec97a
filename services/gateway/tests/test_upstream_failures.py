"""Upstreams that are down, slow, or break off: 502/504 or an aborted response, never a hang or a 500."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

TASKS = "/v1/tasks"


async def _drain(response: httpx.Response) -> int:
    received = 0
    async for chunk in response.aiter_raw():
        received += len(chunk)
    return received


async def test_upstream_down_is_502(start_gateway, auth, dead_url):
    server = start_gateway(workflows_url=dead_url)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        started = time.monotonic()
        response = await c.get(TASKS, headers=auth())
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "upstream_unavailable"
    assert time.monotonic() - started < 3


async def test_slow_upstream_is_504_within_the_read_timeout(client, auth):
    started = time.monotonic()
    response = await client.get(f"{TASKS}?mode=slow&delay=4", headers=auth())
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["code"] == "upstream_timeout"
    assert 0.9 <= elapsed < 2.5


async def test_small_answer_cut_off_mid_body_is_502(client, auth):
    """An answer small enough to be buffered can still become a clean 502."""
    started = time.monotonic()
    response = await client.get(f"{TASKS}?mode=close-mid-body&len=5000", headers=auth())
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_unavailable"
    assert time.monotonic() - started < 3


async def test_answer_cut_off_mid_stream_aborts_the_response(client, auth):
    started = time.monotonic()
    async with client.stream("GET", f"{TASKS}?mode=close-mid-body", headers=auth()) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            await _drain(response)
    assert time.monotonic() - started < 3


async def test_answer_stalled_mid_stream_is_aborted_after_the_read_timeout(client, auth):
    started = time.monotonic()
    async with client.stream("GET", f"{TASKS}?mode=stall-mid-body&delay=5", headers=auth()) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            await _drain(response)
    assert time.monotonic() - started < 3


class _SlammingServer:
    """Reads the request line, then closes the connection without answering; counts requests to /v1/tasks
    (the gateway's OpenAPI refresher also knocks)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> _SlammingServer:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                line = await asyncio.wait_for(reader.readline(), timeout=1)
                if b"/v1/tasks" in line:
                    self.connections += 1
            writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def test_idempotent_requests_are_retried_once_others_never(start_gateway, auth):
    async with _SlammingServer() as upstream:
        server = start_gateway(workflows_url=upstream.url)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            response = await c.get(TASKS, headers=auth())
            assert response.status_code == 502
            assert upstream.connections == 2
            response = await c.put(f"{TASKS}/1", headers=auth(), json={"a": 1})
            assert response.status_code == 502
            assert upstream.connections == 4
            response = await c.post(TASKS, headers=auth(), json={"a": 1})
            assert response.status_code == 502
            assert upstream.connections == 5
            response = await c.patch(f"{TASKS}/1", headers=auth(), json={"a": 1})
            assert response.status_code == 502
            assert upstream.connections == 6


class _RawServer:
    """Answers every request with fixed bytes, then closes the connection."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> _RawServer:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=2)
                writer.write(self.answer)
                await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def test_an_answer_delimited_by_connection_close_is_relayed(start_gateway, auth):
    async with _RawServer(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Upstream: raw\r\n\r\nhello until close"
    ) as raw:
        server = start_gateway(workflows_url=raw.url)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            response = await c.get(TASKS, headers=auth())
    assert response.status_code == 200
    assert response.content == b"hello until close"


@pytest.mark.parametrize(
    "answer", [b"this is not http\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort"]
)
async def test_a_broken_answer_is_502(start_gateway, auth, answer):
    async with _RawServer(answer) as raw:
        server = start_gateway(workflows_url=raw.url)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            response = await c.post(TASKS, headers=auth(), json={})
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_unavailable"
