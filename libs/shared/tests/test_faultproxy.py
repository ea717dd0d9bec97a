"""The system tests' fault proxy: each mode does what the fault tests count on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from shared.embedded import free_port
from shared.testing.faultproxy import FaultProxy, ProxyProcess


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = await FaultProxy("127.0.0.1", port).start()
    yield proxy
    await proxy.close()
    server.close()


async def _round_trip(proxy: FaultProxy, payload: bytes = b"ping") -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
    started = time.monotonic()
    writer.write(payload)
    data = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    elapsed = time.monotonic() - started
    writer.close()
    return data, elapsed


async def _send_and_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), 5)


async def test_pass_forwards_both_ways(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 1024  # larger than one chunk
    data, _ = await _round_trip(proxy, payload)
    assert data == payload


async def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    _, fast = await _round_trip(proxy)
    proxy.set_mode("latency", 150)
    _, slow = await _round_trip(proxy)
    assert slow >= 0.3 - 0.02  # there and back
    assert slow > fast + 0.2


async def test_reset_aborts_open_and_new_connections(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
    writer.write(b"hello")
    assert await reader.readexactly(5) == b"hello"
    proxy.set_mode("reset")
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await _send_and_read(reader, writer, b"again")
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await _send_and_read(reader2, writer2, b"new")
    assert proxy.resets == 2
    proxy.set_mode("pass")
    assert (await _round_trip(proxy))[0] == b"ping"


async def test_blackhole_holds_everything_then_delivers_it_in_order(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
    writer.write(b"before")
    assert await reader.readexactly(6) == b"before"
    proxy.set_mode("blackhole")
    writer.write(b"during-1 ")
    writer.write(b"during-2")
    await writer.drain()
    late = asyncio.create_task(_round_trip(proxy, b"new connection"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(1), 0.5)
    assert not late.done()
    proxy.set_mode("pass")
    assert await asyncio.wait_for(reader.readexactly(17), 5) == b"during-1 during-2"
    assert (await asyncio.wait_for(late, 5))[0] == b"new connection"
    writer.close()


async def test_proxy_process_is_switched_through_its_stdin() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proc = await asyncio.to_thread(ProxyProcess("127.0.0.1", port, free_port()).start)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.listen_port)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        await asyncio.to_thread(proc.set, "reset")
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await _send_and_read(reader, writer, b"y")
        with pytest.raises(RuntimeError):
            await asyncio.to_thread(proc.set, "melt")
    finally:
        proc.stop()
        server.close()
