"""The whole platform as its users meet it: every installed service as its own processes (API + worker),
started by the same runner as ``make run`` against the test session's Postgres and NATS.

- The stack gets its own database (``CREATE DATABASE`` per session), its own roles (a unique prefix) and a
  free port per service, so it never collides with the per-service tests of the same pytest session.
- JetStream is shared with those tests: the ``BATON_*`` streams (and KV buckets) they leave behind are
  deleted before the stack starts, and the system tests are moved to the end of the session so nothing
  else runs while the stack's consumers are alive.
- Every service runs in ``BATON_SYSTEM_REPLICAS`` replicas (default 2: two API and two worker processes
  each, two gateways), over the same database and NATS; test callers spread their requests over the
  gateways (``Api``), so every step of a journey may land on either copy.
- The platform reaches Postgres and NATS through fault proxies (``shared.testing.faultproxy``, one child
  process each), which the fault tests switch to latency, resets or a blackhole; the tests' own checks
  connect directly.
- Process logs go to ``<home>/logs/<service>-api.log`` / ``-worker.log`` (``-api-2.log``... for the other
  replicas); when a test fails, the tail of every log is printed with the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from baton_tools.stack import SERVICES, Service, Stack

from shared.embedded import free_port
from shared.testing.faultproxy import ProxyProcess

SYSTEM_DIR = Path(__file__).resolve().parent
ADMIN_EMAIL = "admin@system.baton.test"
LOG_TAIL_LINES = 30
REPLICAS = int(os.environ.get("BATON_SYSTEM_REPLICAS", "2"))


# -- ordering and failure reports ----------------------------------------------------------------------------
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[Any]) -> None:
    """System tests last (their stack's durable consumers share JetStream with the other tests), and the
    slow ones (fault injection) after the journey, which needs a calm platform."""
    mine = [i for i in items if SYSTEM_DIR in Path(i.path).resolve().parents]
    if mine:
        rest = [i for i in items if i not in mine]
        calm = [i for i in mine if i.get_closest_marker("slow") is None]
        slow = [i for i in mine if i.get_closest_marker("slow") is not None]
        items[:] = rest + calm + slow


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# -- database and JetStream for the stack --------------------------------------------------------------------
def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def _with_host(url: str, host_port: str) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host_port}" if credentials else host_port
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _proxy_to(url: str) -> ProxyProcess:
    parts = urlsplit(url)
    assert parts.hostname, url
    assert parts.port, url
    return ProxyProcess(parts.hostname, parts.port, free_port()).start()


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _create_database(superuser_url: str, database: str) -> None:
    conn = await asyncpg.connect(_plain(superuser_url))
    try:
        await conn.execute(f'CREATE DATABASE "{database}"')
        # The test server runs with synchronous_commit=off (speed); a commit the platform acknowledged must
        # survive a kill -9 of Postgres in the fault tests, so this database commits synchronously.
        await conn.execute(f'ALTER DATABASE "{database}" SET synchronous_commit = on')
    finally:
        await conn.close()


async def _drop_database(superuser_url: str, database: str, roles: list[str]) -> None:
    conn = await asyncpg.connect(_plain(superuser_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in roles:
            with contextlib.suppress(asyncpg.PostgresError):
                await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()


async def _clean_jetstream(nats_url: str) -> None:
    import nats as nats_py

    nc = await nats_py.connect(nats_url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            name = info.config.name
            if name.startswith(("BATON_", "KV_")):
                await js.delete_stream(name)
    finally:
        await nc.drain()


# -- the running platform ------------------------------------------------------------------------------------
@dataclass
class Platform:
    """What tests get: the gateway, the first admin's credentials and the stack (to kill and restart)."""

    stack: Stack
    services: list[Service]
    gateway_url: str  # the first replica's; ``gateway_urls`` has every replica's
    admin_email: str
    admin_password: str
    superuser_url: str  # of the stack's own database (read-only checks of outboxes and the audit log)
    postgres: Any = None  # the session's PostgresBackend (restartable when embedded)
    nats: Any = None
    started_seconds: float = 0.0
    gateway_urls: list[str] = field(default_factory=list)
    proxies: dict[str, ProxyProcess] = field(default_factory=dict)  # "postgres", "nats"

    @property
    def names(self) -> set[str]:
        return {s.name for s in self.services}

    def has(self, *names: str) -> bool:
        return all(n in self.names for n in names)

    def log_tail(self, key: str, lines: int = LOG_TAIL_LINES) -> str:
        path = self.stack.log_path(key)
        if not path.exists():
            return f"(no log at {path})"
        text = path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def all_log_tails(self, lines: int = LOG_TAIL_LINES) -> str:
        out = []
        for key in sorted(self.stack.commands):
            proc = self.stack.processes.get(key)
            state = (
                "running" if proc is not None and proc.poll() is None else f"exited {proc and proc.poll()}"
            )
            out.append(f"----- {key} ({state}) -----\n{self.log_tail(key, lines)}")
        return "\n".join(out)

    async def wait_ready(self, names: list[str] | None = None, timeout: float = 240.0) -> None:
        wanted = [s for s in self.services if names is None or s.name in names]
        pending = await self.stack.wait_ready(wanted, timeout=timeout)
        if pending:
            raise AssertionError(
                f"not ready after {timeout} s: {pending} (logs in {self.stack.home / 'logs'})"
            )

    async def db(self) -> asyncpg.Connection:
        return await asyncpg.connect(_plain(self.superuser_url))


def _system_env(admin_password: str) -> dict[str, str]:
    return {
        "BATON_ENVIRONMENT": "test",
        "BATON_ADMIN_EMAIL": ADMIN_EMAIL,
        "BATON_ADMIN_PASSWORD": admin_password,
        "BATON_LOG_LEVEL": "INFO",
        "BATON_DATABASE_POOL_SIZE": "4",
        # One load generator and a polling journey share one IP and a few principals.
        "BATON_GATEWAY_RATE_PER_IP": "2000",
        "BATON_GATEWAY_BURST_PER_IP": "4000",
        "BATON_GATEWAY_RATE_PER_PRINCIPAL": "1000",
        "BATON_GATEWAY_BURST_PER_PRINCIPAL": "2000",
        # Cheaper password hashing: many logins, 2 cores (still Argon2id).
        "BATON_IDENTITY_ARGON2_MEMORY_KIB": "8192",
        "BATON_IDENTITY_ARGON2_TIME_COST": "1",
        "BATON_IDENTITY_ARGON2_PARALLELISM": "1",
        # Quicker healing after faults (the defaults are production-sized).
        "BATON_AUDIT_GAP_GRACE_SECONDS": "2",
        "BATON_AUDIT_REPLAY_RETRY_SECONDS": "3",
        "BATON_AUDIT_DISCOVERY_INTERVAL_SECONDS": "2",
        "BATON_AUDIT_ACK_WAIT_SECONDS": "10",
        "BATON_WORKFLOWS_LEASE_SWEEP_SECONDS": "5",
        # Live fuzzing names made-up workflows in many requests: each would wait the default 2 s.
        "BATON_PROJECTS_WORKFLOW_WAIT_SECONDS": "0.2",
    }


@pytest.fixture(scope="session")
def platform(request: pytest.FixtureRequest, database_url: str, nats_url: str) -> Iterator[Platform]:
    services = [s for s in SERVICES if s.installed]
    if not any(s.name == "gateway" for s in services):
        pytest.skip("the gateway is not installed in this checkout")
    home = Path(tempfile.mkdtemp(prefix="baton-system-"))
    tag = uuid.uuid4().hex[:8]
    database = f"baton_system_{tag}"
    system_url = _with_database(database_url, database)
    admin_password = "Adm1n-" + secrets.token_urlsafe(12)
    ports = {s.name: free_port() for s in SERVICES}
    ports.update({f"{s.name}#{i}": free_port() for s in SERVICES for i in range(1, REPLICAS)})
    ports.update(
        {
            f"{s.name}-{part}#{i}": free_port()
            for s in SERVICES
            for part in ("api", "worker")
            for i in range(REPLICAS)
        }
    )
    proxies = {"postgres": _proxy_to(system_url), "nats": _proxy_to(nats_url)}
    stack = Stack(
        home=home,
        database=database,
        database_url=_with_host(system_url, proxies["postgres"].url_host),
        nats_server_url=_with_host(nats_url, proxies["nats"].url_host),
        ports=ports,
        role_prefix=f"sys{tag}_",
        extra_env=_system_env(admin_password),
        echo=lambda line: print(f"[stack] {line}"),
        replicas=REPLICAS,
    )
    roles = [r for s in SERVICES if s.uses_database for r in (stack.role(s), stack.owner_role(s))]
    started = time.monotonic()
    asyncio.run(_create_database(database_url, database))
    asyncio.run(_clean_jetstream(nats_url))
    platform = Platform(
        stack=stack,
        services=services,
        gateway_url=stack.base_url("gateway"),
        admin_email=ADMIN_EMAIL,
        admin_password=admin_password,
        superuser_url=system_url,
        gateway_urls=stack.gateway_urls(),
        proxies=proxies,
    )
    # Restartable backends (embedded) for fault injection; resolved lazily so externals still work.
    platform.postgres = request.getfixturevalue("postgres")
    platform.nats = request.getfixturevalue("nats")
    try:
        asyncio.run(stack.migrate([s for s in services if s.uses_database]))
        stack.bootstrap_admin()
        stack.start_services(services)
        asyncio.run(platform.wait_ready())
        GATEWAYS[:] = platform.gateway_urls
        platform.started_seconds = time.monotonic() - started
        print(f"[stack] platform up in {platform.started_seconds:.1f} s: {platform.gateway_urls}")
        yield platform
    except BaseException:
        print(platform.all_log_tails())
        raise
    finally:
        stack.stop_services()
        for proxy in proxies.values():
            proxy.stop()
        with contextlib.suppress(Exception):
            asyncio.run(_drop_database(database_url, database, roles))
        if os.environ.get("BATON_SYSTEM_KEEP_LOGS"):
            print(f"[stack] logs kept in {home / 'logs'}")
        else:
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def _log_tails_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """On a failed test, print the tail of every process log (shown with the failure)."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed or "platform" not in request.fixturenames:
        return
    platform: Platform = request.getfixturevalue("platform")
    print("\n===== platform logs (tail) =====\n" + platform.all_log_tails())


# -- HTTP helpers -------------------------------------------------------------------------------------------
# Every gateway of the running platform: a client made for the first one spreads its requests over all.
GATEWAYS: list[str] = []


class _Spread(httpx.HTTPTransport):
    """Sends each request to the next gateway in turn (the platform's replicas behind one base URL)."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__()
        self._targets = itertools.cycle([httpx.URL(u) for u in urls])

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        target = next(self._targets)
        request.url = request.url.copy_with(host=target.host, port=target.port)
        request.headers["Host"] = f"{target.host}:{target.port}"
        return super().handle_request(request)


class _AsyncSpread(httpx.AsyncHTTPTransport):
    def __init__(self, urls: list[str]) -> None:
        super().__init__()
        self._targets = itertools.cycle([httpx.URL(u) for u in urls])

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = next(self._targets)
        request.url = request.url.copy_with(host=target.host, port=target.port)
        request.headers["Host"] = f"{target.host}:{target.port}"
        return await super().handle_async_request(request)


def _spread(base_url: str) -> list[str] | None:
    return GATEWAYS if base_url in GATEWAYS and len(GATEWAYS) > 1 else None


def http_client(base_url: str, timeout: float = 30.0) -> httpx.Client:
    spread = _spread(base_url)
    return httpx.Client(base_url=base_url, timeout=timeout, transport=_Spread(spread) if spread else None)


def async_http_client(base_url: str, **kw: Any) -> httpx.AsyncClient:
    spread = _spread(base_url)
    return httpx.AsyncClient(base_url=base_url, transport=_AsyncSpread(spread) if spread else None, **kw)


class ApiError(AssertionError):
    pass


@dataclass
class Api:
    """One caller of the public API through the gateway (a bearer token, or none)."""

    base_url: str
    token: str | None = None
    name: str = "anonymous"
    client: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.client = http_client(self.base_url)

    def close(self) -> None:
        self.client.close()

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**h, **(extra or {})}

    def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        return self.client.request(method, path, headers=self.headers(headers), **kw)

    def expect(self, status: int | tuple[int, ...], method: str, path: str, **kw: Any) -> Any:
        """The decoded body of a response with the expected status (an informative failure otherwise)."""
        r = self.request(method, path, **kw)
        wanted = (status,) if isinstance(status, int) else status
        if r.status_code not in wanted:
            raise ApiError(
                f"{self.name}: {method} {path} → {r.status_code} (wanted {wanted}): {r.text[:2000]}"
            )
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            return r.text

    def get(self, path: str, **kw: Any) -> Any:
        return self.expect(200, "GET", path, **kw)

    def post(self, path: str, status: int | tuple[int, ...] = (200, 201), **kw: Any) -> Any:
        return self.expect(status, "POST", path, **kw)


def login(base_url: str, email: str, password: str, name: str | None = None) -> Api:
    with http_client(base_url) as c:
        r = c.post("/v1/auth/login", json={"email": email, "password": password})
    if r.status_code != 200:
        raise ApiError(f"login {email} → {r.status_code}: {r.text[:500]}")
    body = r.json()
    assert body["token_type"].lower() == "bearer"
    assert body["expires_in"] > 0
    assert body["refresh_token"]
    return Api(base_url, body["access_token"], name or email)


def agent_login(base_url: str, agent_id: str, secret: str, name: str = "agent") -> Api:
    with http_client(base_url) as c:
        r = c.post(
            "/v1/auth/token",
            data={"grant_type": "client_credentials", "client_id": agent_id, "client_secret": secret},
        )
    if r.status_code != 200:
        raise ApiError(f"client_credentials {agent_id} → {r.status_code}: {r.text[:500]}")
    return Api(base_url, r.json()["access_token"], name)


def poll(
    what: str,
    fn: Callable[[], Any],
    *,
    timeout: float = 60.0,
    interval: float = 0.25,
    platform: Platform | None = None,
) -> Any:
    """``fn()`` until it returns something truthy; a timeout fails with ``what`` (and the logs' tails)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    logs = f"\n{platform.all_log_tails()}" if platform is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r}){logs}")


# Summaries the tests hand in (fault table, live fuzzing counts), shown at the end of the run.
REPORTS: list[tuple[str, str]] = []


def report(title: str, text: str) -> None:
    REPORTS.append((title, text))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for title, text in REPORTS:
        terminalreporter.write_sep("=", title)
        terminalreporter.write_line(text)


@pytest.fixture(scope="session")
def helpers() -> Any:
    """The HTTP helpers, for test modules (conftest is not importable in importlib mode)."""

    class H:
        Api = Api
        ApiError = ApiError
        http_client = staticmethod(http_client)
        async_http_client = staticmethod(async_http_client)
        login = staticmethod(login)
        agent_login = staticmethod(agent_login)
        poll = staticmethod(poll)
        report = staticmethod(report)

    return H
