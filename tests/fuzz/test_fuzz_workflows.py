"""Fuzz the workflows API in-process: definitions, instances, tasks and decisions as every kind of caller.

Seeded: the built-in definitions and one project each for clients A and B (started as the worker would,
from ``project.created``), so there are real tasks to claim and complete. Every 2xx instance, task or
decision is replayed as B's product owner and agent (``TenantIsolation``). Refusals by rules of the
workflow itself (a task that must produce a document, an answer that is not one of the decision's
options, a file that is not a BMAD workflow) are tolerated for schema-valid requests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from shared.auth.testing import TokenFactory
from shared.db import create_session_factory, transaction
from shared.testing.backends import create_fresh_schema

from .cases import generated_case_tests
from .harness import (
    STATS,
    PositiveDataAccepted,
    Target,
    TenantIsolation,
    bearer,
    drop,
    load_schema,
    running,
)

workflows_main = pytest.importorskip("workflows.main", reason="the workflows service is not importable yet")
from workflows.config import Settings  # noqa: E402
from workflows.database import Base  # noqa: E402
from workflows.definitions.service import load_builtin  # noqa: E402
from workflows.instances.service import on_project_created  # noqa: E402

from shared.events.projects import ProjectCreated  # noqa: E402

schema = load_schema(
    workflows_main.build_app(
        Settings(environment="test", database_url="postgresql+asyncpg://unused/unused"),
        configure_observability=False,
    )
)
BMAD_ROLES = ("analyst", "pm", "architect", "po", "sm", "dev", "qa", "ux-expert")
# Refusals that depend on the task, decision or file, not on the request's shape.
WORKFLOW_RULES = frozenset(
    {"document_required", "document_kind_mismatch", "invalid_answer", "invalid_workflow_definition"}
)


@pytest.fixture(scope="module")
async def workflows_db(database_url: str) -> Any:
    """Built-in definitions stored; a started project for client A and one for B."""
    name, engine = await create_fresh_schema(database_url, "fuzzworkflows", Base.metadata)
    a, b = uuid.uuid4(), uuid.uuid4()
    projects = {a: uuid.uuid4(), b: uuid.uuid4()}
    try:
        factory = create_session_factory(engine)
        await load_builtin(factory)
        for client_id, project_id in projects.items():
            event = ProjectCreated(
                project_id=project_id,
                client_id=client_id,
                name=f"Project of {str(client_id)[:8]}",
                kind="greenfield",
                type="fullstack",
                created_by="user-po",
                version=1,
            )
            async with transaction(factory) as session:
                await on_project_created(session, event, tenant=str(client_id))
    finally:
        await engine.dispose()
    yield name, str(a), str(b), [str(projects[a]), str(projects[b])]
    await drop(database_url, name)


def resource_url(obj: Mapping[str, Any], path: str) -> tuple[str, str] | None:
    """An instance, task or decision, each owned by its ``client_id``."""
    if "client_id" not in obj or "id" not in obj:
        return None
    owner = str(obj["client_id"])
    if "open_tasks" in obj and "project_id" in obj:
        return f"/v1/projects/{obj['project_id']}/workflow", owner
    if "step_id" in obj and "lease_expires_at" in obj:
        return f"/v1/tasks/{obj['id']}", owner
    if "question" in obj and "options" in obj:
        return f"/v1/decisions/{obj['id']}", owner
    return None


def listings(obj: Mapping[str, Any], owner: str) -> list[str]:
    if "lease_expires_at" in obj:
        return [f"/v1/tasks?client_id={owner}&limit=100", "/v1/tasks?limit=100"]
    if "question" in obj:
        return [f"/v1/decisions?client_id={owner}&limit=100", "/v1/decisions?limit=100"]
    return []


@pytest.fixture(scope="module")
def workflows(workflows_db: tuple[str, str, str, list[str]], database_url: str) -> Iterator[Target]:
    name, a, b, project_ids = workflows_db
    tokens = TokenFactory()
    settings = Settings(environment="test", database_url=database_url, database_schema=name, log_json=False)
    app = workflows_main.build_app(settings, token_verifier=tokens.verifier(), configure_observability=False)

    def user(client_id: str, role: str) -> dict[str, str]:
        return bearer(tokens.issue(f"user-{role}-{client_id[-4:]}", memberships={client_id: role}))

    def agent(client_id: str, *scopes: str) -> dict[str, str]:
        return bearer(
            tokens.issue(
                f"agent-{client_id[-4:]}",
                kind="agent",
                client_id=client_id,
                scopes=scopes,
                bmad_roles=BMAD_ROLES,
            )
        )

    admin = bearer(tokens.issue("fuzz-admin", admin=True))
    with running(app) as client:
        tasks: list[str] = []
        decisions: list[str] = []
        for project_id in project_ids:
            r = client.get(f"/v1/projects/{project_id}/workflow", headers=admin)
            assert r.status_code == 200, r.text
            tasks += [t["id"] for t in r.json()["open_tasks"]]
            decisions += [d["id"] for d in r.json()["open_decisions"]]
        assert tasks, "the seeded projects have no open task"
        callers: dict[str, dict[str, str] | None] = {
            "admin": admin,
            "product_owner_a": user(a, "product_owner"),
            "member_a": user(a, "member"),
            "viewer_a": user(a, "viewer"),
            "agent_a": agent(a, "workflows:read", "workflows:write"),
            "agent_a_readonly": agent(a, "workflows:read"),
            "agent_a_no_scope": agent(a),
            "outsider": bearer(tokens.issue("user-outsider")),
            "anonymous": None,
            "product_owner_b": user(b, "product_owner"),
        }
        isolation = TenantIsolation(
            client=client,
            b_client_id=b,
            b_callers={
                "product_owner_b": user(b, "product_owner"),
                "agent_b": agent(b, "workflows:read", "workflows:write"),
            },
            resource_url=resource_url,
            listings=listings,
        )
        yield Target(
            service="workflows",
            app=client.app,
            client=client,
            callers=callers,
            known={
                "client_id": [a, b],
                "project_id": project_ids,
                "task_id": tasks,
                "decision_id": decisions or [str(uuid.uuid4())],
                "definition_id": ["greenfield-fullstack", "brownfield-service"],
            },
            checks=[isolation],
            acceptance=PositiveDataAccepted(codes=PositiveDataAccepted().codes | WORKFLOW_RULES),
        )


@pytest.fixture(scope="module")
def target(workflows: Target) -> Target:
    return workflows


test_workflows_api, test_workflows_edge_values, test_workflows_api_long = generated_case_tests(schema)


def test_workflows_cases_counted(workflows: Target) -> None:
    """Cases were generated (the number is printed, and in the session summary) and answers were
    replayed as client B, so the isolation check did run."""
    print(f"\n{workflows.summary()}")
    assert STATS["workflows"] > 0
    assert workflows.isolation_replays() > 0
