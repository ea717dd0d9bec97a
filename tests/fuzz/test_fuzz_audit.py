"""Fuzz the audit API in-process: readers of every kind against chains of clients A and B and the platform.

The schema is built by audit's real migrations (triggers, partitions) and seeded with entries in A's,
B's and the platform chain. Every 2xx entry is replayed as B's auditor and agent (``TenantIsolation``).
Refusals a schema cannot state are tolerated for schema-valid requests: a chain that must be named
because the caller audits several clients (or none), and time ranges that are empty or too long.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from shared.auth.testing import TokenFactory
from shared.db import create_engine, create_session_factory
from shared.migrations import upgrade
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

audit_main = pytest.importorskip("audit.main", reason="the audit service is not importable yet")
from audit.chain.canonical import EntryDraft  # noqa: E402
from audit.chain.service import PartitionKeeper, append_entries  # noqa: E402
from audit.config import Settings  # noqa: E402

MIGRATIONS = Path(audit_main.__file__).resolve().parents[2] / "migrations"
# Refusals that depend on the caller (which chain is implied) or on two parameters together.
AUDIT_RULES = frozenset({"client_id_required", "time_range_empty", "time_range_too_large"})

schema = load_schema(
    audit_main.build_app(
        Settings(environment="test", database_url="postgresql+asyncpg://unused/unused"),
        configure_observability=False,
    )
)


def drafts(client: uuid.UUID | None, n: int) -> list[EntryDraft]:
    return [
        EntryDraft(
            event_id=str(uuid.uuid4()),
            action="baton.projects.project.created.v1",
            client_id=client,
            payload={"i": i},
            actor_subject="user-1",
            actor_kind="user",
            resource_type="project",
            resource_id=str(i),
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
async def audit_db(database_url: str) -> Any:
    """A migrated audit schema with entries in A's, B's and the platform chain."""
    name, engine = await create_fresh_schema(database_url, "fuzzaudit")
    await engine.dispose()
    await upgrade(database_url, MIGRATIONS, name)
    a, b = uuid.uuid4(), uuid.uuid4()
    engine = create_engine(database_url, schema=name)
    ids: list[str] = []
    try:
        factory = create_session_factory(engine)
        await PartitionKeeper(factory).ensure(None)
        for client, n in ((a, 4), (b, 3), (None, 2)):
            async with factory() as session, session.begin():
                outcome = await append_entries(session, drafts(client, n))
            ids += [str(e.id) for e in outcome.appended]
    finally:
        await engine.dispose()
    yield name, str(a), str(b), ids
    await drop(database_url, name)


def resource_url(obj: Mapping[str, Any], path: str) -> tuple[str, str] | None:
    """An entry, owned by its chain (a client id or ``platform``)."""
    if "sequence" in obj and "chain" in obj and "id" in obj:
        return f"/v1/audit/entries/{obj['id']}", str(obj["chain"])
    return None


def listings(obj: Mapping[str, Any], owner: str) -> list[str]:
    return [f"/v1/audit/entries?client_id={owner}&limit=100", f"/v1/audit/verify?client_id={owner}"]


@pytest.fixture(scope="module")
def audit(audit_db: tuple[str, str, str, list[str]], database_url: str) -> Iterator[Target]:
    name, a, b, entry_ids = audit_db
    tokens = TokenFactory()
    settings = Settings(environment="test", database_url=database_url, database_schema=name)
    app = audit_main.build_app(settings, token_verifier=tokens.verifier(), configure_observability=False)

    def user(client_id: str, role: str) -> dict[str, str]:
        return bearer(tokens.issue(f"user-{role}-{client_id[-4:]}", memberships={client_id: role}))

    def agent(client_id: str, *scopes: str) -> dict[str, str]:
        return bearer(
            tokens.issue(f"agent-{client_id[-4:]}", kind="agent", client_id=client_id, scopes=scopes)
        )

    with running(app) as client:
        callers: dict[str, dict[str, str] | None] = {
            "admin": bearer(tokens.issue("fuzz-admin", admin=True)),
            "auditor_a": user(a, "auditor"),
            "product_owner_a": user(a, "product_owner"),
            "viewer_a": user(a, "viewer"),
            "agent_a": agent(a, "audit:read"),
            "agent_a_no_scope": agent(a, "projects:read"),
            "outsider": bearer(tokens.issue("user-outsider")),
            "anonymous": None,
            "auditor_b": user(b, "auditor"),
        }
        isolation = TenantIsolation(
            client=client,
            b_client_id=b,
            b_callers={"auditor_b": user(b, "auditor"), "agent_b": agent(b, "audit:read")},
            resource_url=resource_url,
            listings=listings,
        )
        yield Target(
            service="audit",
            app=client.app,
            client=client,
            callers=callers,
            known={"client_id": [a, b, "platform"], "entry_id": entry_ids},
            checks=[isolation],
            acceptance=PositiveDataAccepted(codes=PositiveDataAccepted().codes | AUDIT_RULES),
        )


@pytest.fixture(scope="module")
def target(audit: Target) -> Target:
    return audit


test_audit_api, test_audit_edge_values, test_audit_api_long = generated_case_tests(schema)


def test_audit_cases_counted(audit: Target) -> None:
    """Cases were generated (the number is printed, and in the session summary) and answers were
    replayed as client B, so the isolation check did run."""
    print(f"\n{audit.summary()}")
    assert STATS["audit"] > 0
    assert audit.isolation_replays() > 0
