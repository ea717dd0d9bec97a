"""Fixtures for the projects service tests: the real app on a fresh schema of the session's Postgres.

``svc`` gives an HTTP client wired to the app (through its lifespan), token helpers for every kind of
caller, and direct reads of the service's tables (rows, outbox) to check what a request wrote.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import httpx
import pytest
from projects.catalog.service import record_definition
from projects.clients.models import Client
from projects.config import Settings
from projects.database import Base, messaging
from projects.main import build_app
from projects.projects.models import Project
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.auth.testing import TokenFactory
from shared.db import create_session_factory, transaction

FreshSchema = Callable[..., Awaitable[tuple[str, AsyncEngine]]]
_names = count(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Svc:
    http: httpx.AsyncClient
    tokens: TokenFactory
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    schema: str
    app: Any = None
    admin: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def problem(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
        """``r`` is an RFC 9457 problem with ``status`` (and ``code``); returns its body."""
        return assert_problem(r, status, code)

    # -- callers ---------------------------------------------------------------------------------

    def user(self, client_id: Any, role: str = "product_owner", sub: str | None = None) -> dict[str, str]:
        sub = sub or f"user-{role}-{str(client_id)[-6:]}"
        return bearer(self.tokens.issue(sub, memberships={str(client_id): role}, name=f"User {role}"))

    def outsider(self) -> dict[str, str]:
        return bearer(self.tokens.issue("user-nobody"))

    def agent(
        self,
        client_id: Any,
        scopes: tuple[str, ...] = ("projects:read", "projects:write"),
        project_ids: list[Any] | None = None,
        sub: str = "agent-1",
    ) -> dict[str, str]:
        return bearer(
            self.tokens.issue(
                sub,
                kind="agent",
                client_id=str(client_id),
                scopes=scopes,
                project_ids=None if project_ids is None else [str(p) for p in project_ids],
            )
        )

    # -- fixtures through the API ----------------------------------------------------------------

    async def new_client(self, **fields: Any) -> dict[str, Any]:
        n = next(_names)
        body = {"name": f"Client {n}", "slug": f"client-{n}", **fields}
        r = await self.http.post("/v1/clients", json=body, headers=self.admin)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def new_project(
        self, client_id: Any, headers: dict[str, str] | None = None, **fields: Any
    ) -> dict[str, Any]:
        n = next(_names)
        body = {
            "client_id": str(client_id),
            "name": f"Project {n}",
            "kind": "greenfield",
            "type": "fullstack",
            **fields,
        }
        r = await self.http.post("/v1/projects", json=body, headers=headers or self.admin)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def know_workflows(self, *ids: str, version: int = 1) -> None:
        """Put workflow ids in the catalog, as the worker does when workflows announces them (the handler
        itself runs through the real consumer in test_catalog.py)."""
        async with transaction(self.sessions) as session:
            for definition_id in ids:
                await record_definition(session, definition_id, version, definition_id)

    # -- what is in the database -----------------------------------------------------------------

    async def outbox(self) -> list[dict[str, Any]]:
        """Every outbox row's envelope, oldest first."""
        async with self.sessions() as session:
            rows = (await session.execute(select(messaging.outbox).order_by(messaging.outbox.c.id))).all()
        return [dict(row.payload) for row in rows]

    async def counts(self) -> dict[str, int]:
        """Row counts of every table a request could write."""
        out = {}
        async with self.sessions() as session:
            for name, table in (
                ("clients", Client.__table__),
                ("projects", Project.__table__),
                ("outbox", messaging.outbox),
            ):
                out[name] = int(await session.scalar(select(func.count()).select_from(table)) or 0)
        return out

    async def project_row(self, project_id: Any) -> Project | None:
        async with self.sessions() as session:
            return await session.get(Project, uuid.UUID(str(project_id)))

    async def client_row(self, client_id: Any) -> Client | None:
        async with self.sessions() as session:
            return await session.get(Client, uuid.UUID(str(client_id)))


@pytest.fixture(scope="session")
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture
async def db(fresh_schema: FreshSchema) -> tuple[str, AsyncEngine]:
    return await fresh_schema("projects", Base.metadata)


@pytest.fixture
async def svc(db: tuple[str, AsyncEngine], database_url: str, tokens: TokenFactory) -> AsyncIterator[Svc]:
    schema, engine = db
    settings = Settings(
        environment="test",
        database_url=database_url,
        database_schema=schema,
        log_json=False,
        workflow_wait_seconds=0.1,  # a refusal for an unknown workflow comes after this wait
    )
    app = build_app(settings, engine=engine, token_verifier=tokens.verifier(), configure_observability=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield Svc(
                http=http,
                tokens=tokens,
                engine=engine,
                sessions=create_session_factory(engine),
                schema=schema,
                app=app,
                admin=bearer(tokens.issue("admin-1", admin=True, name="Ada Admin")),
            )


def assert_problem(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """``r`` is an RFC 9457 problem with ``status`` (and ``code``); returns its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers["content-type"]
    body = dict(r.json())
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    return body
