"""Projects through the HTTP API on the real database: CRUD, roles, agents, pagination, filters, ETags."""

from __future__ import annotations

import uuid

import pytest


async def test_product_owner_creates_reads_updates_and_deletes_a_project(svc):
    client = await svc.new_client()
    owner = svc.user(client["id"], "product_owner", sub="po-1")
    r = await svc.http.post(
        "/v1/projects",
        json={
            "client_id": client["id"],
            "name": "Checkout",
            "description": "New checkout flow\nwith tabs\t.",
            "kind": "greenfield",
            "type": "fullstack",
        },
        headers=owner,
    )
    assert r.status_code == 201, r.text
    project = r.json()
    assert r.headers["etag"] == '"1"'
    assert r.headers["location"] == f"/v1/projects/{project['id']}"
    assert project["client_id"] == client["id"]
    assert (project["status"], project["version"], project["created_by"]) == ("active", 1, "po-1")
    assert project["workflow_id"] is None  # the workflows service derives it from kind + type

    viewer = svc.user(client["id"], "viewer")
    got = await svc.http.get(f"/v1/projects/{project['id']}", headers=viewer)
    assert got.status_code == 200
    assert got.json() == project
    assert got.headers["etag"] == '"1"'

    r = await svc.http.patch(
        f"/v1/projects/{project['id']}",
        json={"description": "Shorter"},
        headers={**owner, "If-Match": got.headers["etag"]},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["description"], r.json()["version"], r.headers["etag"]) == ("Shorter", 2, '"2"')

    r = await svc.http.delete(f"/v1/projects/{project['id']}", headers={**owner, "If-Match": '"2"'})
    assert r.status_code == 204
    for method in ("GET", "DELETE"):
        r = await svc.http.request(method, f"/v1/projects/{project['id']}", headers=owner)
        svc.problem(r, 404, "project_not_found")
    r = await svc.http.patch(f"/v1/projects/{project['id']}", json={"name": "x"}, headers=owner)
    svc.problem(r, 404, "project_not_found")
    row = await svc.project_row(project["id"])
    assert row.deleted_at is not None
    assert row.version == 3


@pytest.mark.parametrize(
    ("fields", "workflow_id"),
    [
        ({"type": "service"}, None),
        ({"type": "greenfield-service"}, "greenfield-service"),
        ({"type": "ui", "workflow_id": "bmad-method-greenfield"}, "bmad-method-greenfield"),
    ],
)
async def test_workflow_choice(svc, fields, workflow_id):
    await svc.know_workflows("greenfield-service", "bmad-method-greenfield")
    client = await svc.new_client()
    project = await svc.new_project(client["id"], **fields)
    assert project["type"] == fields["type"]
    assert project["workflow_id"] == workflow_id


async def test_who_may_create_projects(svc):
    client = await svc.new_client()
    body = {"client_id": client["id"], "kind": "brownfield", "type": "ui"}
    for role in ("member", "viewer", "auditor"):
        r = await svc.http.post(
            "/v1/projects", json={**body, "name": role}, headers=svc.user(client["id"], role)
        )
        svc.problem(r, 403, "insufficient_role")

    agent = svc.agent(client["id"], sub="ci-bot")
    r = await svc.http.post("/v1/projects", json={**body, "name": "by agent"}, headers=agent)
    assert r.status_code == 201, r.text
    assert r.json()["created_by"] == "ci-bot"

    read_only = svc.agent(client["id"], scopes=("projects:read",))
    r = await svc.http.post("/v1/projects", json={**body, "name": "ro"}, headers=read_only)
    svc.problem(r, 403, "insufficient_scope")
    narrowed = svc.agent(client["id"], project_ids=[r.json().get("id", uuid.uuid4())])
    r = await svc.http.post("/v1/projects", json={**body, "name": "narrow"}, headers=narrowed)
    svc.problem(r, 403, "insufficient_role")


async def test_names_are_unique_per_client_case_insensitively(svc):
    a, b = await svc.new_client(), await svc.new_client()
    first = await svc.new_project(a["id"], name="Portal")
    body = {"client_id": a["id"], "name": "PORTAL", "kind": "greenfield", "type": "ui"}
    svc.problem(await svc.http.post("/v1/projects", json=body, headers=svc.admin), 409, "project_name_taken")
    await svc.new_project(b["id"], name="Portal")  # another client: fine

    other = await svc.new_project(a["id"], name="Admin")
    r = await svc.http.patch(f"/v1/projects/{other['id']}", json={"name": "portal"}, headers=svc.admin)
    svc.problem(r, 409, "project_name_taken")
    r = await svc.http.patch(f"/v1/projects/{first['id']}", json={"name": "PORTAL"}, headers=svc.admin)
    assert r.status_code == 200  # renaming itself by case only

    assert (await svc.http.delete(f"/v1/projects/{first['id']}", headers=svc.admin)).status_code == 204
    assert (await svc.http.post("/v1/projects", json=body, headers=svc.admin)).status_code == 201


async def test_list_paginates_and_filters(svc):
    a, b = await svc.new_client(), await svc.new_client()
    mine = [await svc.new_project(a["id"], name=f"Alpha {i}") for i in range(5)]
    await svc.new_project(a["id"], name="Beta", description="mentions alpha.")
    await svc.new_project(b["id"], name="Alpha elsewhere")
    paused = mine[2]
    r = await svc.http.patch(f"/v1/projects/{paused['id']}", json={"status": "paused"}, headers=svc.admin)
    assert r.status_code == 200

    seen, cursor = [], None
    for _ in range(10):
        params = {"limit": 2, "client_id": a["id"], "q": "alpha "}
        if cursor:
            params["cursor"] = cursor
        r = await svc.http.get("/v1/projects", params=params, headers=svc.admin)
        assert r.status_code == 200, r.text
        seen += [p["id"] for p in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [p["id"] for p in reversed(mine)]

    everything = (await svc.http.get("/v1/projects", params={"limit": 100}, headers=svc.admin)).json()
    assert len(everything["items"]) == 7
    assert everything["next_cursor"] is None
    by_text = await svc.http.get(
        "/v1/projects", params={"q": "ALPHA", "client_id": a["id"]}, headers=svc.admin
    )
    assert len(by_text.json()["items"]) == 6  # name or description
    only_paused = (await svc.http.get("/v1/projects", params={"status": "paused"}, headers=svc.admin)).json()
    assert [p["id"] for p in only_paused["items"]] == [paused["id"]]
    exact = (await svc.http.get("/v1/projects", params={"limit": 7}, headers=svc.admin)).json()
    assert len(exact["items"]) == 7
    assert exact["next_cursor"] is None


async def test_users_and_agents_see_only_what_they_may(svc):
    a, b = await svc.new_client(), await svc.new_client()
    pa1, pa2 = await svc.new_project(a["id"]), await svc.new_project(a["id"])
    pb = await svc.new_project(b["id"])

    async def ids(headers, **params):
        r = await svc.http.get("/v1/projects", params=params, headers=headers)
        assert r.status_code == 200, r.text
        return {p["id"] for p in r.json()["items"]}

    assert await ids(svc.admin) == {pa1["id"], pa2["id"], pb["id"]}
    assert await ids(svc.user(a["id"], "viewer")) == {pa1["id"], pa2["id"]}
    assert await ids(svc.agent(b["id"], scopes=("projects:read",))) == {pb["id"]}
    narrowed = svc.agent(a["id"], project_ids=[pa2["id"], pb["id"], "not-a-uuid"])
    assert await ids(narrowed) == {pa2["id"]}
    assert await ids(narrowed, client_id=a["id"]) == {pa2["id"]}
    assert await ids(svc.outsider()) == set()

    r = await svc.http.get(f"/v1/projects/{pa1['id']}", headers=narrowed)
    svc.problem(r, 404, "project_not_found")
    assert (await svc.http.get(f"/v1/projects/{pa2['id']}", headers=narrowed)).status_code == 200
    r = await svc.http.patch(f"/v1/projects/{pa2['id']}", json={"name": "Narrow edit"}, headers=narrowed)
    assert r.status_code == 200
    r = await svc.http.patch(f"/v1/projects/{pa1['id']}", json={"name": "Nope"}, headers=narrowed)
    svc.problem(r, 404, "project_not_found")
    r = await svc.http.get(
        f"/v1/projects/{pa1['id']}", headers=svc.agent(a["id"], scopes=("projects:write",))
    )
    svc.problem(r, 403, "insufficient_scope")


async def test_status_transitions(svc):
    client = await svc.new_client()
    project = await svc.new_project(client["id"])
    url = f"/v1/projects/{project['id']}"
    for status, version in (("paused", 2), ("active", 3), ("completed", 4), ("archived", 5), ("active", 6)):
        r = await svc.http.patch(url, json={"status": status}, headers=svc.admin)
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["version"]) == (status, version)
    await svc.http.patch(url, json={"status": "archived"}, headers=svc.admin)
    r = await svc.http.patch(url, json={"status": "paused"}, headers=svc.admin)
    body = svc.problem(r, 409, "invalid_status_transition")
    assert (body["current"], body["target"]) == ("archived", "paused")
    assert (await svc.project_row(project["id"])).status == "archived"


async def test_one_patch_with_fields_and_status_makes_two_versions(svc):
    client = await svc.new_client()
    project = await svc.new_project(client["id"])
    r = await svc.http.patch(
        f"/v1/projects/{project['id']}",
        json={"name": "Both", "status": "paused"},
        headers={**svc.admin, "If-Match": '"1"'},
    )
    assert r.status_code == 200
    assert (r.json()["name"], r.json()["status"], r.json()["version"]) == ("Both", "paused", 3)
    assert r.headers["etag"] == '"3"'


async def test_unchanged_values_change_nothing(svc):
    client = await svc.new_client()
    project = await svc.new_project(client["id"], name="Same")
    before = len(await svc.outbox())
    r = await svc.http.patch(
        f"/v1/projects/{project['id']}",
        json={"name": "Same", "status": "active", "client_id": client["id"], "kind": "greenfield"},
        headers=svc.admin,
    )
    assert r.status_code == 200
    assert r.json()["version"] == 1
    assert len(await svc.outbox()) == before


@pytest.mark.parametrize(
    ("role", "body", "fields"),
    [
        ("viewer", {"status": "paused"}, ["status"]),
        ("member", {"name": "Mine now"}, ["name"]),
        ("auditor", {"description": "x", "status": "completed"}, ["description", "status"]),
        ("product_owner", {"client_id": "OTHER"}, ["client_id"]),
        ("product_owner", {"kind": "brownfield"}, ["kind"]),
        ("product_owner", {"type": "ui", "name": "ok"}, ["type"]),
        ("product_owner", {"workflow_id": "greenfield-ui"}, ["workflow_id"]),
    ],
)
async def test_fields_the_caller_may_not_set_are_rejected(svc, role, body, fields):
    await svc.know_workflows("greenfield-ui")
    client, other = await svc.new_client(), await svc.new_client()
    project = await svc.new_project(client["id"])
    body = {k: (other["id"] if v == "OTHER" else v) for k, v in body.items()}
    before = await svc.counts()
    r = await svc.http.patch(f"/v1/projects/{project['id']}", json=body, headers=svc.user(client["id"], role))
    problem = svc.problem(r, 422, "fields_not_writable")
    assert [e["loc"][1] for e in problem["errors"]] == fields
    assert await svc.counts() == before
    row = await svc.project_row(project["id"])
    assert (row.version, row.client_id) == (1, uuid.UUID(client["id"]))


@pytest.mark.parametrize("field", ["created_by", "version", "id", "created_at", "deleted_at"])
async def test_read_only_fields_are_rejected(svc, field):
    client = await svc.new_client()
    project = await svc.new_project(client["id"])
    r = await svc.http.patch(f"/v1/projects/{project['id']}", json={field: "x"}, headers=svc.admin)
    body = svc.problem(r, 422, "validation_failed")
    assert body["errors"][0]["type"] == "extra_forbidden"
    r = await svc.http.post(
        "/v1/projects",
        json={"client_id": client["id"], "name": "n", "kind": "greenfield", "type": "ui", field: "x"},
        headers=svc.admin,
    )
    svc.problem(r, 422, "validation_failed")
    assert (await svc.project_row(project["id"])).version == 1


async def test_if_match_on_projects(svc):
    client = await svc.new_client()
    project = await svc.new_project(client["id"])
    url = f"/v1/projects/{project['id']}"
    r = await svc.http.patch(url, json={"name": "v2"}, headers={**svc.admin, "If-Match": 'W/"1"'})
    assert r.status_code == 200
    for method, kwargs in (("PATCH", {"json": {"name": "stale"}}), ("DELETE", {})):
        r = await svc.http.request(method, url, headers={**svc.admin, "If-Match": '"1"'}, **kwargs)
        svc.problem(r, 412, "version_mismatch")
    r = await svc.http.patch(url, json={"name": "v3"}, headers={**svc.admin, "If-Match": '"0", "2"'})
    assert r.status_code == 200
    assert r.json()["version"] == 3
    assert (await svc.project_row(project["id"])).name == "v3"


async def test_only_writers_delete(svc):
    client = await svc.new_client()
    project = await svc.new_project(client["id"])
    for role in ("member", "viewer"):
        r = await svc.http.delete(f"/v1/projects/{project['id']}", headers=svc.user(client["id"], role))
        svc.problem(r, 403, "insufficient_role")
    r = await svc.http.delete(
        f"/v1/projects/{project['id']}", headers=svc.agent(client["id"], scopes=("projects:read",))
    )
    svc.problem(r, 403, "insufficient_scope")
    assert (await svc.project_row(project["id"])).deleted_at is None
    r = await svc.http.delete(f"/v1/projects/{project['id']}", headers=svc.agent(client["id"]))
    assert r.status_code == 204


async def test_openapi_documents_every_operation_and_its_problems(svc):
    spec = (await svc.http.get("/openapi.json")).json()
    operations = {(m.upper(), path) for path, item in spec["paths"].items() for m in item}
    assert operations == {
        ("GET", "/v1/clients"),
        ("POST", "/v1/clients"),
        ("GET", "/v1/clients/{client_id}"),
        ("PATCH", "/v1/clients/{client_id}"),
        ("DELETE", "/v1/clients/{client_id}"),
        ("GET", "/v1/projects"),
        ("POST", "/v1/projects"),
        ("GET", "/v1/projects/{project_id}"),
        ("PATCH", "/v1/projects/{project_id}"),
        ("DELETE", "/v1/projects/{project_id}"),
    }
    patch = spec["paths"]["/v1/projects/{project_id}"]["patch"]
    assert "application/problem+json" in patch["responses"]["412"]["content"]
    limit = next(p for p in spec["paths"]["/v1/projects"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 100
