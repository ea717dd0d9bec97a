"""Route x principal matrix, generated from the route table, through the real gateway process.

The gateway's decision is coarse: public routes are forwarded for everyone, protected routes are 401
without a valid token and forwarded (to the right upstream, with the caller's token) otherwise; the
fine-grained 403/404 belongs to the upstream. Every route of the table must have an example here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gateway.routes import GATEWAY, ROUTES, Route, RouteTable

CLIENT = "0190f1d2-0000-7000-8000-00000000c11e"
PROJECT = "0190f1d2-0000-7000-8000-0000000000a1"
ID = "0190f1d2-0000-7000-8000-0000000000b2"
SCOPES = (
    "projects:read",
    "projects:write",
    "documents:read",
    "documents:write",
    "workflows:read",
    "workflows:write",
    "audit:read",
    "search",
)

# pattern -> requests (method, concrete path) that must resolve to exactly that route.
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "/healthz": [("GET", "/healthz")],
    "/readyz": [("GET", "/readyz")],
    "/openapi.json": [("GET", "/openapi.json")],
    "/docs": [("GET", "/docs")],
    "/v1/auth/login": [("POST", "/v1/auth/login")],
    "/v1/auth/token": [("POST", "/v1/auth/token")],
    "/v1/auth/logout": [("POST", "/v1/auth/logout")],
    "/v1/auth/*": [("GET", "/v1/auth/sessions")],
    "/.well-known/*": [("GET", "/.well-known/jwks.json"), ("GET", "/.well-known/openid-configuration")],
    "/v1/users*": [
        ("GET", "/v1/users"),
        ("POST", "/v1/users"),
        ("GET", "/v1/users/me"),
        ("PATCH", f"/v1/users/{ID}"),
    ],
    "/v1/clients/{client_id}/agents*": [
        ("GET", f"/v1/clients/{CLIENT}/agents"),
        ("POST", f"/v1/clients/{CLIENT}/agents/{ID}/rotate-secret"),
        ("DELETE", f"/v1/clients/{CLIENT}/agents/{ID}"),
    ],
    "/v1/clients/{client_id}/members*": [
        ("GET", f"/v1/clients/{CLIENT}/members"),
        ("PUT", f"/v1/clients/{CLIENT}/members/{ID}"),
    ],
    "/v1/clients*": [("GET", "/v1/clients"), ("POST", "/v1/clients"), ("PATCH", f"/v1/clients/{CLIENT}")],
    "/v1/projects": [("GET", "/v1/projects"), ("POST", "/v1/projects")],
    "/v1/projects/{project_id}/documents*": [
        ("GET", f"/v1/projects/{PROJECT}/documents"),
        ("POST", f"/v1/projects/{PROJECT}/documents"),
    ],
    "/v1/documents*": [("GET", f"/v1/documents/{ID}"), ("GET", f"/v1/documents/{ID}/versions/1/content")],
    "/v1/search": [("POST", "/v1/search")],
    "/v1/admin/reindex*": [("POST", "/v1/admin/reindex"), ("GET", f"/v1/admin/reindex/{ID}")],
    "/v1/projects/{project_id}/workflow": [("GET", f"/v1/projects/{PROJECT}/workflow")],
    "/v1/projects/{project_id}/sprint-status": [("GET", f"/v1/projects/{PROJECT}/sprint-status")],
    "/v1/tasks*": [("GET", "/v1/tasks"), ("POST", f"/v1/tasks/{ID}/claim")],
    "/v1/decisions*": [("GET", "/v1/decisions"), ("POST", f"/v1/decisions/{ID}/answer")],
    "/v1/workflow-definitions*": [("GET", "/v1/workflow-definitions")],
    "/v1/projects/{project_id}": [
        ("GET", f"/v1/projects/{PROJECT}"),
        ("PATCH", f"/v1/projects/{PROJECT}"),
        ("DELETE", f"/v1/projects/{PROJECT}"),
    ],
    "/v1/audit/public-key": [("GET", "/v1/audit/public-key")],
    "/v1/audit/public-keys": [("GET", "/v1/audit/public-keys")],
    "/v1/audit*": [("GET", "/v1/audit"), ("GET", "/v1/audit/entries")],
}

PRINCIPALS: dict[str, dict[str, Any] | None] = {
    "anonymous": None,
    "admin": {"admin": True},
    "product_owner": {"memberships": {CLIENT: "product_owner"}},
    "member": {"memberships": {CLIENT: "member"}},
    "viewer": {"memberships": {CLIENT: "viewer"}},
    "auditor": {"memberships": {CLIENT: "auditor"}},
    "agent-without-scope": {"kind": "agent", "client_id": CLIENT},
    "agent-all-scopes": {"kind": "agent", "client_id": CLIENT, "scopes": SCOPES},
    **{f"agent-{s}": {"kind": "agent", "client_id": CLIENT, "scopes": (s,)} for s in SCOPES},
    "agent-narrowed-to-a-project": {
        "kind": "agent",
        "client_id": CLIENT,
        "scopes": SCOPES,
        "project_ids": [PROJECT],
    },
}


def test_every_route_has_examples_that_resolve_to_it():
    table = RouteTable()
    assert set(EXAMPLES) == {route.pattern for route in ROUTES}, "a route is missing from the matrix"
    for route in ROUTES:
        for method, path in EXAMPLES[route.pattern]:
            found, _ = table.resolve(path, method)
            assert found is route, (method, path, found)


def test_public_routes_are_exactly_the_documented_ones():
    public = {route.pattern for route in ROUTES if route.public}
    assert public == {
        "/v1/auth/login",
        "/v1/auth/token",
        "/v1/auth/logout",
        "/.well-known/*",
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/docs",
        "/v1/audit/public-key",
        "/v1/audit/public-keys",
    }


def _expectation(route: Route, principal: str) -> str:
    if route.upstream == GATEWAY:
        return "local"
    if route.public or principal != "anonymous":
        return "forwarded"
    return "401"


async def test_route_role_matrix(client, tokens):
    cases = [
        (route, method, path, name)
        for route in ROUTES
        for method, path in EXAMPLES[route.pattern]
        for name in PRINCIPALS
    ]
    tokens_by_name = {
        name: None if claims is None else tokens.issue(f"sub-{name}", **claims)
        for name, claims in PRINCIPALS.items()
    }
    semaphore = asyncio.Semaphore(8)

    async def run(route: Route, method: str, path: str, name: str) -> str | None:
        token = tokens_by_name[name]
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        async with semaphore:
            response = await client.request(
                method, path, headers=headers, json={} if method != "GET" else None
            )
        expected = _expectation(route, name)
        where = f"{method} {path} as {name}: expected {expected}, got {response.status_code}"
        if expected == "local":
            if response.status_code != 200 or "x-upstream" in response.headers:
                return where
        elif expected == "401":
            if response.status_code != 401 or "x-upstream" in response.headers:
                return where
        else:
            if response.status_code != 200 or response.headers.get("x-upstream") != route.upstream:
                return where + f" from {response.headers.get('x-upstream')}"
            if path.startswith("/v1/"):
                echoed = dict(response.json()["headers"])
                if echoed.get("authorization") != headers.get("Authorization"):
                    return where + " (authorization header not forwarded as sent)"
                if response.json()["path"] != path or response.json()["method"] != method:
                    return where + " (path or method changed)"
        return None

    failures = [f for f in await asyncio.gather(*(run(*case) for case in cases)) if f]
    assert not failures, "\n".join(failures)
    assert len(cases) >= len(ROUTES) * len(PRINCIPALS)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/nowhere", 404),
        ("GET", "/v1/usersx", 404),
        ("GET", f"/v1/projects/{PROJECT}/unknown", 404),
        ("POST", f"/v1/projects/{PROJECT}", 405),
        ("PUT", f"/v1/projects/{PROJECT}", 405),
        ("POST", "/healthz", 405),
        ("GET", "/", 404),
    ],
)
async def test_unrouted_requests_are_answered_by_the_gateway(client, auth, method, path, status):
    response = await client.request(method, path, headers=auth())
    assert response.status_code == status
    assert "x-upstream" not in response.headers
    assert response.headers["content-type"] == "application/problem+json"
    if status == 405:
        assert "GET" in response.headers["allow"]
