"""Cross-tenant matrix: callers of client B against every endpoint with client A's ids get the same 404
as for an id that does not exist (only ``instance`` and ``request_id`` differ), and nothing is written.
"""

from __future__ import annotations

import uuid

import pytest

CALLERS = ["b_product_owner", "b_viewer", "b_agent", "b_agent_narrowed"]


def caller(svc, name, b, pb):
    return {
        "b_product_owner": lambda: svc.user(b["id"], "product_owner"),
        "b_viewer": lambda: svc.user(b["id"], "viewer"),
        "b_agent": lambda: svc.agent(b["id"]),
        "b_agent_narrowed": lambda: svc.agent(b["id"], project_ids=[pb["id"]]),
    }[name]()


def requests_for(client_id, project_id):
    """(label, method, url, json) for every endpoint taking a client or project id."""
    return [
        ("get client", "GET", f"/v1/clients/{client_id}", None),
        ("patch client", "PATCH", f"/v1/clients/{client_id}", {"name": "Taken over"}),
        ("delete client", "DELETE", f"/v1/clients/{client_id}", None),
        ("get project", "GET", f"/v1/projects/{project_id}", None),
        ("patch project", "PATCH", f"/v1/projects/{project_id}", {"name": "Taken over"}),
        ("patch project status", "PATCH", f"/v1/projects/{project_id}", {"status": "archived"}),
        ("delete project", "DELETE", f"/v1/projects/{project_id}", None),
        (
            "create project in client",
            "POST",
            "/v1/projects",
            {"client_id": str(client_id), "name": "Intruder", "kind": "greenfield", "type": "fullstack"},
        ),
        ("list projects of client", "GET", f"/v1/projects?client_id={client_id}", None),
    ]


def comparable(body):
    return {k: v for k, v in body.items() if k not in ("instance", "request_id")}


@pytest.mark.parametrize("who", CALLERS)
async def test_foreign_ids_look_missing(svc, who):
    a, b = await svc.new_client(), await svc.new_client()
    pa, pb = await svc.new_project(a["id"]), await svc.new_project(b["id"])
    headers = caller(svc, who, b, pb)
    before = await svc.counts()
    outbox_before = await svc.outbox()

    foreign = requests_for(a["id"], pa["id"])
    missing = requests_for(uuid.uuid4(), uuid.uuid4())
    for (label, method, url, body), (_, m_method, m_url, m_body) in zip(foreign, missing, strict=True):
        for extra in ({}, {"If-Match": '"1"'}):
            r = await svc.http.request(method, url, json=body, headers={**headers, **extra})
            m = await svc.http.request(m_method, m_url, json=m_body, headers={**headers, **extra})
            assert r.status_code == 404, (who, label, r.status_code, r.text)
            assert m.status_code == 404, (who, label, m.status_code, m.text)
            assert r.headers["content-type"] == m.headers["content-type"] == "application/problem+json"
            assert comparable(r.json()) == comparable(m.json()), (who, label)
            assert "etag" not in r.headers

    assert await svc.counts() == before
    assert await svc.outbox() == outbox_before
    client_row, project_row = await svc.client_row(a["id"]), await svc.project_row(pa["id"])
    assert (client_row.name, client_row.version, client_row.deleted_at) == (a["name"], 1, None)
    assert (project_row.name, project_row.status, project_row.version) == (pa["name"], "active", 1)


@pytest.mark.parametrize("who", CALLERS)
async def test_lists_and_searches_never_show_foreign_objects(svc, who):
    a, b = await svc.new_client(name="Alpha Tenant"), await svc.new_client(name="Beta Tenant")
    pa = await svc.new_project(a["id"], name="Shared word", description="secret plan")
    pb = await svc.new_project(b["id"], name="Shared word")
    headers = caller(svc, who, b, pb)

    for params in ({}, {"q": "Shared"}, {"q": "secret"}, {"status": "active"}, {"limit": 100}):
        r = await svc.http.get("/v1/projects", params=params, headers=headers)
        assert r.status_code == 200
        ids = {p["id"] for p in r.json()["items"]}
        assert pa["id"] not in ids
        assert ids <= {pb["id"]}
    for params in ({}, {"q": "Alpha"}, {"q": a["slug"]}, {"status": "active"}):
        r = await svc.http.get("/v1/clients", params=params, headers=headers)
        assert r.status_code == 200
        assert {c["id"] for c in r.json()["items"]} <= {b["id"]}
