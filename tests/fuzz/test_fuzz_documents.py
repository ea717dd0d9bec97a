"""Fuzz the documents API in-process: uploads, versions, content, sections, search and reindexing.

Seeded: clients A and B with one project each (made known as the projects events would), two markdown
documents per project, processed with the fake embedder so there are sections and search hits. Every
2xx document, version list or search hit is replayed as B's product owner and agent
(``TenantIsolation``). A file part whose bytes are not Markdown, text or PDF is refused by the content
sniffing, a rule the schema (a binary string) cannot state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from shared.auth.testing import TokenFactory
from shared.db import create_engine, create_session_factory, new_id, transaction, utcnow
from shared.events.projects import ClientCreated, ProjectCreated
from shared.messaging import Actor, Envelope
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
    run_async,
    running,
)

documents_main = pytest.importorskip("documents.main", reason="the documents service is not importable yet")
from documents.config import Settings  # noqa: E402
from documents.database import Base  # noqa: E402
from documents.documents.blobstore import PostgresBlobStore  # noqa: E402
from documents.documents.models import DocumentVersion  # noqa: E402
from documents.embeddings.fake import FakeHashProvider  # noqa: E402
from documents.processing.service import Processor  # noqa: E402
from documents.projects.handlers import ProjectEvents  # noqa: E402
from sqlalchemy import select  # noqa: E402

# An uploaded file is sniffed: empty, binary or an archive is refused whatever its part's schema says.
CONTENT_RULES = frozenset({"empty_content", "unsupported_content"})


def make_settings(database_url: str, schema: str) -> Settings:
    return Settings(
        environment="test",
        database_url=database_url,
        database_schema=schema,
        embedding_provider="fake",
        project_wait_seconds=0.0,
        max_upload_bytes=256 * 1024,
        log_json=False,
    )


schema = load_schema(
    documents_main.build_app(
        make_settings("postgresql+asyncpg://unused/unused", "unused"),
        embedder=FakeHashProvider(),
        configure_observability=False,
    )
)


def envelope(event: Any, tenant: Any = None) -> Envelope:
    return Envelope(
        id=str(new_id()),
        source="/baton/projects",
        type=event.event_type,
        subject=str(getattr(event, "project_id", None) or getattr(event, "client_id", "")),
        time=utcnow(),
        tenant=None if tenant is None else str(tenant),
        actor=Actor(subject="fuzz-admin", kind="user"),
        data=event.model_dump(mode="json"),
    )


@pytest.fixture(scope="module")
async def documents_db(database_url: str) -> Any:
    """Clients A and B and one project each, known to documents (partitions made)."""
    name, engine = await create_fresh_schema(database_url, "fuzzdocuments", Base.metadata)
    projects = {uuid.uuid4(): uuid.uuid4(), uuid.uuid4(): uuid.uuid4()}
    try:
        sessions = create_session_factory(engine)
        events = ProjectEvents(PostgresBlobStore(sessions))
        for client_id, project_id in projects.items():
            created = ClientCreated(
                client_id=client_id, name="C", slug=f"c-{client_id.hex[:8]}", status="active", version=1
            )
            async with transaction(sessions) as session:
                await events.on_client_created(session, envelope(created))
            project = ProjectCreated(
                project_id=project_id,
                client_id=client_id,
                name="P",
                kind="greenfield",
                type="fullstack",
                created_by="fuzz-admin",
                version=1,
            )
            async with transaction(sessions) as session:
                await events.on_project_created(session, envelope(project, tenant=client_id))
    finally:
        await engine.dispose()
    (a, pa), (b, pb) = projects.items()
    yield name, str(a), str(b), str(pa), str(pb)
    await drop(database_url, name)


async def process_pending(database_url: str, schema_name: str) -> None:
    """Run the processing pipeline (as the worker would) on every pending version."""
    engine = create_engine(database_url, schema=schema_name)
    try:
        sessions = create_session_factory(engine)
        processor = Processor(
            factory=sessions, provider=FakeHashProvider(), blobs=PostgresBlobStore(sessions)
        )
        async with sessions() as session:
            pending = list(
                await session.scalars(select(DocumentVersion.id).where(DocumentVersion.status == "pending"))
            )
        for version_id in pending:
            async with transaction(sessions) as session:
                await processor.process(session, version_id)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def documents(documents_db: tuple[str, str, str, str, str], database_url: str) -> Iterator[Target]:
    name, a, b, pa, pb = documents_db
    tokens = TokenFactory()
    app = documents_main.build_app(
        make_settings(database_url, name),
        embedder=FakeHashProvider(),
        token_verifier=tokens.verifier(),
        configure_observability=False,
    )
    owners = {pa: a, pb: b}

    def user(client_id: str, role: str) -> dict[str, str]:
        return bearer(tokens.issue(f"user-{role}-{client_id[-4:]}", memberships={client_id: role}))

    def agent(client_id: str, *scopes: str) -> dict[str, str]:
        return bearer(
            tokens.issue(f"agent-{client_id[-4:]}", kind="agent", client_id=client_id, scopes=scopes)
        )

    def resource_url(obj: Mapping[str, Any], path: str) -> tuple[str, str] | None:
        """A document (owned by its client) or a search hit / version (owned by its project's client)."""
        if "revision" in obj and "client_id" in obj and "id" in obj:
            return f"/v1/documents/{obj['id']}", str(obj["client_id"])
        if "document_id" in obj and ("chunk_id" in obj or "sha256" in obj):
            owner = owners.get(str(obj.get("project_id")), "") if "project_id" in obj else ""
            if not owner and path.startswith("/v1/documents/"):
                return None  # a version list: its document was replayed when it was read
            return f"/v1/documents/{obj['document_id']}", owner or "unknown"
        return None

    admin = bearer(tokens.issue("fuzz-admin", admin=True))
    with running(app) as client:
        doc_ids: list[str] = []
        for project_id in (pa, pb):
            for n, kind in enumerate(("prd", "architecture")):
                body = {
                    "title": f"Doc {n}",
                    "kind": kind,
                    "content": f"# Goals\n\nPlants are watered {n} times.\n",
                }
                r = client.post(f"/v1/projects/{project_id}/documents", json=body, headers=admin)
                assert r.status_code == 201, r.text
                doc_ids.append(r.json()["id"])
        run_async(lambda: process_pending(database_url, name))
        callers: dict[str, dict[str, str] | None] = {
            "admin": admin,
            "product_owner_a": user(a, "product_owner"),
            "member_a": user(a, "member"),
            "viewer_a": user(a, "viewer"),
            "agent_a": agent(a, "documents:read", "documents:write", "search"),
            "agent_a_readonly": agent(a, "documents:read", "search"),
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
                "agent_b": agent(b, "documents:read", "documents:write", "search"),
            },
            resource_url=resource_url,
        )
        yield Target(
            service="documents",
            app=client.app,
            client=client,
            callers=callers,
            known={"project_id": [pa, pb], "document_id": doc_ids, "project_ids": [pa, pb]},
            checks=[isolation],
            acceptance=PositiveDataAccepted(codes=PositiveDataAccepted().codes | CONTENT_RULES),
        )


@pytest.fixture(scope="module")
def target(documents: Target) -> Target:
    return documents


test_documents_api, test_documents_edge_values, test_documents_api_long = generated_case_tests(schema)


def test_documents_cases_counted(documents: Target) -> None:
    """Cases were generated (the number is printed, and in the session summary) and answers were
    replayed as client B, so the isolation check did run."""
    print(f"\n{documents.summary()}")
    assert STATS["documents"] > 0
    assert documents.isolation_replays() > 0
