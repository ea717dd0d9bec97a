"""Every change writes exactly one outbox event (type, tenant, subject, actor, aggregate version) in the
same transaction as the change; a refused change writes none."""

from __future__ import annotations

from shared.events import event_class

P = "baton.projects."


class Outbox:
    """Reads what the outbox gained since the last call."""

    def __init__(self, svc):
        self.svc = svc
        self.seen = 0

    async def new(self):
        rows = await self.svc.outbox()
        fresh, self.seen = rows[self.seen :], len(rows)
        for envelope in fresh:
            # Every payload fits its registered model, and the envelope names the schema.
            event_class(envelope["type"]).model_validate(envelope["data"])
            assert envelope["dataschema"].endswith(envelope["type"])
            assert envelope["source"] == "/baton/projects"
        return fresh

    async def one(self, type_, *, tenant, subject, version, actor="admin-1"):
        fresh = await self.new()
        assert [e["type"] for e in fresh] == [P + type_], fresh
        event = fresh[0]
        assert event["tenant"] == str(tenant)
        assert event["subject"] == str(subject)
        assert event["data"]["version"] == version
        assert event["actor"]["subject"] == actor
        return event["data"]

    async def none(self):
        assert await self.new() == []


async def test_client_changes(svc):
    box = Outbox(svc)
    client = await svc.new_client(name="Evented", slug="evented", contact={"email": "a@b.test"})
    cid = client["id"]
    data = await box.one("client.created.v1", tenant=cid, subject=cid, version=1)
    assert data == {"client_id": cid, "name": "Evented", "slug": "evented", "status": "active", "version": 1}
    assert "a@b.test" not in str(await svc.outbox())  # contact details stay here

    await svc.http.patch(
        f"/v1/clients/{cid}", json={"name": "Renamed", "metadata": {"x": 1}}, headers=svc.admin
    )
    data = await box.one("client.updated.v1", tenant=cid, subject=cid, version=2)
    assert (data["changed_fields"], data["name"]) == (["metadata", "name"], "Renamed")

    await svc.http.patch(f"/v1/clients/{cid}", json={"status": "archived"}, headers=svc.admin)
    await box.one("client.archived.v1", tenant=cid, subject=cid, version=3)
    await svc.http.patch(f"/v1/clients/{cid}", json={"status": "active"}, headers=svc.admin)
    data = await box.one("client.updated.v1", tenant=cid, subject=cid, version=4)
    assert (data["changed_fields"], data["status"]) == (["status"], "active")

    # Refused or empty changes write nothing.
    await svc.http.patch(f"/v1/clients/{cid}", json={"name": "Renamed"}, headers=svc.admin)
    await svc.http.patch(f"/v1/clients/{cid}", json={"name": "X"}, headers={**svc.admin, "If-Match": '"1"'})
    await svc.http.patch(
        f"/v1/clients/{cid}", json={"status": "archived"}, headers=svc.user(cid, "product_owner")
    )
    await svc.http.delete(f"/v1/clients/{cid}", headers=svc.user(cid, "product_owner"))
    await box.none()

    await svc.http.delete(f"/v1/clients/{cid}", headers=svc.admin)
    await box.one("client.deleted.v1", tenant=cid, subject=cid, version=5)


async def test_project_changes(svc):
    client = await svc.new_client()
    cid = client["id"]
    box = Outbox(svc)
    await box.new()
    owner = svc.user(cid, "product_owner", sub="po-7")

    project = await svc.new_project(cid, owner, name="Evented", kind="brownfield", type="service")
    pid = project["id"]
    data = await box.one("project.created.v1", tenant=cid, subject=pid, version=1, actor="po-7")
    assert data == {
        "project_id": pid,
        "client_id": cid,
        "name": "Evented",
        "description": "",
        "kind": "brownfield",
        "type": "service",
        "workflow_id": None,
        "status": "active",
        "created_by": "po-7",
        "version": 1,
    }

    await svc.http.patch(f"/v1/projects/{pid}", json={"description": "Now with words"}, headers=owner)
    data = await box.one("project.updated.v1", tenant=cid, subject=pid, version=2, actor="po-7")
    assert (data["changed_fields"], data["description"]) == (["description"], "Now with words")

    await svc.http.patch(f"/v1/projects/{pid}", json={"status": "paused"}, headers=owner)
    data = await box.one("project.status_changed.v1", tenant=cid, subject=pid, version=3, actor="po-7")
    assert (data["from_status"], data["to_status"], data["reason"]) == ("active", "paused", "requested")

    # Refused changes write nothing.
    await svc.http.patch(f"/v1/projects/{pid}", json={"status": "active"}, headers=svc.user(cid, "viewer"))
    await svc.http.patch(f"/v1/projects/{pid}", json={"name": "x"}, headers={**owner, "If-Match": '"2"'})
    await svc.http.patch(f"/v1/projects/{pid}", json={"kind": "greenfield"}, headers=owner)
    await svc.http.delete(f"/v1/projects/{pid}", headers=svc.user(cid, "member"))
    await svc.http.post(
        "/v1/projects",
        json={"client_id": cid, "name": "EVENTED", "kind": "greenfield", "type": "ui"},
        headers=owner,
    )
    await box.none()

    agent = svc.agent(cid, sub="bot-3")
    await svc.http.delete(f"/v1/projects/{pid}", headers={**agent, "If-Match": '"3"'})
    data = await box.one("project.deleted.v1", tenant=cid, subject=pid, version=4, actor="bot-3")
    assert data["reason"] == "requested"


async def test_fields_and_status_in_one_patch_are_two_versions_with_one_event_each(svc):
    client = await svc.new_client()
    project = await svc.new_project(client["id"])
    box = Outbox(svc)
    await box.new()
    r = await svc.http.patch(
        f"/v1/projects/{project['id']}", json={"name": "N", "status": "completed"}, headers=svc.admin
    )
    assert r.json()["version"] == 3
    fresh = await box.new()
    assert [(e["type"], e["data"]["version"]) for e in fresh] == [
        (P + "project.updated.v1", 2),
        (P + "project.status_changed.v1", 3),
    ]


async def test_client_deletion_writes_one_event_per_deleted_aggregate(svc):
    client = await svc.new_client()
    cid = client["id"]
    p1, p2 = await svc.new_project(cid), await svc.new_project(cid)
    await svc.http.patch(f"/v1/projects/{p2['id']}", json={"name": "bumped"}, headers=svc.admin)
    gone = await svc.new_project(cid)
    await svc.http.delete(f"/v1/projects/{gone['id']}", headers=svc.admin)
    other = await svc.new_project((await svc.new_client())["id"])
    box = Outbox(svc)
    await box.new()

    assert (await svc.http.delete(f"/v1/clients/{cid}", headers=svc.admin)).status_code == 204
    fresh = await box.new()
    assert fresh[0]["type"] == P + "client.deleted.v1"
    cascaded = {e["data"]["project_id"]: e for e in fresh[1:]}
    assert set(cascaded) == {p1["id"], p2["id"]}  # not the already deleted one, not another client's
    for pid, version in ((p1["id"], 2), (p2["id"], 3)):
        event = cascaded[pid]
        assert event["type"] == P + "project.deleted.v1"
        assert (event["tenant"], event["subject"]) == (cid, pid)
        assert (event["data"]["reason"], event["data"]["version"]) == ("client_deleted", version)
        assert (await svc.project_row(pid)).version == version
    assert (await svc.project_row(other["id"])).deleted_at is None
