"""A small TCP proxy that can misbehave on command: the network faults of the system tests.

Put it between the platform and a backing server (Postgres, NATS) and switch its mode:

- ``pass``: bytes flow both ways untouched;
- ``latency <ms>``: every chunk waits ``ms`` milliseconds before it is forwarded (both directions);
- ``reset``: every open connection is aborted with a TCP RST on both sides, and so is every connection
  accepted while the mode lasts;
- ``blackhole``: nothing is forwarded and nothing is read (the peers' kernels buffer, then their writes
  block), and new connections are accepted but not connected onward; a healed partition: back in ``pass``
  everything held flows on, nothing is lost or reordered.

Loopback only. In a process of its own (``python -m shared.testing.faultproxy --listen P --target H:P``,
one command per line on stdin; ``ProxyProcess`` drives it) so that a busy test process never slows the
platform's traffic down, or in-process (``FaultProxy``) for unit tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field

__all__ = ["FaultProxy", "ProxyProcess"]

_CHUNK = 64 * 1024


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a RST instead of a FIN (linger on, timeout 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        _abort(self.client)
        if self.server is not None:
            _abort(self.server)
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """Forwards ``127.0.0.1:<listen_port>`` to ``target_host:target_port`` in the current mode."""

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.listen_port = listen_port
        self.mode = "pass"
        self.latency = 0.0
        self.connections = 0  # accepted so far
        self.resets = 0  # connections aborted by ``reset``
        self._pairs: set[_Pair] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pair in list(self._pairs):
            pair.abort()
        self._pairs.clear()

    def set_mode(self, mode: str, latency_ms: float = 0.0) -> None:
        if mode not in ("pass", "latency", "reset", "blackhole"):
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.latency = latency_ms / 1000.0 if mode == "latency" else 0.0
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode == "reset":
            for pair in list(self._pairs):
                self._reset(pair)

    def _reset(self, pair: _Pair) -> None:
        self.resets += 1
        self._pairs.discard(pair)
        pair.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        pair = _Pair(writer)
        if self.mode == "reset":
            self._reset(pair)
            return
        self._pairs.add(pair)
        try:
            await self._flowing.wait()  # a blackhole holds new connections too
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                self._pairs.discard(pair)
                _abort(writer)
                return
            pair.server = up_writer
            if pair not in self._pairs:  # reset while connecting
                _abort(up_writer)
                return
            pair.tasks = [
                asyncio.create_task(self._pipe(reader, up_writer, pair)),
                asyncio.create_task(self._pipe(up_reader, writer, pair)),
            ]
            await asyncio.gather(*pair.tasks, return_exceptions=True)
        finally:
            self._pairs.discard(pair)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, pair: _Pair) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await src.read(_CHUNK)
                if not data:
                    break
                if self.latency:
                    await asyncio.sleep(self.latency)
                await self._flowing.wait()  # read just before a blackhole began: hold it
                dst.write(data)
                await dst.drain()
            with contextlib.suppress(OSError):
                if dst.can_write_eof():
                    dst.write_eof()
        except (OSError, asyncio.IncompleteReadError):
            pair.abort()


class ProxyProcess:
    """A ``FaultProxy`` in a child process, switched by writing commands to its stdin."""

    def __init__(self, target_host: str, target_port: int, listen_port: int) -> None:
        self.listen_port = listen_port
        self.target = (target_host, target_port)
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 10.0) -> ProxyProcess:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "shared.testing.faultproxy", "--listen", str(self.listen_port),
             "--target", f"{self.target[0]}:{self.target[1]}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # "listening <port>" once the socket is bound
        if not line.startswith("listening"):
            self.stop()
            raise RuntimeError(f"fault proxy did not start: {line!r}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.listen_port), 1):
                return self
            time.sleep(0.05)
        raise RuntimeError("fault proxy is not accepting connections")

    @property
    def url_host(self) -> str:
        return f"127.0.0.1:{self.listen_port}"

    def set(self, mode: str, latency_ms: float = 0.0) -> None:
        """Switch mode; returns once the proxy has applied it."""
        assert self._proc is not None
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(f"{mode} {latency_ms}\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().strip()
        if answer != f"ok {mode}":
            raise RuntimeError(f"fault proxy refused {mode!r}: {answer!r}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _serve(listen: int, target: str) -> None:
    host, _, port = target.rpartition(":")
    proxy = await FaultProxy(host, int(port), listen).start()
    _say(f"listening {proxy.listen_port}")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        words = line.decode().split()
        if not words:
            continue
        try:
            proxy.set_mode(words[0], float(words[1]) if len(words) > 1 else 0.0)
        except ValueError as exc:
            _say(f"error {exc}")
        else:
            _say(f"ok {words[0]}")
    await proxy.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", required=True, help="host:port")
    args = parser.parse_args()
    asyncio.run(_serve(args.listen, args.target))


if __name__ == "__main__":
    main()
