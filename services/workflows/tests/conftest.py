"""Fixtures for the workflows service tests: the real app on a fresh schema of the session's Postgres.

``svc`` gives an HTTP client wired to the app (through its lifespan, so the built-in definitions are
loaded), token helpers for every kind of caller, the event handlers the worker runs (called directly
here; the NATS tests run them through real consumers), and reads of the outbox.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from workflows.config import Settings
from workflows.database import Base, messaging
from workflows.instances import service
from workflows.main import build_app

from shared.auth.testing import TokenFactory
from shared.db import create_session_factory, new_id, transaction
from shared.events.documents import DocumentIndexed
from shared.events.projects import ProjectCreated


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def project_created(client_id: Any, project_id: Any = None, **fields: Any) -> ProjectCreated:
    data = {
        "project_id": project_id or new_id(),
        "client_id": client_id,
        "name": "Plant Tracker",
        "kind": "greenfield",
        "type": "fullstack",
        "created_by": "user-po",
        "version": 1,
        **fields,
    }
    return ProjectCreated(**data)


def document_indexed(project_id: Any, client_id: Any, kind: str, **fields: Any) -> DocumentIndexed:
    data = {
        "document_id": new_id(),
        "project_id": project_id,
        "client_id": client_id,
        "version_id": new_id(),
        "version": 1,
        "kind": kind,
        "title": f"A {kind}",
        "chunk_count": 3,
        "section_count": 1,
        "model_id": "minilm",
        **fields,
    }
    return DocumentIndexed(**data)


def assert_problem(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = dict(r.json())
    if code is not None:
        assert body["code"] == code, body
    return body


@dataclass
class Svc:
    http: httpx.AsyncClient
    tokens: TokenFactory
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    schema: str

    problem = staticmethod(assert_problem)

    # -- callers -------------------------------------------------------------------------------------------
    @property
    def admin(self) -> dict[str, str]:
        return bearer(self.tokens.issue("admin-1", admin=True))

    def user(self, client_id: Any, role: str = "member", sub: str | None = None) -> dict[str, str]:
        return bearer(self.tokens.issue(sub or f"user-{role}", memberships={str(client_id): role}))

    def agent(
        self,
        client_id: Any,
        roles: tuple[str, ...] = (),
        scopes: tuple[str, ...] = ("workflows:read", "workflows:write"),
        project_ids: list[Any] | None = None,
        sub: str | None = None,
    ) -> dict[str, str]:
        return bearer(
            self.tokens.issue(
                sub or f"agent-{'-'.join(roles) or 'none'}",
                kind="agent",
                client_id=str(client_id),
                scopes=scopes,
                bmad_roles=roles,
                project_ids=None if project_ids is None else [str(p) for p in project_ids],
            )
        )

    # -- events, as the worker's consumers apply them ------------------------------------------------------
    async def created(self, client_id: Any = None, **fields: Any) -> tuple[uuid.UUID, uuid.UUID]:
        client = client_id or new_id()
        event = project_created(client, **fields)
        async with transaction(self.sessions) as session:
            await service.on_project_created(session, event, tenant=str(client))
        return event.client_id, event.project_id

    async def indexed(self, project_id: Any, client_id: Any, kind: str, **fields: Any) -> uuid.UUID:
        event = document_indexed(project_id, client_id, kind, **fields)
        async with transaction(self.sessions) as session:
            await service.on_document_indexed(session, event, tenant=str(client_id))
        return event.document_id

    # -- reads -----------------------------------------------------------------------------------------------
    async def workflow(self, project_id: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        r = await self.http.get(f"/v1/projects/{project_id}/workflow", headers=headers or self.admin)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def history(self, project_id: Any) -> list[tuple[str, str | None, str | None]]:
        """The instance's history as the API shows it, oldest first: (event, step, who)."""
        entries = (await self.workflow(project_id))["history"]
        assert [e["at"] for e in entries] == sorted(e["at"] for e in entries), entries
        return [(e["event"], e["step_id"], e["actor"]) for e in entries]

    async def waiting(self, project_id: Any) -> dict[str, Any]:
        """The open task or decision the project waits on."""
        wf = await self.workflow(project_id)
        items = wf["open_tasks"] + wf["open_decisions"]
        assert len(items) == 1, items
        return dict(items[0])

    async def outbox(self) -> list[dict[str, Any]]:
        async with self.sessions() as session:
            rows = (await session.execute(select(messaging.outbox).order_by(messaging.outbox.c.id))).all()
        return [dict(row.payload) for row in rows]

    async def events(self, name: str, **data: Any) -> list[dict[str, Any]]:
        """Outbox envelopes of one workflow event (``decision_made``), those whose data holds ``data``."""
        return [
            e
            for e in await self.outbox()
            if e["type"] == f"baton.workflows.workflow.{name}.v1"
            and all(e["data"].get(k) == v for k, v in data.items())
        ]

    async def event_types(self) -> list[str]:
        return [
            e["type"].removeprefix("baton.workflows.workflow.").removesuffix(".v1")
            for e in await self.outbox()
            if e["type"].startswith("baton.workflows.workflow.")  # not the definitions' announcements
        ]


@pytest.fixture
async def svc(fresh_schema) -> AsyncIterator[Svc]:
    schema, engine = await fresh_schema("wf", Base.metadata)
    tokens = TokenFactory()
    settings = Settings(environment="test", database_schema=schema, log_json=False)
    app = build_app(settings, engine=engine, token_verifier=tokens.verifier(), configure_observability=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield Svc(
                http=http,
                tokens=tokens,
                engine=engine,
                sessions=create_session_factory(engine),
                schema=schema,
            )
