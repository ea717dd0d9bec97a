"""Clients through the HTTP API on the real database: CRUD, visibility, pagination, filters, roles."""

from __future__ import annotations

import uuid

import pytest


async def test_admin_creates_a_client(svc):
    r = await svc.http.post(
        "/v1/clients",
        json={
            "name": "  Acme Corp ",
            "slug": "acme",
            "contact": {"name": "Wile E.", "email": "wile@acme.test", "phone": "+1 555 0100"},
            "metadata": {"tier": "gold", "regions": ["eu", "us"]},
        },
        headers=svc.admin,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["etag"] == '"1"'
    assert r.headers["location"] == f"/v1/clients/{body['id']}"
    assert body["name"] == "Acme Corp"
    assert body["slug"] == "acme"
    assert body["status"] == "active"
    assert body["contact"] == {"name": "Wile E.", "email": "wile@acme.test", "phone": "+1 555 0100"}
    assert body["metadata"] == {"tier": "gold", "regions": ["eu", "us"]}
    assert body["version"] == 1
    assert body["created_by"] == "admin-1"
    uuid.UUID(body["id"])

    got = await svc.http.get(f"/v1/clients/{body['id']}", headers=svc.admin)
    assert got.status_code == 200
    assert got.json() == body
    assert got.headers["etag"] == '"1"'


async def test_only_platform_admins_create_clients(svc):
    existing = await svc.new_client()
    before = await svc.counts()
    for headers in (
        svc.user(existing["id"], "product_owner"),
        svc.agent(existing["id"]),
        svc.outsider(),
    ):
        r = await svc.http.post("/v1/clients", json={"name": "X", "slug": "x"}, headers=headers)
        svc.problem(r, 403, "admin_required")
    assert await svc.counts() == before


async def test_slugs_are_unique_among_live_clients(svc):
    first = await svc.new_client(slug="taken")
    r = await svc.http.post("/v1/clients", json={"name": "Other", "slug": "taken"}, headers=svc.admin)
    svc.problem(r, 409, "client_slug_taken")
    other = await svc.new_client()
    r = await svc.http.patch(f"/v1/clients/{other['id']}", json={"slug": "taken"}, headers=svc.admin)
    svc.problem(r, 409, "client_slug_taken")

    assert (await svc.http.delete(f"/v1/clients/{first['id']}", headers=svc.admin)).status_code == 204
    again = await svc.new_client(slug="taken")
    assert again["id"] != first["id"]


async def test_list_shows_only_clients_the_caller_can_read(svc):
    a, b, c = await svc.new_client(), await svc.new_client(), await svc.new_client()

    async def ids(headers):
        r = await svc.http.get("/v1/clients", headers=headers)
        assert r.status_code == 200, r.text
        return [item["id"] for item in r.json()["items"]]

    assert await ids(svc.admin) == [c["id"], b["id"], a["id"]]  # newest first
    assert await ids(svc.user(a["id"], "viewer")) == [a["id"]]
    assert await ids(svc.user(b["id"], "auditor")) == [b["id"]]
    two_roles = svc.tokens.issue("multi", memberships={a["id"]: "member", c["id"]: "product_owner"})
    assert await ids({"Authorization": f"Bearer {two_roles}"}) == [c["id"], a["id"]]
    assert await ids(svc.agent(b["id"], scopes=("projects:read",))) == [b["id"]]
    assert await ids(svc.outsider()) == []

    r = await svc.http.get("/v1/clients", headers=svc.agent(b["id"], scopes=("documents:read",)))
    svc.problem(r, 403, "insufficient_scope")
    svc.problem(await svc.http.get("/v1/clients"), 401)


async def test_list_paginates_and_filters(svc):
    made = [await svc.new_client(name=f"Paged {i}", slug=f"paged-{i}") for i in range(5)]
    await svc.new_client(name="Other 100%", slug="other")
    r = await svc.http.patch(f"/v1/clients/{made[1]['id']}", json={"status": "archived"}, headers=svc.admin)
    assert r.status_code == 200

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, "q": "paged"} | ({"cursor": cursor} if cursor else {})
        page = (await svc.http.get("/v1/clients", params=params, headers=svc.admin)).json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [c["id"] for c in reversed(made)]

    archived = (await svc.http.get("/v1/clients?status=archived", headers=svc.admin)).json()
    assert [c["id"] for c in archived["items"]] == [made[1]["id"]]
    # q is a literal substring: "%" matches only itself, "_" only itself.
    pct = (await svc.http.get("/v1/clients", params={"q": "100%"}, headers=svc.admin)).json()
    assert [c["slug"] for c in pct["items"]] == ["other"]
    underscore = (await svc.http.get("/v1/clients", params={"q": "paged_"}, headers=svc.admin)).json()
    assert underscore["items"] == []
    by_slug = (await svc.http.get("/v1/clients", params={"q": "PAGED-3"}, headers=svc.admin)).json()
    assert [c["id"] for c in by_slug["items"]] == [made[3]["id"]]


@pytest.mark.parametrize("role", ["product_owner", "member", "viewer", "auditor"])
async def test_every_client_role_reads_its_client(svc, role):
    client = await svc.new_client()
    r = await svc.http.get(f"/v1/clients/{client['id']}", headers=svc.user(client["id"], role))
    assert r.status_code == 200
    assert r.json()["id"] == client["id"]


async def test_admin_changes_any_field_and_the_version_moves(svc):
    client = await svc.new_client()
    r = await svc.http.patch(
        f"/v1/clients/{client['id']}",
        json={"name": "Renamed", "slug": "renamed", "contact": {"email": "ops@renamed.test"}, "metadata": {}},
        headers={**svc.admin, "If-Match": '"1"'},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["name"], body["slug"], body["contact"], body["version"]) == (
        "Renamed",
        "renamed",
        {"email": "ops@renamed.test"},
        2,
    )
    assert r.headers["etag"] == '"2"'

    same = await svc.http.patch(f"/v1/clients/{client['id']}", json={"name": "Renamed"}, headers=svc.admin)
    assert same.status_code == 200
    assert same.json()["version"] == 2  # nothing changed, nothing bumped


async def test_product_owner_edits_name_contact_metadata_only(svc):
    client = await svc.new_client()
    owner = svc.user(client["id"], "product_owner")
    r = await svc.http.patch(
        f"/v1/clients/{client['id']}", json={"name": "Ours", "metadata": {"k": 1}}, headers=owner
    )
    assert r.status_code == 200, r.text
    assert r.json()["metadata"] == {"k": 1}

    for field, value in (("status", "archived"), ("slug", "new-slug")):
        r = await svc.http.patch(
            f"/v1/clients/{client['id']}", json={"name": "Again", field: value}, headers=owner
        )
        body = svc.problem(r, 422, "fields_not_writable")
        assert [e["loc"] for e in body["errors"]] == [["body", field]]
    for role in ("member", "viewer"):
        r = await svc.http.patch(
            f"/v1/clients/{client['id']}", json={"name": "Nope"}, headers=svc.user(client["id"], role)
        )
        svc.problem(r, 422, "fields_not_writable")
    r = await svc.http.patch(
        f"/v1/clients/{client['id']}", json={"name": "Nope"}, headers=svc.agent(client["id"])
    )
    svc.problem(r, 422, "fields_not_writable")
    assert (await svc.client_row(client["id"])).name == "Ours"


async def test_client_if_match(svc):
    client = await svc.new_client()
    url = f"/v1/clients/{client['id']}"
    svc.problem(
        await svc.http.patch(url, json={"name": "A"}, headers={**svc.admin, "If-Match": '"7"'}),
        412,
        "version_mismatch",
    )
    r = await svc.http.patch(url, json={"name": "A"}, headers={**svc.admin, "If-Match": "*"})
    assert r.status_code == 200
    svc.problem(await svc.http.delete(url, headers={**svc.admin, "If-Match": '"1"'}), 412, "version_mismatch")
    assert (await svc.http.delete(url, headers={**svc.admin, "If-Match": '"2"'})).status_code == 204


async def test_archived_client_takes_no_new_projects_until_restored(svc):
    client = await svc.new_client()
    project = await svc.new_project(client["id"])
    r = await svc.http.patch(f"/v1/clients/{client['id']}", json={"status": "archived"}, headers=svc.admin)
    assert r.json()["status"] == "archived"

    body = {"client_id": client["id"], "name": "Late", "kind": "brownfield", "type": "service"}
    svc.problem(await svc.http.post("/v1/projects", json=body, headers=svc.admin), 409, "client_archived")
    # Existing projects stay readable.
    assert (await svc.http.get(f"/v1/projects/{project['id']}", headers=svc.admin)).status_code == 200

    r = await svc.http.patch(f"/v1/clients/{client['id']}", json={"status": "active"}, headers=svc.admin)
    assert r.json()["status"] == "active"
    assert (await svc.http.post("/v1/projects", json=body, headers=svc.admin)).status_code == 201


async def test_deleting_a_client_deletes_its_projects(svc):
    client = await svc.new_client()
    other = await svc.new_client()
    p1, p2 = await svc.new_project(client["id"]), await svc.new_project(client["id"])
    gone = await svc.new_project(client["id"])
    assert (await svc.http.delete(f"/v1/projects/{gone['id']}", headers=svc.admin)).status_code == 204
    survivor = await svc.new_project(other["id"])

    owner = svc.user(client["id"], "product_owner")
    svc.problem(await svc.http.delete(f"/v1/clients/{client['id']}", headers=owner), 403, "admin_required")

    r = await svc.http.delete(f"/v1/clients/{client['id']}", headers=svc.admin)
    assert r.status_code == 204
    assert r.content == b""

    svc.problem(await svc.http.get(f"/v1/clients/{client['id']}", headers=svc.admin), 404, "client_not_found")
    for p in (p1, p2, gone):
        r = await svc.http.get(f"/v1/projects/{p['id']}", headers=svc.admin)
        svc.problem(r, 404, "project_not_found")
        row = await svc.project_row(p["id"])
        assert row is not None
        assert row.deleted_at is not None
    listed = (await svc.http.get("/v1/projects", headers=svc.admin)).json()["items"]
    assert [p["id"] for p in listed] == [survivor["id"]]
    clients = (await svc.http.get("/v1/clients", headers=svc.admin)).json()["items"]
    assert [c["id"] for c in clients] == [other["id"]]
    svc.problem(
        await svc.http.delete(f"/v1/clients/{client['id']}", headers=svc.admin), 404, "client_not_found"
    )
