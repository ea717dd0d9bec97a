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
    """Everything ``make run`` starts; data stays under ``home`` between runs."""

    home: Path = field(default_factory=lambda: _repo_root() / ".baton")
    repo: Path = field(default_factory=_repo_root)
    pg_port: int = int(os.environ.get("BATON_PG_PORT", "5433"))
    nats_port: int = int(os.environ.get("BATON_NATS_PORT", "4223"))
    database: str = "baton"
    postgres: EmbeddedPostgres | None = None
    nats: EmbeddedNats | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # -- secrets kept for the next run (development only; Kubernetes uses Secrets) --
    def secrets(self) -> dict[str, str]:
        path = self.home / "secrets.json"
        data: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        changed = False
        for key in ["secret_key", *(f"db_{s.name}" for s in SERVICES if s.uses_database)]:
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
        if url := os.environ.get("BATON_DATABASE_URL"):
            return url
        assert self.postgres is not None
        return self.postgres.url(database=self.database)

    def nats_url(self) -> str:
        if url := os.environ.get("BATON_NATS_URL"):
            return url
        assert self.nats is not None
        return self.nats.url

    def start_backing(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if not os.environ.get("BATON_DATABASE_URL"):
            print(f"postgres: starting on 127.0.0.1:{self.pg_port} (data in {self.home / 'postgres'})")
            self.postgres = EmbeddedPostgres(self.home / "postgres", port=self.pg_port).start()
            with contextlib.suppress(subprocess.CalledProcessError):
                self.postgres.psql(f"CREATE DATABASE {self.database}")
        if not os.environ.get("BATON_NATS_URL"):
            print(f"nats: starting JetStream on 127.0.0.1:{self.nats_port}")
            self.nats = EmbeddedNats(self.home / "nats", port=self.nats_port).start()

    def stop_backing(self) -> None:
        if self.nats is not None:
            self.nats.stop()
        if self.postgres is not None:
            self.postgres.stop()

    # -- database roles, schemas, migrations --
    def service_url(self, service: Service) -> str:
        base = self.superuser_url()
        password = self.secrets()[f"db_{service.name}"]
        scheme, rest = base.split("://", 1)
        hostpart = rest.split("@", 1)[-1]
        return f"{scheme}://baton_{service.name}:{password}@{hostpart}"

    async def provision(self, services: list[Service]) -> None:
        """One role per service that can reach only its own schema; pgvector in ``public`` for all."""
        conn = await asyncpg.connect(self.superuser_url().replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            await conn.execute(f"REVOKE ALL ON DATABASE {self.database} FROM PUBLIC")
            for service in services:
                role, password = f"baton_{service.name}", self.secrets()[f"db_{service.name}"]
                exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
                verb = "ALTER" if exists else "CREATE"
                await conn.execute(f"{verb} ROLE {role} LOGIN PASSWORD '{password}'")
                await conn.execute(f"GRANT CONNECT ON DATABASE {self.database} TO {role}")
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {service.name} AUTHORIZATION {role}")
                await conn.execute(f"ALTER ROLE {role} SET search_path = {service.name}, public")
                await conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        finally:
            await conn.close()

    async def migrate(self, services: list[Service]) -> None:
        await self.provision(services)
        for service in services:
            location = service.migrations_dir(self.repo)
            if not (location / "env.py").exists():
                continue
            await upgrade(self.service_url(service), location, service.name)
            print(f"migrations: {service.name} up to date")

    # -- processes --
    def environment(self, service: Service) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "BATON_ENVIRONMENT": env.get("BATON_ENVIRONMENT", "development"),
                "BATON_NATS_URL": self.nats_url(),
                "BATON_SECRET_KEY": self.secrets()["secret_key"],
                "BATON_JWT_ISSUER": env.get("BATON_JWT_ISSUER", "http://127.0.0.1:8000"),
                "BATON_JWKS_URL": "http://127.0.0.1:8001/.well-known/jwks.json",
                "BATON_LOG_JSON": env.get("BATON_LOG_JSON", "true"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if service.uses_database:
            env["BATON_DATABASE_URL"] = self.service_url(service)
        return env

    def spawn(self, key: str, args: list[str], service: Service) -> None:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = open(logs / f"{key}.log", "ab")  # noqa: SIM115 - owned by the child
        self.processes[key] = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=self.environment(service), cwd=self.repo
        )

    def start_services(self, services: list[Service]) -> None:
        for service in services:
            self.spawn(
                f"{service.name}-api",
                [sys.executable, "-m", "uvicorn", f"{service.name}.main:build_app", "--factory",
                 "--host", "127.0.0.1", "--port", str(service.port), "--no-access-log",
                 "--timeout-graceful-shutdown", "10"],
                service,
            )  # fmt: skip
            if service.module_exists("worker"):
                self.spawn(
                    f"{service.name}-worker", [sys.executable, "-m", f"{service.name}.worker"], service
                )

    async def wait_ready(self, services: list[Service], timeout: float = 90.0) -> list[str]:
        pending = {s.name: s for s in services}
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while pending and time.monotonic() < deadline:
                for name, service in list(pending.items()):
                    proc = self.processes.get(f"{name}-api")
                    if proc is not None and proc.poll() is not None:
                        raise RuntimeError(f"{name} exited; see {self.home / 'logs' / (name + '-api.log')}")
                    with contextlib.suppress(httpx.HTTPError):
                        r = await client.get(f"http://127.0.0.1:{service.port}/readyz")
                        if r.status_code == 200:
                            print(f"ready: {name} on http://127.0.0.1:{service.port}")
                            del pending[name]
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
