"""Fuzz the public API through the gateway: its merged OpenAPI document, its token checks, its proxying.

The gateway runs in-process (schemathesis calls it as ASGI); identity and projects - the finished
upstreams - run as real uvicorn servers on loopback, each on its own schema, and verify identity's
tokens through identity's JWKS exactly as in production. The other upstreams are not started, so only
the operations of identity and projects are generated. Callers are real users, memberships and an agent
made through the gateway; every 2xx answer is replayed as client B's product owner and agent. The
merged document declares the gateway's own answers (400, 401, 413, 429, 502, 504) on every operation.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from shared.db import create_engine, create_session_factory, transaction
from shared.testing.backends import create_fresh_schema

from .cases import generated_case_tests
from .harness import (
    FAST_EXAMPLES,
    STATS,
    ServerThread,
    Target,
    TenantIsolation,
    bearer,
    drop,
    fresh_schema_name,
    load_schema,
    run_async,
    running,
)

gateway_main = pytest.importorskip("gateway.main", reason="the gateway is not importable yet")
from gateway.config import Settings as GatewaySettings  # noqa: E402
from gateway.openapi import merge_documents  # noqa: E402
from gateway.routes import RouteTable  # noqa: E402
from identity.bootstrap import bootstrap_admin  # noqa: E402
from identity.config import Settings as IdentitySettings  # noqa: E402
from identity.context import IdentityContext  # noqa: E402
from identity.main import build_app as identity_app  # noqa: E402
from identity.memberships.repository import KnownClientRepository  # noqa: E402
from identity.tables import metadata as identity_metadata  # noqa: E402
from projects.config import Settings as ProjectsSettings  # noqa: E402
from projects.database import Base as ProjectsBase  # noqa: E402
from projects.main import build_app as projects_app  # noqa: E402

# The gateway's background work (NATS client, JWKS and OpenAPI refreshers) and the upstream servers run on
# other threads while Hypothesis draws, and use the global ``random`` module: Hypothesis takes that for a
# strategy using ``random`` and warns. Nothing here draws with it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies:hypothesis.errors.HypothesisDeprecationWarning"
)

ISSUER, AUDIENCE = "https://baton.test", "baton"
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@gateway.fuzz.test", "correct horse battery staple"
PASSWORD = "a perfectly fine passphrase"
UNUSED_DB = "postgresql+asyncpg://unused/unused"
# Upstreams not started here: a port nothing listens on.
DEAD_UPSTREAM = "http://127.0.0.1:9"


def identity_settings(database_url: str, schema_name: str) -> IdentitySettings:
    return IdentitySettings(
        environment="test",
        database_url=database_url,
        database_schema=schema_name,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        log_json=False,
        argon2_time_cost=1,
        argon2_memory_kib=8192,
        argon2_parallelism=1,
        key_publish_ahead_seconds=0,
        secret_key="identity-fuzz-secret-0123456789",
    )


def projects_settings(database_url: str, schema_name: str, jwks_url: str) -> ProjectsSettings:
    return ProjectsSettings(
        environment="test",
        database_url=database_url,
        database_schema=schema_name,
        jwks_url=jwks_url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        log_json=False,
        workflow_wait_seconds=0.05,  # generated types name made-up workflows: no 2 s wait each
    )


# The document the gateway serves, merged by its own code from the two upstreams' documents.
schema = load_schema(
    merge_documents(
        {
            "identity": identity_app(
                identity_settings(UNUSED_DB, "unused"), configure_observability=False
            ).openapi(),
            "projects": projects_app(
                projects_settings(UNUSED_DB, "unused", DEAD_UPSTREAM), configure_observability=False
            ).openapi(),
        },
        RouteTable(),
    )
)


@pytest.fixture(scope="module")
async def gateway_db(database_url: str) -> Any:
    """Identity's schema (with its first admin) and projects' schema."""
    identity_schema, engine = await create_fresh_schema(database_url, "fuzzgwidentity", identity_metadata)
    try:
        hasher = IdentityContext.from_settings(identity_settings(database_url, identity_schema)).hasher
        await bootstrap_admin(
            create_session_factory(engine), hasher, email=ADMIN_EMAIL, password=ADMIN_PASSWORD
        )
    finally:
        await engine.dispose()
    projects_schema = await fresh_schema_name(database_url, "fuzzgwprojects", ProjectsBase.metadata)
    yield identity_schema, projects_schema
    await drop(database_url, identity_schema)
    await drop(database_url, projects_schema)


def learn_clients(database_url: str, identity_schema: str, client_ids: list[str]) -> None:
    """Make clients known to identity, as its consumer of projects' ``client.created`` would."""

    async def main() -> None:
        engine = create_engine(database_url, schema=identity_schema)
        try:
            async with transaction(create_session_factory(engine)) as session:
                for client_id in client_ids:
                    await KnownClientRepository(session).learn(uuid.UUID(client_id))
        finally:
            await engine.dispose()

    run_async(main)


def resource_url(obj: Mapping[str, Any], path: str) -> tuple[str, str] | None:
    """Projects' clients and projects, identity's agents and memberships, each owned by its client."""
    if "id" in obj and "slug" in obj:
        return f"/v1/clients/{obj['id']}", str(obj["id"])
    if "id" in obj and "kind" in obj and "client_id" in obj and "workflow_id" in obj:
        return f"/v1/projects/{obj['id']}", str(obj["client_id"])
    if "id" in obj and "scopes" in obj and "client_id" in obj:
        return f"/v1/clients/{obj['client_id']}/agents/{obj['id']}", str(obj["client_id"])
    if "role" in obj and "user_id" in obj and "client_id" in obj:
        return f"/v1/clients/{obj['client_id']}/members", str(obj["client_id"])
    return None


@pytest.fixture(scope="module")
def gateway(gateway_db: tuple[str, str], database_url: str, nats_url: str) -> Iterator[Target]:
    identity_schema, projects_schema = gateway_db
    upstream = identity_app(identity_settings(database_url, identity_schema), configure_observability=False)
    with ServerThread(upstream) as identity:
        jwks_url = f"{identity.url}/.well-known/jwks.json"
        upstream = projects_app(
            projects_settings(database_url, projects_schema, jwks_url), configure_observability=False
        )
        with ServerThread(upstream) as projects:
            settings = GatewaySettings(
                environment="test",
                log_json=False,
                nats_url=nats_url,
                jwks_url=jwks_url,
                jwt_issuer=ISSUER,
                jwt_audience=AUDIENCE,
                identity_url=identity.url,
                projects_url=projects.url,
                documents_url=DEAD_UPSTREAM,
                workflows_url=DEAD_UPSTREAM,
                audit_url=DEAD_UPSTREAM,
                rate_per_ip=0,
                rate_per_principal=0,
            )
            app = gateway_main.build_app(settings)
            with running(app) as client:
                yield seed(client, database_url, identity_schema)


def seed(client: Any, database_url: str, identity_schema: str) -> Target:
    """Clients A and B, users with roles in them, agents, projects: all through the gateway."""

    def login(email: str, password: str = PASSWORD) -> dict[str, str]:
        deadline = time.monotonic() + 20
        while True:  # the gateway loads identity's JWKS in the background after it starts
            r = client.post("/v1/auth/login", json={"email": email, "password": password})
            if r.status_code == 200:
                headers = bearer(r.json()["access_token"])
                if client.get("/v1/clients", headers=headers).status_code != 401:
                    return headers
            assert time.monotonic() < deadline, f"login through the gateway keeps failing: {r.text}"
            time.sleep(0.1)

    admin = login(ADMIN_EMAIL, ADMIN_PASSWORD)
    clients = []
    for letter in "ab":
        r = client.post(
            "/v1/clients", json={"name": f"Client {letter}", "slug": f"client-{letter}"}, headers=admin
        )
        assert r.status_code == 201, r.text
        clients.append(r.json()["id"])
    a, b = clients
    learn_clients(database_url, identity_schema, clients)
    users: dict[str, str] = {}
    for name, client_id, role in (
        ("po_a", a, "product_owner"),
        ("member_a", a, "member"),
        ("viewer_a", a, "viewer"),
        ("victim_a", a, "member"),
        ("outsider", None, None),
        ("po_b", b, "product_owner"),
    ):
        body = {"email": f"{name}@gateway.fuzz.test", "password": PASSWORD, "display_name": name}
        r = client.post("/v1/users", json=body, headers=admin)
        assert r.status_code == 201, r.text
        users[name] = r.json()["id"]
        if client_id is not None:
            r = client.put(
                f"/v1/clients/{client_id}/members/{users[name]}", json={"role": role}, headers=admin
            )
            assert r.status_code == 201, r.text

    def agent(client_id: str, name: str) -> tuple[str, dict[str, str]]:
        scopes = ["projects:read", "projects:write"]
        r = client.post(
            f"/v1/clients/{client_id}/agents", json={"name": name, "scopes": scopes}, headers=admin
        )
        assert r.status_code == 201, r.text
        made = r.json()
        form = {
            "grant_type": "client_credentials",
            "client_id": made["id"],
            "client_secret": made["client_secret"],
        }
        r = client.post("/v1/auth/token", data=form)
        assert r.status_code == 200, r.text
        return made["id"], bearer(r.json()["access_token"])

    _, agent_a = agent(a, "Agent A")
    victim_agent, _ = agent(a, "Victim agent A")
    _, agent_b = agent(b, "Agent B")
    po_a, po_b = login("po_a@gateway.fuzz.test"), login("po_b@gateway.fuzz.test")
    project_ids = []
    for client_id, headers in ((a, po_a), (b, po_b)):
        body = {"client_id": client_id, "name": "Project", "kind": "greenfield", "type": "fullstack"}
        r = client.post("/v1/projects", json=body, headers=headers)
        assert r.status_code == 201, r.text
        project_ids.append(r.json()["id"])
    callers: dict[str, dict[str, str] | None] = {
        "admin": admin,
        "product_owner_a": po_a,
        "member_a": login("member_a@gateway.fuzz.test"),
        "viewer_a": login("viewer_a@gateway.fuzz.test"),
        "outsider": login("outsider@gateway.fuzz.test"),
        "agent_a": agent_a,
        "anonymous": None,
        "product_owner_b": po_b,
    }
    isolation = TenantIsolation(
        client=client,
        b_client_id=b,
        b_callers={"product_owner_b": po_b, "agent_b": agent_b},
        resource_url=resource_url,
    )
    return Target(
        service="gateway",
        app=client.app,
        client=client,
        callers=callers,
        # B's callers stay out of reach (see test_fuzz_identity.py).
        known={
            "client_id": [a, b],
            "project_id": project_ids,
            "user_id": [users["victim_a"], users["member_a"], users["outsider"]],
            "agent_id": [victim_agent],
        },
        checks=[isolation],
        anonymous_only=frozenset({"POST /v1/auth/token"}),
    )


def test_gateway_serves_the_merged_document(gateway: Target) -> None:
    """The document the fuzzer works from is the one the gateway serves (identity and projects parts)."""
    expected = set(schema.raw_schema["paths"])
    deadline = time.monotonic() + 15
    while True:  # the gateway fetches its upstreams' documents in the background
        served = set(gateway.client.get("/openapi.json").json()["paths"])
        if expected <= served or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert expected <= served, sorted(expected - served)


@pytest.fixture(scope="module")
def target(gateway: Target) -> Target:
    return gateway


test_gateway_api, test_gateway_edge_values, test_gateway_api_long = generated_case_tests(
    schema, fast_examples=max(5, FAST_EXAMPLES // 2)
)


def test_gateway_cases_counted(gateway: Target) -> None:
    """Cases were generated (the number is printed, and in the session summary) and answers were
    replayed as client B, so the isolation check did run."""
    print(f"\n{gateway.summary()}")
    assert STATS["gateway"] > 0
    assert gateway.isolation_replays() > 0
