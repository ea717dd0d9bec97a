"""The merged OpenAPI document and the offline docs page."""

from __future__ import annotations

import re

import httpx


async def test_merged_openapi_keeps_only_routed_paths(client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    paths = document["paths"]
    assert set(paths) == {
        "/v1/users/{user_id}",
        "/v1/auth/login",
        "/v1/projects/{project_id}",
        "/v1/search",
        "/v1/tasks",
        "/v1/audit/entries",
    }
    assert paths["/v1/auth/login"]["post"]["security"] == []
    assert paths["/v1/tasks"]["get"]["security"] == [{"bearer": []}]
    assert paths["/v1/tasks"]["get"]["x-baton-upstream"] == "workflows"
    # Same-named schemas with different bodies are kept apart, references rewritten; equal ones shared.
    schemas = document["components"]["schemas"]
    refs = {
        p: op["get"]["parameters"][0]["schema"]["$ref"].rsplit("/", 1)[-1]
        for p, op in paths.items()
        if "get" in op
    }
    assert len(set(refs.values())) == len(refs)
    assert {schemas[name]["title"] for name in refs.values()} == {
        f"Thing of {n}" for n in ("identity", "projects", "documents", "workflows", "audit")
    }
    assert list(schemas).count("HTTPValidationError") == 1
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert set(document["x-baton-upstreams"].values()) == {"ok"}


async def test_a_down_upstream_is_tolerated(start_gateway, dead_url):
    server = start_gateway(audit_url=dead_url, openapi_fetch_timeout_seconds=1)
    async with httpx.AsyncClient(base_url=server.url) as c:
        document = (await c.get("/openapi.json")).json()
        assert "/v1/tasks" in document["paths"]
        assert not any(p.startswith("/v1/audit") for p in document["paths"])
        assert document["x-baton-upstreams"]["audit"] == "unavailable"
        docs = await c.get("/docs")
        assert docs.status_code == 200


async def test_docs_page_is_self_contained(client):
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "/v1/tasks" in page
    assert "/v1/auth/login" in page
    assert "<script" not in page.lower()
    # Nothing is loaded from elsewhere: no absolute URLs in src/href, CSP allows only inline styles.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert "default-src 'none'" in response.headers["content-security-policy"]
    # Upstream text is escaped.
    assert "<b>" not in page
    assert "&lt;b&gt;" in page
