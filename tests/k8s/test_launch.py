"""The manifests describe processes that really start: each Deployment's command, args and environment
(ConfigMap + Secret references) are launched against the test Postgres and NATS, and the readiness probe
path must answer 200. The database is prepared the way the CloudNativePG cluster is (its bootstrap SQL and
managed roles), so the init containers migrate as the owner roles and the services run as the runtime
roles. Also: the variables the manifests set are exactly ones the services read."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shared.embedded import free_port
from shared.settings import settings_env_vars

from .test_manifests import render

ROOT = Path(__file__).resolve().parents[2]
# Variables a manifest may set that no settings class reads, each with its reason.
NOT_SETTINGS = {
    "DB_USER": "expanded into BATON_DATABASE_URL by Kubernetes",
    "DB_PASSWORD": "expanded into BATON_DATABASE_URL by Kubernetes",
    "BATON_SERVICE": "names the schema for `python -m shared.migrations`",
    "BATON_DATABASE_RUNTIME_ROLE": "the role `python -m shared.migrations` grants the service's share to",
}
PASSWORD = secrets.token_hex(16)  # every role's, as the Secrets would hold them


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return render("prod")


def service_of(deployment: dict[str, Any]) -> str:
    return str(deployment["metadata"]["labels"]["app.kubernetes.io/name"])


def container_env(objects, container) -> dict[str, str | None]:
    """The environment Kubernetes would give the container: ConfigMaps, then env entries (secrets → None)."""
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in objects if c["kind"] == "ConfigMap"}
    env: dict[str, str | None] = {}
    for ref in container.get("envFrom", []):
        env.update(configmaps[ref["configMapRef"]["name"]])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value")
    return env


def test_manifest_env_vars_are_settings_the_services_read(manifests):
    problems = []
    for d in (o for o in manifests if o["kind"] == "Deployment"):
        service = service_of(d)
        known = set(settings_env_vars(importlib.import_module(f"{service}.config").Settings))
        spec = d["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            for name in container_env(manifests, c):
                if name not in known and name not in NOT_SETTINGS:
                    problems.append(f"{d['metadata']['name']}/{c['name']}: {name} is read by nothing")
    assert not problems, "\n".join(problems)


def _resolve(value: str, env: dict[str, str], subs: dict[str, str]) -> str:
    value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), ""), value)
    for old, new in subs.items():
        value = value.replace(old, new)
    return value


def cluster_secrets() -> dict[tuple[str, str], str]:
    """What the Secrets of docs/operations.md hold: (secret, key) -> value."""
    values = {("baton-platform", "secret-key"): secrets.token_urlsafe(32)}
    cluster = yaml.safe_load((ROOT / "k8s/platform/postgres-cluster.yaml").read_text())
    for role in cluster["spec"]["managed"]["roles"]:
        secret = role["passwordSecret"]["name"]
        values[(secret, "username")] = role["name"]
        values[(secret, "password")] = PASSWORD
    return values


def launch_env(objects, container, subs: dict[str, str], secret_values) -> dict[str, str]:
    refs = {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    for name, value in container_env(objects, container).items():
        env[name] = secret_values[refs[name]] if value is None else _resolve(value, env, subs)
    return env


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> int:
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"process exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            status = httpx.get(url, timeout=2).status_code
            if status == 200:
                return status
        time.sleep(0.3)
    pytest.fail(f"{url} answered {status}, not 200, within {timeout}s:\n{log.read_text()[-3000:]}")


_CREATE_DB = """
import asyncio, json, sys, asyncpg
async def main(url, name, statements):
    conn = await asyncpg.connect(url)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    conn = await asyncpg.connect(url.rsplit("/", 1)[0] + "/" + name)
    for statement in json.loads(statements):
        await conn.execute(statement)
    await conn.close()
asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""


def cluster_setup(database: str) -> list[str]:
    """The cluster's bootstrap SQL (on ``database`` instead of ``baton``), then what the operator does for
    the managed roles: passwords from the Secrets, memberships."""
    cluster = yaml.safe_load((ROOT / "k8s/platform/postgres-cluster.yaml").read_text())
    statements = [
        sql.replace("DATABASE baton ", f"DATABASE {database} ")
        for sql in cluster["spec"]["bootstrap"]["initdb"]["postInitApplicationSQL"]
    ]
    for role in cluster["spec"]["managed"]["roles"]:
        statements.append(f"ALTER ROLE {role['name']} LOGIN PASSWORD '{PASSWORD}'")
        statements += [f"GRANT {other} TO {role['name']}" for other in role.get("inRoles", [])]
    return statements


@pytest.fixture(scope="module")
def launch_database(database_url) -> str:
    """A database of its own, set up like the cluster's: the launched services use their real schema names
    and roles."""
    name = f"k8s_{secrets.token_hex(4)}"
    statements = json.dumps(cluster_setup(name))
    # in a child process: this sync fixture must not disturb the session's event loop
    subprocess.run([sys.executable, "-c", _CREATE_DB, database_url, name, statements], check=True)
    return name


# This virtualenv stands for the image's /app/.venv, first on the image's PATH; then the base image's system.
IMAGE_PATH = os.pathsep.join([str(Path(sys.prefix) / "bin"), "/usr/bin", "/bin"])


def local_argv(argv: list[str]) -> list[str]:
    """The manifest's command as the image would find it on its PATH, launched as it is: a program that is no
    real launcher there (a typo, a module name, a console script of a package the service lacks) fails."""
    exe = shutil.which(argv[0], path=IMAGE_PATH)
    assert exe, f"{argv[0]!r} is not a program on the image's PATH ({IMAGE_PATH})"
    return [exe, *argv[1:]]


ORDER = ["identity", "projects", "workflows", "audit", "documents", "gateway"]


def test_each_deployment_starts_and_turns_ready(manifests, postgres, nats, launch_database, tmp_path):
    host_port = postgres.url.split("@", 1)[1].split("/", 1)[0]
    identity_port = free_port()
    subs = {
        "baton-pg-rw:5432/baton": f"{host_port}/{launch_database}",
        "nats://nats:4222": nats.url,
        "http://identity:8000": f"http://127.0.0.1:{identity_port}",
    }
    secret_values = cluster_secrets()
    deployments = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "Deployment"}
    procs: list[subprocess.Popen] = []
    checked = []
    try:
        for service in ORDER:
            for component in ("api", "worker"):
                d = deployments.get(f"{service}-{component}")
                if d is None:
                    continue
                spec = d["spec"]["template"]["spec"]
                for init in spec.get("initContainers", []):
                    env = launch_env(manifests, init, subs, secret_values)
                    env["BATON_MIGRATIONS_DIR"] = str(ROOT / "services" / service / "migrations")
                    res = subprocess.run(
                        local_argv(init["command"]), env=env, capture_output=True, text=True, cwd=tmp_path
                    )
                    assert res.returncode == 0, res.stderr[-3000:]
                c = spec["containers"][0]
                env = launch_env(manifests, c, subs, secret_values)
                port = identity_port if (service, component) == ("identity", "api") else free_port()
                probe = c["readinessProbe"]["httpGet"]
                named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
                container_port = named[probe["port"]] if isinstance(probe["port"], str) else probe["port"]
                argv = [str(a) for a in c["command"] + c.get("args", [])]
                argv = [str(port) if a == str(container_port) and i and argv[i - 1] == "--port" else a
                        for i, a in enumerate(argv)]  # fmt: skip
                if "BATON_WORKER_HEALTH_PORT" in env:
                    env["BATON_WORKER_HEALTH_PORT"] = str(port)
                if "BATON_METRICS_PORT" in env:  # every API's is 8001 in its pod; here they share a host
                    env["BATON_METRICS_PORT"] = str(free_port())
                argv = ["127.0.0.1" if a == "0.0.0.0" else a for a in argv]
                argv = local_argv(argv)
                log = tmp_path / f"{service}-{component}.log"
                with log.open("wb") as out:
                    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
                procs.append(proc)
                wait_ready(f"http://127.0.0.1:{port}{probe['path']}", proc, log)
                # Prometheus scrapes the pod where the manifests say: the API's metrics port, the worker's probes.
                scraped = httpx.get(
                    f"http://127.0.0.1:{env.get('BATON_METRICS_PORT', port)}/metrics", timeout=10
                )
                assert scraped.status_code == 200, d["metadata"]["name"]
                assert "process_resident_memory_bytes" in scraped.text
                checked.append(d["metadata"]["name"])
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert set(checked) == set(deployments), f"not launched: {set(deployments) - set(checked)}"
