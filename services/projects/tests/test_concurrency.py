"""Optimistic concurrency under real concurrency: requests and transactions that overlap in Postgres."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from projects.projects import service
from projects.projects.schemas import ProjectUpdate

from shared.db import transaction
from shared.errors import PreconditionFailed


async def test_concurrent_patches_with_the_same_etag_exactly_one_wins(svc):
    client = await svc.new_client()
    project = await svc.new_project(client["id"])
    etag = (await svc.http.get(f"/v1/projects/{project['id']}", headers=svc.admin)).headers["etag"]
    before = len(await svc.outbox())

    async def patch(i):
        return await svc.http.patch(
            f"/v1/projects/{project['id']}",
            json={"description": f"writer {i}"},
            headers={**svc.admin, "If-Match": etag},
        )

    responses = await asyncio.gather(*(patch(i) for i in range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 412, 412, 412], [r.text for r in responses]
    winner = next(r for r in responses if r.status_code == 200)
    for loser in (r for r in responses if r.status_code == 412):
        assert loser.json()["code"] == "version_mismatch"

    row = await svc.project_row(project["id"])
    assert (row.version, row.description) == (2, winner.json()["description"])
    events = (await svc.outbox())[before:]
    assert [e["data"]["version"] for e in events] == [2]


async def test_the_second_transaction_waits_for_the_first_and_then_fails(svc):
    """Two transactions on two connections: the row lock makes the second read the first's commit."""
    client = await svc.new_client()
    project = await svc.new_project(client["id"])
    pid = uuid.UUID(project["id"])
    principal = svc.tokens.principal("admin-1", admin=True)
    first_locked = asyncio.Event()
    release_first = asyncio.Event()

    async def first():
        async with transaction(svc.sessions) as session:
            await service.update_project(
                session, pid, ProjectUpdate(name="first"), principal=principal, if_match='"1"'
            )
            first_locked.set()
            await release_first.wait()

    async def second():
        await first_locked.wait()
        async with transaction(svc.sessions) as session:
            await service.update_project(
                session, pid, ProjectUpdate(name="second"), principal=principal, if_match='"1"'
            )

    t1 = asyncio.create_task(first())
    t2 = asyncio.create_task(second())
    await first_locked.wait()
    await asyncio.sleep(0.3)
    assert not t2.done()  # blocked on the row lock, not racing past the version check
    release_first.set()
    await t1
    with pytest.raises(PreconditionFailed):
        await t2
    row = await svc.project_row(pid)
    assert (row.name, row.version) == ("first", 2)


async def test_concurrent_patch_and_delete_with_the_same_etag(svc):
    client = await svc.new_client()
    project = await svc.new_project(client["id"])
    url = f"/v1/projects/{project['id']}"
    headers = {**svc.admin, "If-Match": '"1"'}
    patched, deleted = await asyncio.gather(
        svc.http.patch(url, json={"name": "late"}, headers=headers), svc.http.delete(url, headers=headers)
    )
    outcomes = sorted([patched.status_code, deleted.status_code])
    # Whoever locks the row second sees either a newer version (412) or no live row (404).
    assert outcomes in ([204, 404], [200, 412], [204, 412])
    assert (await svc.project_row(project["id"])).version == 2


async def test_no_project_outlives_a_concurrently_deleted_client(svc):
    for _ in range(3):
        client = await svc.new_client()
        body = {"client_id": client["id"], "name": "Racer", "kind": "greenfield", "type": "ui"}
        created, deleted = await asyncio.gather(
            svc.http.post("/v1/projects", json=body, headers=svc.admin),
            svc.http.delete(f"/v1/clients/{client['id']}", headers=svc.admin),
        )
        assert deleted.status_code == 204
        assert created.status_code in (201, 404), created.text
        live = (await svc.http.get("/v1/projects", headers=svc.admin)).json()["items"]
        assert live == []


async def test_a_change_is_committed_before_its_response_leaves(svc):
    """A caller that got its 201/200 can read its own write at once (from any replica): the
    transaction commits before the response starts, not after it was sent."""
    client = await svc.new_client()
    seen = []

    async def observing(scope, receive, send):
        async def send_and_look(message):
            if message["type"] == "http.response.start" and scope["method"] in ("POST", "PATCH"):
                seen.append(await svc.counts())
            await send(message)

        await svc.app(scope, receive, send_and_look)

    before = await svc.counts()
    transport = httpx.ASGITransport(observing)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        body = {"client_id": client["id"], "name": "Seen", "kind": "greenfield", "type": "ui"}
        r = await http.post("/v1/projects", json=body, headers=svc.admin)
        assert r.status_code == 201
        r = await http.patch(f"/v1/projects/{r.json()['id']}", json={"name": "Seen 2"}, headers=svc.admin)
        assert r.status_code == 200
    assert seen[0]["projects"] == before["projects"] + 1
    assert seen[0]["outbox"] == before["outbox"] + 1
    assert seen[1]["outbox"] == before["outbox"] + 2
