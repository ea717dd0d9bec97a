"""The FastAPI dependencies through a tiny app, as a service would mount them."""

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Depends, FastAPI

from shared.auth import (
    AdminPrincipal,
    CurrentPrincipal,
    OptionalPrincipal,
    ensure_client_role,
    ensure_project_access,
    require_any_scope,
    require_scopes,
)
from shared.auth.testing import TokenFactory
from shared.errors import PROBLEM_CONTENT_TYPE, install_error_handlers


def build_app(tokens: TokenFactory) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.state.token_verifier = tokens.verifier()

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, str]:
        return {"sub": principal.subject, "kind": principal.kind}

    @app.get("/maybe")
    async def maybe(principal: OptionalPrincipal) -> dict[str, str | None]:
        return {"sub": principal.subject if principal else None}

    @app.get("/admin")
    async def admin(principal: AdminPrincipal) -> dict[str, str]:
        return {"sub": principal.subject}

    @app.get("/documents", dependencies=[Depends(require_scopes("documents:read"))])
    async def documents() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/search", dependencies=[Depends(require_any_scope("search", "documents:read"))])
    async def search() -> dict[str, bool]:
        return {"ok": True}

    @app.put("/clients/{client_id}/settings")
    async def client_settings(client_id: str, principal: CurrentPrincipal) -> dict[str, bool]:
        ensure_client_role(principal, client_id, {"product_owner"}, scopes={"projects:write"})
        return {"ok": True}

    @app.get("/clients/{client_id}/projects/{project_id}")
    async def project(client_id: str, project_id: str, principal: CurrentPrincipal) -> dict[str, bool]:
        ensure_project_access(principal, client_id, project_id)
        return {"ok": True}

    return app


@pytest.fixture
async def client(tokens: TokenFactory) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(tokens))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_valid_token_reaches_the_route(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    r = await client.get("/me", headers=bearer(tokens.issue("u1")))
    assert r.status_code == 200
    assert r.json() == {"sub": "u1", "kind": "user"}


async def test_scheme_is_case_insensitive(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    r = await client.get("/me", headers={"Authorization": f"bearer {tokens.issue('u1')}"})
    assert r.status_code == 200


async def test_missing_token_is_401_with_bare_challenge(client: httpx.AsyncClient) -> None:
    r = await client.get("/me")
    assert r.status_code == 401
    assert r.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["code"] == "unauthorized"


@pytest.mark.parametrize(
    "value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer a b", "Token abc", "abc"]
)
async def test_malformed_authorization_is_401(client: httpx.AsyncClient, value: str) -> None:
    r = await client.get("/me", headers={"Authorization": value})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["code"] == "invalid_authorization_header"


async def test_two_authorization_headers_are_401(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    token = tokens.issue("u1")
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    r = await client.get("/me", headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == "invalid_authorization_header"


async def test_invalid_token_is_401_invalid_token(client: httpx.AsyncClient) -> None:
    r = await client.get("/me", headers=bearer("not.a.token"))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    body = r.json()
    assert body["code"] == "invalid_token"
    assert body["status"] == 401
    assert "joserfc" not in r.text


async def test_expired_token_is_401_token_expired(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    token = tokens.issue("u1", issued_at=int(time.time()) - 1000)
    r = await client.get("/me", headers=bearer(token))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert r.json()["code"] == "token_expired"


async def test_optional_principal(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    assert (await client.get("/maybe")).json() == {"sub": None}
    assert (await client.get("/maybe", headers=bearer(tokens.issue("u1")))).json() == {"sub": "u1"}
    r = await client.get("/maybe", headers=bearer("x.y.z"))  # a bad token is not silently anonymous
    assert r.status_code == 401


async def test_require_admin(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    r = await client.get("/admin", headers=bearer(tokens.issue("u1")))
    assert r.status_code == 403
    assert r.json()["code"] == "admin_required"
    r = await client.get("/admin", headers=bearer(tokens.issue("root", admin=True)))
    assert r.status_code == 200


async def test_require_scopes_binds_agents(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    without = tokens.issue("bot", kind="agent", client_id="c1", scopes=["projects:read"])
    r = await client.get("/documents", headers=bearer(without))
    assert r.status_code == 403
    assert r.json()["code"] == "insufficient_scope"
    assert r.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="documents:read"'

    with_scope = tokens.issue("bot", kind="agent", client_id="c1", scopes=["documents:read"])
    assert (await client.get("/documents", headers=bearer(with_scope))).status_code == 200


async def test_require_scopes_lets_users_through(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    r = await client.get("/documents", headers=bearer(tokens.issue("u1")))
    assert r.status_code == 200


def test_require_scopes_needs_a_scope() -> None:
    with pytest.raises(ValueError, match="scope"):
        require_scopes()
    with pytest.raises(ValueError, match="scope"):
        require_any_scope()


async def test_require_any_scope_takes_one_of_them(client: httpx.AsyncClient, tokens: TokenFactory) -> None:
    without = tokens.issue("bot", kind="agent", client_id="c1", scopes=["projects:read"])
    r = await client.get("/search", headers=bearer(without))
    assert (r.status_code, r.json()["code"]) == (403, "insufficient_scope")
    assert r.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="search"'
    for scopes in (["search"], ["documents:read"], ["search", "documents:read"]):
        agent = tokens.issue("bot", kind="agent", client_id="c1", scopes=scopes)
        assert (await client.get("/search", headers=bearer(agent))).status_code == 200, scopes
    assert (await client.get("/search", headers=bearer(tokens.issue("u1")))).status_code == 200


@pytest.mark.parametrize(
    ("claims", "status", "code"),
    [
        ({"memberships": {}}, 404, "not_found"),
        ({"memberships": {"c2": "product_owner"}}, 404, "not_found"),
        ({"memberships": {"c1": "viewer"}}, 403, "insufficient_role"),
        ({"memberships": {"c1": "member"}}, 403, "insufficient_role"),
        ({"memberships": {"c1": "product_owner"}}, 200, None),
        ({"admin": True}, 200, None),
        ({"kind": "agent", "client_id": "c1", "scopes": ["projects:write"]}, 200, None),
        ({"kind": "agent", "client_id": "c1", "scopes": ["projects:read"]}, 403, "insufficient_scope"),
        ({"kind": "agent", "client_id": "c2", "scopes": ["projects:write"]}, 404, "not_found"),
    ],
)
async def test_ensure_client_role(
    client: httpx.AsyncClient, tokens: TokenFactory, claims: dict, status: int, code: str | None
) -> None:
    r = await client.put("/clients/c1/settings", headers=bearer(tokens.issue("p", **claims)))
    assert r.status_code == status
    if code:
        assert r.json()["code"] == code


async def test_not_found_for_foreign_client_looks_like_missing(
    client: httpx.AsyncClient, tokens: TokenFactory
) -> None:
    r = await client.put("/clients/c1/settings", headers=bearer(tokens.issue("u1")))
    missing = await client.get("/no-such-route", headers=bearer(tokens.issue("u1")))
    assert (r.status_code, r.json()["code"]) == (missing.status_code, missing.json()["code"])


@pytest.mark.parametrize(
    ("claims", "path", "status"),
    [
        ({"kind": "agent", "client_id": "c1", "project_ids": ["p1"]}, "/clients/c1/projects/p1", 200),
        ({"kind": "agent", "client_id": "c1", "project_ids": ["p1"]}, "/clients/c1/projects/p2", 404),
        ({"kind": "agent", "client_id": "c1"}, "/clients/c1/projects/p2", 200),
        ({"kind": "agent", "client_id": "c1"}, "/clients/c2/projects/p2", 404),
        ({"memberships": {"c1": "viewer"}}, "/clients/c1/projects/p2", 200),
        ({"memberships": {"c1": "viewer"}}, "/clients/c2/projects/p2", 404),
    ],
)
async def test_ensure_project_access(
    client: httpx.AsyncClient, tokens: TokenFactory, claims: dict, path: str, status: int
) -> None:
    r = await client.get(path, headers=bearer(tokens.issue("p", **claims)))
    assert r.status_code == status
