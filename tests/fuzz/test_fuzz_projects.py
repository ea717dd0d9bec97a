"""Fuzz the projects API in-process as every kind of caller; a stateful run looks for cross-tenant access.

Seeded data: clients A and B, two projects each. Callers: an admin, each client role of A, agents of A
(read/write, read-only, narrowed to one project, no scope), an outsider, no token, and B's product
owner. Every 2xx answer is replayed as B's callers (``TenantIsolation``): A's clients and projects stay
invisible to them, and in the stateful run (client → project → get/patch/delete, as the admin) B's
PATCH and DELETE of each of them are 404s that change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import hypothesis
import pytest
from projects.config import Settings
from projects.database import Base
from projects.main import build_app

from shared.auth.testing import TokenFactory

from .cases import generated_case_tests
from .harness import (
    FAST_EXAMPLES,
    SLOW_EXAMPLES,
    STATS,
    Snapshot,
    Target,
    TenantIsolation,
    bearer,
    drop,
    fresh_schema_name,
    fuzz_settings,
    load_schema,
    run_state_machine,
    running,
)

_PLACEHOLDER = build_app(
    Settings(environment="test", database_url="postgresql+asyncpg://unused/unused"),
    configure_observability=False,
)
schema = load_schema(_PLACEHOLDER)


def resource_url(obj: Mapping[str, Any], path: str) -> tuple[str, str] | None:
    """A project (owned by its ``client_id``) or a client (owned by itself), with the URL that reads it."""
    if "id" not in obj:
        return None
    if path.startswith("/v1/projects") and "client_id" in obj:
        return f"/v1/projects/{obj['id']}", str(obj["client_id"])
    if path.startswith("/v1/clients") and "slug" in obj:
        return f"/v1/clients/{obj['id']}", str(obj["id"])
    return None


def listings(obj: Mapping[str, Any], owner: str) -> list[str]:
    if "client_id" in obj:
        return [f"/v1/projects?client_id={owner}&limit=100", "/v1/projects?limit=100"]
    return ["/v1/clients?limit=100"]


def patch_body(url: str) -> dict[str, Any]:
    return (
        {"description": "changed by another tenant"}
        if url.startswith("/v1/projects")
        else {"name": "Changed by another tenant"}
    )


@pytest.fixture(scope="module")
async def projects_db(database_url: str) -> Any:
    schema_name = await fresh_schema_name(database_url, "fuzzprojects", Base.metadata)
    yield schema_name
    await drop(database_url, schema_name)


@pytest.fixture(scope="module")
def projects(projects_db: str, database_url: str) -> Iterator[Target]:
    tokens = TokenFactory()
    settings = Settings(
        environment="test",
        database_url=database_url,
        database_schema=projects_db,
        log_json=False,
        workflow_wait_seconds=0.05,  # generated types name made-up workflows: no 2 s wait each
    )
    app = build_app(settings, token_verifier=tokens.verifier(), configure_observability=False)
    admin = bearer(tokens.issue("fuzz-admin", admin=True, name="Fuzz Admin"))
    with running(app) as client:
        ids: dict[str, list[str]] = {"client_id": [], "project_id": []}
        for letter in "ab":
            r = client.post(
                "/v1/clients", json={"name": f"Client {letter}", "slug": f"client-{letter}"}, headers=admin
            )
            assert r.status_code == 201, r.text
            ids["client_id"].append(r.json()["id"])
        a, b = ids["client_id"]

        def user(client_id: str, role: str) -> dict[str, str]:
            return bearer(tokens.issue(f"user-{role}-{client_id[-4:]}", memberships={client_id: role}))

        def agent(client_id: str, *scopes: str, project_ids: list[str] | None = None) -> dict[str, str]:
            return bearer(
                tokens.issue(
                    f"agent-{client_id[-4:]}",
                    kind="agent",
                    client_id=client_id,
                    scopes=scopes,
                    project_ids=project_ids,
                )
            )

        po_a, po_b = user(a, "product_owner"), user(b, "product_owner")
        for client_id, headers in ((a, po_a), (b, po_b)):
            for n in range(2):
                body = {"client_id": client_id, "name": f"Project {n}", "kind": "greenfield", "type": "ui"}
                r = client.post("/v1/projects", headers=headers, json=body)
                assert r.status_code == 201, r.text
                ids["project_id"].append(r.json()["id"])
        callers: dict[str, dict[str, str] | None] = {
            "admin": admin,
            "product_owner_a": po_a,
            "member_a": user(a, "member"),
            "viewer_a": user(a, "viewer"),
            "auditor_a": user(a, "auditor"),
            "agent_a": agent(a, "projects:read", "projects:write"),
            "agent_a_readonly": agent(a, "projects:read"),
            "agent_a_narrowed": agent(
                a, "projects:read", "projects:write", project_ids=[ids["project_id"][0]]
            ),
            "agent_a_no_scope": agent(a),
            "outsider": bearer(tokens.issue("user-outsider")),
            "anonymous": None,
            "product_owner_b": po_b,
        }
        isolation = TenantIsolation(
            client=client,
            b_client_id=b,
            b_callers={
                "product_owner_b": po_b,
                "viewer_b": user(b, "viewer"),
                "agent_b": agent(b, "projects:read", "projects:write"),
            },
            resource_url=resource_url,
            listings=listings,
        )
        snapshot = Snapshot(database_url, projects_db)
        snapshot.take()
        yield Target(
            service="projects",
            app=client.app,
            client=client,
            callers=callers,
            known=ids,
            checks=[isolation],
            owner=admin,
            snapshot=snapshot,
        )


@pytest.fixture(scope="module")
def target(projects: Target) -> Target:
    return projects


test_projects_api, test_projects_edge_values, test_projects_api_long = generated_case_tests(schema)


def stateful_schema() -> Any:
    """The document plus one link schemathesis does not infer: a new client's id into a new project."""
    doc = _PLACEHOLDER.openapi()
    created = doc["paths"]["/v1/clients"]["post"]["responses"]["201"]
    created["links"] = {
        "CreateProjectOfClient": {
            "operationId": doc["paths"]["/v1/projects"]["post"]["operationId"],
            "requestBody": {"client_id": "$response.body#/id"},
        }
    }
    return load_schema(doc)


def _stateful(projects: Target, *, max_examples: int, deterministic: bool) -> None:
    isolation = projects.checks[0]
    assert isinstance(isolation, TenantIsolation)
    writes = TenantIsolation(
        client=isolation.client,
        b_client_id=isolation.b_client_id,
        b_callers=isolation.b_callers,
        resource_url=resource_url,
        listings=listings,
        patch_body=patch_body,
        owner_headers=projects.owner,
    )
    before = sum(writes.replays.values())
    run_state_machine(
        stateful_schema(),
        projects,
        checks=[writes],
        settings=hypothesis.settings(
            fuzz_settings(max_examples, deterministic=deterministic, shrink=False), stateful_step_count=10
        ),
    )
    print(f"\nprojects stateful: B's replays {dict(writes.replays)}")
    assert sum(writes.replays.values()) > before, "the stateful run never produced a resource to replay"


def test_projects_stateful_no_cross_tenant_access(projects: Target) -> None:
    _stateful(projects, max_examples=max(10, FAST_EXAMPLES // 2), deterministic=True)


@pytest.mark.slow
def test_projects_stateful_no_cross_tenant_access_long(projects: Target) -> None:
    _stateful(projects, max_examples=SLOW_EXAMPLES // 4, deterministic=False)


def test_projects_cases_counted(projects: Target) -> None:
    """Cases were generated (the number is printed, and in the session summary) and answers were
    replayed as client B, so the isolation check did run."""
    print(f"\n{projects.summary()}")
    assert STATS["projects"] > 0
    assert STATS["projects (stateful)"] > 0
    assert projects.isolation_replays() > 0
