"""End to end: the real identity service (HTTP process + worker, on a freshly migrated schema) and the real
gateway process, with a real upstream (the projects echo server) behind it, all over HTTP.

Skipped when the identity service is not installed in this environment.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.embedded import free_port

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("identity") is None or importlib.util.find_spec("identity.main") is None,
    reason="the identity service is not installed (services/identity), so there is nothing to log in to",
)

ISSUER = "https://baton.e2e"
ADMIN_EMAIL = "admin@e2e.example"
ADMIN_PASSWORD = "an admin passphrase for e2e"
PASSWORD = "a user passphrase for e2e"


def _wait(url: str, process: subprocess.Popen[bytes], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def stack(database_url: str, nats_url: str, upstreams: Any) -> Iterator[dict[str, str]]:
    schema = f"gwe2e_{uuid.uuid4().hex[:10]}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    common = {
        **base,
        "BATON_ENVIRONMENT": "test",
        "BATON_NATS_URL": nats_url,
        "BATON_JWT_ISSUER": ISSUER,
        "BATON_JWT_AUDIENCE": "baton",
        "BATON_LOG_LEVEL": "WARNING",
    }
    identity_env = {
        **common,
        "BATON_DATABASE_URL": database_url,
        "BATON_DATABASE_SCHEMA": schema,
        "BATON_SECRET_KEY": "gateway-e2e-secret-0123456789",
        "BATON_IDENTITY_ARGON2_TIME_COST": "1",
        "BATON_IDENTITY_ARGON2_MEMORY_KIB": "8192",
        "BATON_IDENTITY_ARGON2_PARALLELISM": "1",
        "BATON_IDENTITY_KEY_PUBLISH_AHEAD": "0",
        "BATON_ADMIN_EMAIL": ADMIN_EMAIL,
        "BATON_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    subprocess.run(
        [sys.executable, "-m", "identity.bootstrap", "--migrate"], env=identity_env, check=True, timeout=120
    )
    identity_port, gateway_port = free_port(), free_port()
    identity_url = f"http://127.0.0.1:{identity_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    gateway_env = {
        **common,
        "BATON_JWKS_URL": identity_url + "/.well-known/jwks.json",
        "BATON_GATEWAY_IDENTITY_URL": identity_url,
        "BATON_GATEWAY_RATE_PER_IP": "0",
        "BATON_GATEWAY_RATE_PER_PRINCIPAL": "0",
        **{
            f"BATON_GATEWAY_{n.upper()}_URL": upstreams.url(n)
            for n in ("projects", "documents", "workflows", "audit")
        },
    }
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    processes = [
        subprocess.Popen(
            [*uvicorn, "identity.main:build_app", "--factory", "--port", str(identity_port)], env=identity_env
        ),
        subprocess.Popen(
            [
                *uvicorn,
                "--no-proxy-headers",
                "gateway.main:build_app",
                "--factory",
                "--port",
                str(gateway_port),
            ],
            env=gateway_env,
        ),
    ]
    try:
        _wait(identity_url + "/healthz", processes[0])
        # The worker (relay + not-before stamps) after the HTTP side has made the first signing key.
        processes.append(subprocess.Popen([sys.executable, "-m", "identity.worker"], env=identity_env))
        _wait(gateway_url + "/readyz", processes[1])
        yield {"gateway": gateway_url, "identity": identity_url}
    finally:
        for process in processes:
            _stop(process)
        from shared.testing import drop_schema

        asyncio.run(drop_schema(database_url, schema))


async def _login(c: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await c.post("/v1/auth/login", json={"email": email, "password": password})


async def _refresh(c: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await c.post(
        "/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


def _claims(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


async def _admin(c: httpx.AsyncClient) -> dict[str, str]:
    login = await _login(c, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


async def _new_user(c: httpx.AsyncClient, admin: dict[str, str]) -> tuple[str, str]:
    email = f"user-{uuid.uuid4().hex[:8]}@e2e.example"
    created = await c.post(
        "/v1/users", headers=admin, json={"email": email, "password": PASSWORD, "display_name": "E2E user"}
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"]), email


async def _announce_client(nats_client: Any) -> str:
    """A new client, announced as the projects service does (``client.created`` on ``BATON_PROJECTS``):
    identity's worker learns it from the stream."""
    from shared.events.projects import ClientCreated
    from shared.messaging import Actor, ensure_stream, to_nats
    from shared.messaging.outbox import envelope_of

    client_id = uuid.uuid4()
    event = ClientCreated(
        client_id=client_id, name="E2E client", slug=f"e2e-{client_id.hex[:8]}", status="active", version=1
    )
    envelope = envelope_of(
        event, tenant=client_id, actor=Actor(subject="e2e", kind="system"), resource_id=client_id
    )
    js = nats_client.jetstream()
    await ensure_stream(js, "projects")
    subject, headers, body = to_nats(envelope)
    await js.publish(subject, body, headers=headers)
    return str(client_id)


async def test_login_and_calls_through_the_gateway(stack):
    async with httpx.AsyncClient(base_url=stack["gateway"], timeout=20) as c:
        response = await _login(c, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert response.status_code == 200, response.text
        tokens = response.json()
        assert tokens["token_type"].lower() == "bearer"
        assert tokens["expires_in"] > 0
        assert tokens["refresh_token"]
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}

        me = await c.get("/v1/users/me", headers=bearer)
        assert me.status_code == 200, me.text
        assert me.json()["email"] == ADMIN_EMAIL

        # The identity-issued token is accepted for another service and forwarded unchanged.
        project = await c.get(f"/v1/projects/{uuid.uuid4()}", headers=bearer)
        assert project.status_code == 200
        assert project.headers["x-upstream"] == "projects"
        assert dict(project.json()["headers"])["authorization"] == bearer["Authorization"]

        # The refresh token is opaque: never an access token.
        refresh_as_access = await c.get(
            "/v1/users/me", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}
        )
        assert refresh_as_access.status_code == 401

        assert (await c.get("/v1/users/me")).status_code == 401
        bad = await _login(c, ADMIN_EMAIL, "not the password at all")
        assert bad.status_code in (401, 400)

        jwks = await c.get("/.well-known/jwks.json")
        assert jwks.status_code == 200
        assert jwks.json()["keys"]
        # Identity came up after the gateway's first fetch: its document arrives with the next retry.
        deadline = time.monotonic() + 12
        while True:
            document = (await c.get("/openapi.json")).json()
            if "/v1/auth/login" in document["paths"] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert "/v1/auth/login" in document["paths"]
        assert document["paths"]["/v1/auth/login"]["post"]["security"] == []
        assert not any(p in document["paths"] for p in ("/healthz", "/readyz"))


async def test_a_disabled_users_token_is_refused_within_seconds(stack):
    async with httpx.AsyncClient(base_url=stack["gateway"], timeout=20) as c:
        admin = {
            "Authorization": f"Bearer {(await _login(c, ADMIN_EMAIL, ADMIN_PASSWORD)).json()['access_token']}"
        }
        email = f"user-{uuid.uuid4().hex[:8]}@e2e.example"
        created = await c.post(
            "/v1/users",
            headers=admin,
            json={"email": email, "password": PASSWORD, "display_name": "E2E user"},
        )
        assert created.status_code == 201, created.text
        user_id = created.json()["id"]
        login = await _login(c, email, PASSWORD)
        assert login.status_code == 200, login.text
        user = {"Authorization": f"Bearer {login.json()['access_token']}"}
        assert (await c.get("/v1/users/me", headers=user)).status_code == 200
        assert (await c.get("/v1/tasks", headers=user)).status_code == 200  # forwarded to a real upstream

        disabled = await c.patch(f"/v1/users/{user_id}", headers=admin, json={"status": "disabled"})
        assert disabled.status_code == 200, disabled.text
        started = time.monotonic()
        while True:
            response = await c.get("/v1/tasks", headers=user)
            if response.status_code == 401 or time.monotonic() - started > 10:
                break
            await asyncio.sleep(0.2)
        assert response.status_code == 401
        assert response.json()["code"] == "token_revoked"
        assert "x-upstream" not in response.headers


async def test_a_removed_membership_is_refused_within_seconds_and_gone_after_refresh(stack, nats_client):
    async with httpx.AsyncClient(base_url=stack["gateway"], timeout=20) as c:
        admin = await _admin(c)
        client_id = await _announce_client(nats_client)
        user_id, email = await _new_user(c, admin)
        membership = f"/v1/clients/{client_id}/members/{user_id}"
        deadline = time.monotonic() + 15
        while True:  # until identity's worker has learnt the client from the stream
            granted = await c.put(membership, headers=admin, json={"role": "member"})
            if granted.status_code != 404 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert granted.status_code == 201, granted.text
        login = await _login(c, email, PASSWORD)
        assert login.status_code == 200, login.text
        tokens = login.json()
        assert _claims(tokens["access_token"])["memberships"] == {client_id: "member"}
        user = {"Authorization": f"Bearer {tokens['access_token']}"}
        members = await c.get(f"/v1/clients/{client_id}/members", headers=user)
        assert members.status_code == 200, members.text
        assert [m["user_id"] for m in members.json()["items"]] == [user_id]
        assert (await c.get("/v1/tasks", headers=user)).status_code == 200

        removed = await c.delete(membership, headers=admin)
        assert removed.status_code == 204, removed.text
        started = time.monotonic()
        while True:  # /v1/tasks goes to an echo upstream: only the gateway's not-before can refuse it
            response = await c.get("/v1/tasks", headers=user)
            if response.status_code == 401 or time.monotonic() - started > 10:
                break
            await asyncio.sleep(0.2)
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "token_revoked"
        assert "x-upstream" not in response.headers

        refreshed = await _refresh(c, tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        fresh = refreshed.json()["access_token"]
        assert _claims(fresh)["memberships"] == {}
        renewed = {"Authorization": f"Bearer {fresh}"}
        assert (await c.get("/v1/tasks", headers=renewed)).status_code == 200
        # Identity answers a non-member 404, exactly as for a client that does not exist.
        listed = await c.get(f"/v1/clients/{client_id}/members", headers=renewed)
        unknown = await c.get(f"/v1/clients/{uuid.uuid4()}/members", headers=renewed)
        assert listed.status_code == unknown.status_code == 404, listed.text
        assert listed.json()["code"] == unknown.json()["code"] == "not_found"


async def test_a_reused_refresh_token_revokes_its_family_through_the_gateway(stack):
    async with httpx.AsyncClient(base_url=stack["gateway"], timeout=20) as c:
        _, email = await _new_user(c, await _admin(c))
        first = await _login(c, email, PASSWORD)
        assert first.status_code == 200, first.text
        original = first.json()["refresh_token"]

        rotated = await _refresh(c, original)
        assert rotated.status_code == 200, rotated.text
        assert rotated.headers["cache-control"] == "no-store"
        newest = rotated.json()["refresh_token"]
        assert newest != original
        assert rotated.json()["access_token"] != first.json()["access_token"]

        reused = await _refresh(c, original)
        assert reused.status_code == 400, reused.text
        assert reused.json()["error"] == "invalid_grant"
        after = await _refresh(c, newest)  # the family is gone, the newest token with it
        assert after.status_code == 400, after.text
        assert after.json()["error"] == "invalid_grant"
        # Another login starts another family, which works.
        again = await _login(c, email, PASSWORD)
        assert (await _refresh(c, again.json()["refresh_token"])).status_code == 200
