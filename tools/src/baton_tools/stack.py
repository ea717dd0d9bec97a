"""The one-machine stack: backing servers, per-service database roles and schemas, migrations, processes."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from shared.embedded import EmbeddedNats, EmbeddedPostgres
from shared.migrations import upgrade

__all__ = ["SERVICES", "Service", "Stack"]


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    uses_database: bool = True

    @property
    def installed(self) -> bool:
        return importlib.util.find_spec(self.name) is not None and self.module_exists("main")

    def module_exists(self, module: str) -> bool:
        try:
            return importlib.util.find_spec(f"{self.name}.{module}") is not None
        except ModuleNotFoundError:
            return False

    def migrations_dir(self, repo: Path) -> Path:
        return repo / "services" / self.name / "migrations"


SERVICES = (
    Service("identity", 8001),
    Service("projects", 8002),
    Service("documents", 8003),
    Service("workflows", 8004),
    Service("audit", 8005),
    Service("gateway", 8000, uses_database=False),
)


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "services").is_dir() and (parent / "libs").is_dir():
            return parent
    return Path.cwd()


@dataclass
class Stack:
    """Everything ``make run`` starts; data stays under ``home`` between runs.

    The defaults are ``make run``'s. System tests run the same stack against servers they already have:
    ``database_url`` (a superuser URL of the database named ``database``) and ``nats_server_url`` replace
    the embedded servers, ``ports`` moves every service to a free port, ``role_prefix`` keeps the
    per-service roles apart from any other stack on the same Postgres, and ``extra_env`` is added to every
    process's environment last.

    ``replicas`` > 1 starts that many copies of every API and worker (``<service>-api-2``,
    ``<service>-worker-2``...): replica ``i`` of an API listens on ``ports["<service>#<i>"]`` (default: the
    first replica's port + 100 * i). Every gateway routes to every replica of each service, taking turns
    and setting aside one that refuses connections (``BATON_GATEWAY_<NAME>_URL`` lists them all), so a
    killed replica costs no request that its twin can take.

    Beside its API port, each replica serves Prometheus ``/metrics`` on ``side_port(service, "api", i)``
    (default: the API port + 1000) and its worker serves probes and ``/metrics`` on
    ``side_port(service, "worker", i)`` (default: + 2000); ``ports["<service>-<part>#<i>"]`` moves them.
    """

    home: Path = field(default_factory=lambda: _repo_root() / ".baton")
    repo: Path = field(default_factory=_repo_root)
    pg_port: int = int(os.environ.get("BATON_PG_PORT", "5433"))
    nats_port: int = int(os.environ.get("BATON_NATS_PORT", "4223"))
    database: str = "baton"
    postgres: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    database_url: str | None = None
    nats_server_url: str | None = None
    ports: dict[str, int] = field(default_factory=lambda: {s.name: s.port for s in SERVICES})
    role_prefix: str = "baton_"
    extra_env: dict[str, str] = field(default_factory=dict)
    echo: Callable[[str], None] = print
    commands: dict[str, tuple[list[str], Service, int]] = field(default_factory=dict)
    replicas: int = 1

    # -- secrets kept for the next run (development only; Kubernetes uses Secrets) --
    def secrets(self) -> dict[str, str]:
        path = self.home / "secrets.json"
        data: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        changed = False
        roles = [key for s in SERVICES if s.uses_database for key in (f"db_{s.name}", f"db_{s.name}_owner")]
        for key in ["secret_key", *roles]:
            if key not in data:
                data[key] = secrets.token_urlsafe(32)
                changed = True
        if changed:
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=2))
            path.chmod(0o600)
        return data

    # -- backing servers --
    def superuser_url(self) -> str:
        if self.database_url:
            return self.database_url
        if url := os.environ.get("BATON_DATABASE_URL"):
            return url
        assert self.postgres is not None
        return self.postgres.url(database=self.database)

    def nats_url(self) -> str:
        if self.nats_server_url:
            return self.nats_server_url
        if url := os.environ.get("BATON_NATS_URL"):
            return url
        assert self.nats is not None
        return self.nats.url

    def start_backing(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.database_url and not os.environ.get("BATON_DATABASE_URL"):
            self.echo(f"postgres: starting on 127.0.0.1:{self.pg_port} (data in {self.home / 'postgres'})")
            self.postgres = EmbeddedPostgres(self.home / "postgres", port=self.pg_port).start()
            with contextlib.suppress(subprocess.CalledProcessError):
                self.postgres.psql(f"CREATE DATABASE {self.database}")
        if not self.nats_server_url and not os.environ.get("BATON_NATS_URL"):
            self.echo(f"nats: starting JetStream on 127.0.0.1:{self.nats_port}")
            self.nats = EmbeddedNats(self.home / "nats", port=self.nats_port).start()

    def stop_backing(self) -> None:
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()

    # -- where each service listens --
    def port(self, service: Service, replica: int = 0) -> int:
        first = self.ports.get(service.name, service.port)
        return first if replica == 0 else self.ports.get(f"{service.name}#{replica}", first + 100 * replica)

    def side_port(self, service: Service, part: str, replica: int = 0) -> int:
        """An API's metrics port (``part`` "api") or its worker's probe and metrics port ("worker")."""
        named = self.ports.get(f"{service.name}-{part}#{replica}")
        return named if named is not None else self.port(service, replica) + (1000 if part == "api" else 2000)

    def base_url(self, name: str, replica: int = 0) -> str:
        service = next(s for s in SERVICES if s.name == name)
        return f"http://127.0.0.1:{self.port(service, replica)}"

    def gateway_urls(self) -> list[str]:
        """The entry of every replica of the platform."""
        return [self.base_url("gateway", i) for i in range(self.replicas)]

    @staticmethod
    def key(service: Service, part: str, replica: int = 0) -> str:
        """``<service>-api`` / ``<service>-worker`` for the first replica, ``...-2`` onwards for the others."""
        return f"{service.name}-{part}" if replica == 0 else f"{service.name}-{part}-{replica + 1}"

    # -- database roles, schemas, migrations --
    def role(self, service: Service) -> str:
        """The runtime role: what the service connects as (DML on its schema's tables, no DDL)."""
        return f"{self.role_prefix}{service.name}"

    def owner_role(self, service: Service) -> str:
        """Owns the service's schema and everything in it; used only to run its migrations."""
        return f"{self.role_prefix}{service.name}_owner"

    def _url(self, role: str, password: str) -> str:
        scheme, rest = self.superuser_url().split("://", 1)
        hostpart = rest.split("@", 1)[-1]
        return f"{scheme}://{role}:{password}@{hostpart}"

    def service_url(self, service: Service) -> str:
        return self._url(self.role(service), self.secrets()[f"db_{service.name}"])

    def owner_url(self, service: Service) -> str:
        return self._url(self.owner_role(service), self.secrets()[f"db_{service.name}_owner"])

    async def provision(self, services: list[Service]) -> None:
        """Two roles per service, an owner and a runtime role, that reach only the service's own schema
        (owned by the owner); pgvector in ``public`` for all.

        A ``.baton/`` from before the owner roles has schemas owned by the runtime roles: their objects are
        handed to the owner role once (``REASSIGN OWNED``), and the owner gets back the privileges the old
        migrations had made it revoke from itself. One from before documents' partition functions has its
        runtime role a member of its owner role, and partitions that role created: the membership is
        revoked and the partitions handed to the owner, once.
        """
        conn = await asyncpg.connect(self.superuser_url().replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            await conn.execute(f"REVOKE ALL ON DATABASE {self.database} FROM PUBLIC")
            secrets_ = self.secrets()
            for service in services:
                owner, runtime = self.owner_role(service), self.role(service)
                for role, password in (
                    (owner, secrets_[f"db_{service.name}_owner"]),
                    (runtime, secrets_[f"db_{service.name}"]),
                ):
                    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
                    verb = "ALTER" if exists else "CREATE"
                    await conn.execute(f"{verb} ROLE {role} LOGIN PASSWORD '{password}'")
                    await conn.execute(f"GRANT CONNECT ON DATABASE {self.database} TO {role}")
                    await conn.execute(f"ALTER ROLE {role} SET search_path = {service.name}, public")
                    await conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
                schema_owner = await conn.fetchval(
                    "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1", service.name
                )
                if schema_owner is None:
                    await conn.execute(f"CREATE SCHEMA {service.name} AUTHORIZATION {owner}")
                elif schema_owner == runtime:
                    self.echo(f"database: {service.name}'s objects now belong to {owner}")
                    await conn.execute(f"REASSIGN OWNED BY {runtime} TO {owner}")
                    await conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA {service.name} TO {owner}")
                elif schema_owner != owner:
                    raise RuntimeError(f"schema {service.name} belongs to {schema_owner}, not {owner}")
                if await conn.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", runtime, owner):
                    self.echo(f"database: {runtime} is no longer a member of {owner}")
                    await conn.execute(f"REVOKE {owner} FROM {runtime}")
                if await conn.fetchval(
                    "SELECT EXISTS (SELECT FROM pg_class WHERE relnamespace = $1::regnamespace "
                    "AND relowner = $2::regrole)",
                    service.name,
                    runtime,
                ):
                    self.echo(f"database: what {runtime} created in {service.name} now belongs to {owner}")
                    await conn.execute(f"REASSIGN OWNED BY {runtime} TO {owner}")
        finally:
            await conn.close()

    async def migrate(self, services: list[Service]) -> None:
        """Each service's migrations, run as its owner role; its runtime role is granted its share after."""
        await self.provision(services)
        for service in services:
            location = service.migrations_dir(self.repo)
            if not (location / "env.py").exists():
                continue
            await upgrade(self.owner_url(service), location, service.name, runtime_role=self.role(service))
            self.echo(f"migrations: {service.name} up to date")

    # -- processes --
    def environment(self, service: Service, replica: int = 0) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "BATON_ENVIRONMENT": env.get("BATON_ENVIRONMENT", "development"),
                "BATON_NATS_URL": self.nats_url(),
                "BATON_SECRET_KEY": self.secrets()["secret_key"],
                "BATON_JWT_ISSUER": env.get("BATON_JWT_ISSUER", self.base_url("gateway")),
                "BATON_JWKS_URL": ",".join(
                    f"{self.base_url('identity', (replica + k) % self.replicas)}/.well-known/jwks.json"
                    for k in range(self.replicas)
                ),
                "BATON_LOG_JSON": env.get("BATON_LOG_JSON", "true"),
                "BATON_METRICS_PORT": str(self.side_port(service, "api", replica)),
                "BATON_WORKER_HEALTH_PORT": str(self.side_port(service, "worker", replica)),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if service.name == "gateway":
            for upstream in SERVICES:
                if upstream.name != "gateway":
                    env[f"BATON_GATEWAY_{upstream.name.upper()}_URL"] = ",".join(
                        self.base_url(upstream.name, (replica + k) % self.replicas)
                        for k in range(self.replicas)
                    )
        if service.uses_database:
            env["BATON_DATABASE_URL"] = self.service_url(service)
        env.update(self.extra_env)
        return env

    def log_path(self, key: str) -> Path:
        return self.home / "logs" / f"{key}.log"

    def log_tail(self, key: str, lines: int = 30) -> str:
        """The last lines a process wrote, so a failure can be read where it is reported."""
        try:
            text = self.log_path(key).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def spawn(self, key: str, args: list[str], service: Service, replica: int = 0) -> None:
        self.log_path(key).parent.mkdir(parents=True, exist_ok=True)
        self.commands[key] = (args, service, replica)
        with open(self.log_path(key), "ab") as out:  # the child keeps its own copy of the descriptor
            self.processes[key] = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(service, replica),
                cwd=self.repo,
            )

    def kill(self, key: str, sig: signal.Signals = signal.SIGKILL, timeout: float = 15.0) -> None:
        """Send ``sig`` to one process (``<service>-api`` / ``<service>-worker``) and wait for its end."""
        proc = self.processes[key]
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def respawn(self, key: str) -> None:
        """Start a process again with the command and environment it was first started with."""
        args, service, replica = self.commands[key]
        self.spawn(key, args, service, replica)

    def start_services(self, services: list[Service]) -> None:
        for replica in range(self.replicas):
            for service in services:
                self.spawn(
                    self.key(service, "api", replica),
                    [sys.executable, "-m", "uvicorn", f"{service.name}.main:build_app", "--factory",
                     "--host", "127.0.0.1", "--port", str(self.port(service, replica)), "--no-access-log",
                     "--no-proxy-headers", "--timeout-graceful-shutdown", "10"],
                    service,
                    replica,
                )  # fmt: skip
                if service.module_exists("worker"):
                    self.spawn(
                        self.key(service, "worker", replica),
                        [sys.executable, "-m", f"{service.name}.worker"],
                        service,
                        replica,
                    )

    async def wait_ready(self, services: list[Service], timeout: float = 90.0) -> list[str]:
        """Wait for every replica's API and worker to be ready; what is still not ready at the timeout."""
        pending = {
            self.key(s, "api", i): self.base_url(s.name, i) for s in services for i in range(self.replicas)
        }
        pending.update(
            {
                self.key(s, "worker", i): f"http://127.0.0.1:{self.side_port(s, 'worker', i)}"
                for s in services
                if s.module_exists("worker")
                for i in range(self.replicas)
            }
        )
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while pending and time.monotonic() < deadline:
                for key, url in list(pending.items()):
                    proc = self.processes.get(key)
                    if proc is not None and proc.poll() is not None:
                        raise RuntimeError(f"{key} exited; see {self.log_path(key)}:\n{self.log_tail(key)}")
                    with contextlib.suppress(httpx.HTTPError):
                        r = await client.get(f"{url}/readyz")
                        if r.status_code == 200:
                            self.echo(f"ready: {key} on {url}")
                            del pending[key]
                await asyncio.sleep(0.5)
        return list(pending)

    def stop_services(self, timeout: float = 15.0) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
        self.processes.clear()

    def bootstrap_admin(self) -> None:
        identity = next(s for s in SERVICES if s.name == "identity")
        if not identity.installed or not identity.module_exists("bootstrap"):
            return
        subprocess.run(
            [sys.executable, "-m", "identity.bootstrap"],
            env=self.environment(identity),
            check=True,
            cwd=self.repo,
        )
