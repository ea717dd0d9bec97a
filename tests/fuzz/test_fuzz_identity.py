"""Fuzz the identity API in-process as an admin, each client role, an agent, an outsider and no token.

Identity authorizes against its own rows, so the callers are real: users and memberships made through
the API, tokens from ``/v1/auth/login`` and ``/v1/auth/token`` (client credentials), verified by the
app's own JWKS. Every 2xx answer is replayed as client B's product owner and agent
(``TenantIsolation``): A's agents, members and users stay invisible to them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from identity.bootstrap import bootstrap_admin
from identity.config import Settings
from identity.context import IdentityContext
from identity.main import build_app
from identity.memberships.repository import KnownClientRepository
from identity.tables import metadata

from shared.db import create_session_factory, transaction
from shared.testing.backends import create_fresh_schema

from .cases import generated_case_tests
from .harness import (
    STATS,
    Target,
    TenantIsolation,
    bearer,
    drop,
    load_schema,
    running,
)

ADMIN_EMAIL = "admin@fuzz.baton.test"
ADMIN_PASSWORD = "correct horse battery staple"
PASSWORD = "a perfectly fine passphrase"


def make_settings(database_url: str, schema: str) -> Settings:
    return Settings(
        environment="test",
        database_url=database_url,
        database_schema=schema,
        jwt_issuer="https://baton.test",
        jwt_audience="baton",
        log_json=False,
        argon2_time_cost=1,
        argon2_memory_kib=8192,
        argon2_parallelism=1,
        key_publish_ahead_seconds=0,
        secret_key="identity-fuzz-secret-0123456789",
    )


schema = load_schema(
    build_app(make_settings("postgresql+asyncpg://unused/unused", "unused"), configure_observability=False)
)


@pytest.fixture(scope="module")
async def identity_db(database_url: str) -> Any:
    """A schema with identity's tables, its first admin and two clients identity knows (A and B)."""
    name, engine = await create_fresh_schema(database_url, "fuzzidentity", metadata)
    clients = (uuid.uuid4(), uuid.uuid4())
    try:
        sessions = create_session_factory(engine)
        hasher = IdentityContext.from_settings(make_settings(database_url, name)).hasher
        await bootstrap_admin(sessions, hasher, email=ADMIN_EMAIL, password=ADMIN_PASSWORD)
        async with transaction(sessions) as session:
            for client_id in clients:
                await KnownClientRepository(session).learn(client_id)
    finally:
        await engine.dispose()
    yield name, [str(c) for c in clients]
    await drop(database_url, name)


def resource_url_for(b_users: set[str]) -> Any:
    def resource_url(obj: Mapping[str, Any], path: str) -> tuple[str, str] | None:
        """An agent or a membership (owned by its client), or a user (only itself and admins see it)."""
        if "id" in obj and "scopes" in obj and "client_id" in obj:
            return f"/v1/clients/{obj['client_id']}/agents/{obj['id']}", str(obj["client_id"])
        if "role" in obj and "user_id" in obj and "client_id" in obj:
            return f"/v1/clients/{obj['client_id']}/members", str(obj["client_id"])
        if "email" in obj and "id" in obj and str(obj["id"]) not in b_users:
            return f"/v1/users/{obj['id']}", f"user {obj['id']}"
        return None

    return resource_url


def listings(obj: Mapping[str, Any], owner: str) -> list[str]:
    if "scopes" in obj:
        return [f"/v1/clients/{owner}/agents?limit=100"]
    return []


@pytest.fixture(scope="module")
def identity(identity_db: tuple[str, list[str]], database_url: str) -> Iterator[Target]:
    schema_name, (a, b) = identity_db
    app = build_app(make_settings(database_url, schema_name), configure_observability=False)
    with running(app) as client:

        def login(email: str, password: str = PASSWORD) -> dict[str, str]:
            r = client.post("/v1/auth/login", json={"email": email, "password": password})
            assert r.status_code == 200, r.text
            return bearer(r.json()["access_token"])

        admin = login(ADMIN_EMAIL, ADMIN_PASSWORD)
        users: dict[str, str] = {}
        for name in ("po_a", "member_a", "viewer_a", "outsider", "victim_a", "po_b"):
            body = {"email": f"{name}@fuzz.baton.test", "password": PASSWORD, "display_name": name}
            r = client.post("/v1/users", json=body, headers=admin)
            assert r.status_code == 201, r.text
            users[name] = r.json()["id"]
        for name, client_id, role in (
            ("po_a", a, "product_owner"),
            ("member_a", a, "member"),
            ("viewer_a", a, "viewer"),
            ("victim_a", a, "member"),
            ("po_b", b, "product_owner"),
        ):
            r = client.put(
                f"/v1/clients/{client_id}/members/{users[name]}", json={"role": role}, headers=admin
            )
            assert r.status_code == 201, r.text

        def agent(client_id: str, name: str) -> tuple[str, dict[str, str]]:
            scopes = ["projects:read", "projects:write", "documents:read", "workflows:read", "audit:read"]
            r = client.post(
                f"/v1/clients/{client_id}/agents", json={"name": name, "scopes": scopes}, headers=admin
            )
            assert r.status_code == 201, r.text
            made = r.json()
            r = client.post(
                "/v1/auth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": made["id"],
                    "client_secret": made["client_secret"],
                },
            )
            assert r.status_code == 200, r.text
            return made["id"], bearer(r.json()["access_token"])

        _, agent_a = agent(a, "Fuzz agent A")
        victim_agent, _ = agent(a, "Victim agent A")
        _, agent_b = agent(b, "Agent B")
        po_b = login("po_b@fuzz.baton.test")
        callers: dict[str, dict[str, str] | None] = {
            "admin": admin,
            "product_owner_a": login("po_a@fuzz.baton.test"),
            "member_a": login("member_a@fuzz.baton.test"),
            "viewer_a": login("viewer_a@fuzz.baton.test"),
            "outsider": login("outsider@fuzz.baton.test"),
            "agent_a": agent_a,
            "anonymous": None,
            "product_owner_b": po_b,
        }
        isolation = TenantIsolation(
            client=client,
            b_client_id=b,
            b_callers={"product_owner_b": po_b, "agent_b": agent_b},
            resource_url=resource_url_for({users["po_b"]}),
            listings=listings,
        )
        yield Target(
            service="identity",
            app=client.app,
            client=client,
            callers=callers,
            # B's callers stay out of reach: an admin case granting them a role in A (or disabling
            # them) would make the isolation check's replays meaningless.
            known={
                "client_id": [a, b],
                "user_id": [users["victim_a"], users["member_a"], users["outsider"]],
                "agent_id": [victim_agent],
            },
            checks=[isolation],
            anonymous_only=frozenset({"POST /v1/auth/token"}),
            owner=admin,
        )


@pytest.fixture(scope="module")
def target(identity: Target) -> Target:
    return identity


test_identity_api, test_identity_edge_values, test_identity_api_long = generated_case_tests(schema)


def test_identity_cases_counted(identity: Target) -> None:
    """Cases were generated (the number is printed, and in the session summary) and answers were
    replayed as client B, so the isolation check did run."""
    print(f"\n{identity.summary()}")
    assert STATS["identity"] > 0
    assert identity.isolation_replays() > 0
