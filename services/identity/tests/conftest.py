"""Fixtures: the identity app on a fresh schema of the real Postgres, real tokens, helpers to seed data."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from identity.bootstrap import bootstrap_admin
from identity.config import Settings
from identity.context import IdentityContext
from identity.main import build_app
from identity.memberships.repository import KnownClientRepository
from identity.tables import metadata
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db import create_session_factory, transaction

ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "correct horse battery staple"
PASSWORD = "a perfectly fine passphrase"


def make_settings(database_url: str, nats_url: str, schema: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "database_schema": schema,
        "nats_url": nats_url,
        "jwt_issuer": "https://baton.test",
        "jwt_audience": "baton",
        "log_json": False,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 8192,
        "argon2_parallelism": 1,
        "key_publish_ahead_seconds": 0,
        "login_account_free_failures": 3,
        "login_ip_free_failures": 6,
        "secret_key": "identity-test-secret-0123456789",
    }
    values.update(extra)
    return Settings(**values)


@dataclass
class Identity:
    """One running identity app and what tests need around it."""

    app: Any
    client: httpx.AsyncClient
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    ctx: IdentityContext

    async def add_client(self, client_id: uuid.UUID | None = None) -> uuid.UUID:
        """Make a client known, as the projects service's ``client.created`` would."""
        client_id = client_id or uuid.uuid4()
        async with transaction(self.sessions) as session:
            await KnownClientRepository(session).learn(client_id)
        return client_id

    async def login(self, email: str, password: str, **headers: str) -> httpx.Response:
        return await self.client.post(
            "/v1/auth/login", json={"email": email, "password": password}, headers=headers
        )

    async def token(self, email: str, password: str) -> str:
        response = await self.login(email, password)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(ADMIN_EMAIL, ADMIN_PASSWORD)}"}

    async def create_user(self, email: str, password: str = PASSWORD, **fields: Any) -> dict[str, Any]:
        body = {"email": email, "password": password, "display_name": email.split("@")[0], **fields}
        response = await self.client.post("/v1/users", json=body, headers=await self.admin_headers())
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def bearer(self, email: str, password: str = PASSWORD) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(email, password)}"}


IdentityFactory = Callable[..., Awaitable[Identity]]


@pytest.fixture
async def identity_factory(
    fresh_schema: Any, database_url: str, nats_url: str
) -> AsyncIterator[IdentityFactory]:
    """Start identity apps; each call gets its own schema unless ``engine``/``schema`` are passed (two
    "replicas" on one database)."""
    stack: list[tuple[Any, httpx.AsyncClient, Any]] = []

    async def factory(
        *,
        engine: AsyncEngine | None = None,
        schema: str | None = None,
        external_transport: httpx.AsyncBaseTransport | None = None,
        **settings_extra: Any,
    ) -> Identity:
        if engine is None or schema is None:
            schema, engine = await fresh_schema("identity", metadata)
        settings = make_settings(database_url, nats_url, schema, **settings_extra)
        ctx = IdentityContext.from_settings(settings)
        app = build_app(
            settings,
            engine=engine,
            use_nats=False,
            context=ctx,
            configure_observability=False,
            external_transport=external_transport,
        )
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://identity.test")
        stack.append((app, client, lifespan))
        sessions = create_session_factory(engine)
        await bootstrap_admin(sessions, ctx.hasher, email=ADMIN_EMAIL, password=ADMIN_PASSWORD)
        return Identity(app=app, client=client, settings=settings, engine=engine, sessions=sessions, ctx=ctx)

    yield factory
    for _app, client, lifespan in reversed(stack):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def identity(identity_factory: IdentityFactory) -> Identity:
    return await identity_factory()
