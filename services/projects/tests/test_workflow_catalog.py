"""A project's ``type`` (other than fullstack / service / ui) and ``workflow_id`` must name a workflow the
workflows service announced (``definition.published``, applied through the real ``projects-workflows``
consumer on JetStream); anything else is a 422 ``unknown_workflow`` that writes nothing."""

from __future__ import annotations

import asyncio

import pytest
from projects.catalog.models import KnownWorkflow
from projects.database import messaging
from projects.projects.handlers import workflow_events_consumer
from sqlalchemy import select

from shared.db import new_id, utcnow
from shared.events.workflows import WorkflowDefinitionPublished
from shared.messaging import Actor, Envelope, ensure_stream
from shared.testing.jetstream import drain, publish_envelope

HINT = "GET /v1/workflow-definitions"


def published(definition_id: str, version: int = 1, *, name: str | None = None, tenant: str | None = None):
    return Envelope(
        id=str(new_id()),
        source="/baton/workflows",
        type=WorkflowDefinitionPublished.event_type,
        subject=definition_id,
        time=utcnow(),
        tenant=tenant,
        actor=Actor(subject="workflows", kind="service"),
        data={
            "definition_id": definition_id,
            "version": version,
            "name": name or f"{definition_id} v{version}",
            "format": "bmad-v4",
        },
    )


@pytest.fixture
async def js(clean_jetstream):
    await ensure_stream(clean_jetstream, "workflows")
    return clean_jetstream


@pytest.fixture
async def consumer(svc, nats_url):
    runner = workflow_events_consumer(svc.sessions, nats_url, fetch_timeout=0.2, backoff=(0.1,))
    yield runner
    await runner.close()


async def catalog(svc) -> dict[str, tuple[int, str]]:
    async with svc.sessions() as session:
        rows = (await session.scalars(select(KnownWorkflow))).all()
    return {r.id: (r.version, r.name) for r in rows}


def body(client, **fields):
    return {"client_id": client["id"], "name": "Garden", "kind": "greenfield", "type": "fullstack", **fields}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"type": "no-such-flow"}, {"type": "no-such-flow"}),
        ({"workflow_id": "no-such-flow"}, {"workflow_id": "no-such-flow"}),
        ({"type": "ui", "workflow_id": "no-such-flow"}, {"workflow_id": "no-such-flow"}),
        (
            {"type": "other-flow", "workflow_id": "no-such-flow"},
            {"type": "other-flow", "workflow_id": "no-such-flow"},
        ),
    ],
)
async def test_an_unknown_workflow_is_422_and_writes_nothing(svc, fields, named):
    await svc.know_workflows("greenfield-ui")
    client = await svc.new_client()
    before = await svc.counts()

    r = await svc.http.post("/v1/projects", json=body(client, **fields), headers=svc.admin)

    problem = svc.problem(r, 422, "unknown_workflow")
    assert {e["loc"][1]: e["type"] for e in problem["errors"]} == dict.fromkeys(named, "unknown_workflow")
    assert HINT in problem["detail"]
    for field, ref in named.items():
        assert f"{field} '{ref}'" in problem["detail"]
    assert await svc.counts() == before  # no project row, no outbox row


async def test_standard_types_need_no_catalog(svc):
    client = await svc.new_client()
    for type_ in ("fullstack", "service", "ui"):
        r = await svc.http.post("/v1/projects", json=body(client, name=type_, type=type_), headers=svc.admin)
        assert r.status_code == 201, r.text


async def test_an_announced_definition_can_be_named_and_replays_change_nothing(svc, js, consumer):
    client = await svc.new_client()
    create = body(client, type="garden-flow")
    svc.problem(await svc.http.post("/v1/projects", json=create, headers=svc.admin), 422, "unknown_workflow")

    third = published("garden-flow", 3, name="Garden flow")
    await publish_envelope(js, third)
    await drain(consumer, lambda s: s.processed == 1)
    assert await catalog(svc) == {"garden-flow": (3, "Garden flow")}
    assert await svc.counts() == {"clients": 1, "projects": 0, "outbox": 1}  # the handler emits nothing

    r = await svc.http.post("/v1/projects", json=create, headers=svc.admin)
    assert r.status_code == 201, r.text
    assert (r.json()["type"], r.json()["workflow_id"]) == ("garden-flow", "garden-flow")
    created = (await svc.outbox())[-1]
    assert (created["type"], created["data"]["workflow_id"]) == (
        "baton.projects.project.created.v1",
        "garden-flow",
    )
    r = await svc.http.post(
        "/v1/projects", json=body(client, name="Pinned", workflow_id="garden-flow"), headers=svc.admin
    )
    assert r.status_code == 201, r.text

    # The same event again (past the dedupe window): the inbox skips it. An older version, delivered late:
    # applied, but the catalog keeps the highest version.
    await publish_envelope(js, third, msg_id=f"{third.id}-again")
    await publish_envelope(js, published("garden-flow", 2, name="Garden flow, older"))
    await publish_envelope(js, published("garden-flow", 3, name="Garden flow, same version again"))
    await drain(consumer, lambda s: s.duplicates == 1 and s.processed == 3)
    assert await catalog(svc) == {"garden-flow": (3, "Garden flow")}

    # A newer version is recorded.
    await publish_envelope(js, published("garden-flow", 4, name="Garden flow 4"))
    await drain(consumer, lambda s: s.processed == 4)
    assert await catalog(svc) == {"garden-flow": (4, "Garden flow 4")}
    assert consumer.stats.dead_lettered == 0


async def test_an_announcement_under_a_tenant_is_dead_lettered(svc, js, consumer):
    client = await svc.new_client()
    await publish_envelope(js, published("tenant-flow", tenant=client["id"]))
    await publish_envelope(js, published("fine-flow"))
    await drain(consumer, lambda s: s.dead_lettered == 1 and s.processed == 1)
    assert await catalog(svc) == {"fine-flow": (1, "fine-flow v1")}
    async with svc.sessions() as session:
        reasons = (await session.execute(select(messaging.dead_letters.c.reason))).scalars().all()
    assert len(reasons) == 1


async def test_a_definition_announced_while_the_request_waits_is_accepted(svc, monkeypatch):
    """A project naming a workflow uploaded a moment ago waits for its announcement (up to
    ``BATON_PROJECTS_WORKFLOW_WAIT_SECONDS``) instead of being refused; past the wait it is a 422."""
    monkeypatch.setattr(svc.app.state.settings, "workflow_wait_seconds", 10.0)
    client = await svc.new_client()

    async def announce_later():
        await asyncio.sleep(0.5)
        await svc.know_workflows("late-flow")

    announcing = asyncio.create_task(announce_later())
    r = await svc.http.post("/v1/projects", json=body(client, type="late-flow"), headers=svc.admin)
    await announcing
    assert r.status_code == 201, r.text
    assert r.json()["workflow_id"] == "late-flow"

    # A caller who would be refused anyway is refused at once, without waiting for anything.
    started = asyncio.get_running_loop().time()
    for headers, status in ((svc.outsider(), 404), (svc.user(client["id"], "viewer"), 403)):
        r = await svc.http.post("/v1/projects", json=body(client, type="never-flow"), headers=headers)
        svc.problem(r, status)
    assert asyncio.get_running_loop().time() - started < 5  # the wait is 10 s

    monkeypatch.setattr(svc.app.state.settings, "workflow_wait_seconds", 0.3)
    started = asyncio.get_running_loop().time()
    r = await svc.http.post(
        "/v1/projects", json=body(client, name="Never", type="never-flow"), headers=svc.admin
    )
    svc.problem(r, 422, "unknown_workflow")
    assert asyncio.get_running_loop().time() - started >= 0.3  # it did wait before refusing


async def test_patch_refuses_an_unknown_workflow_by_name(svc):
    await svc.know_workflows("greenfield-ui")
    client = await svc.new_client()
    project = await svc.new_project(client["id"])
    before = await svc.counts()
    url = f"/v1/projects/{project['id']}"

    r = await svc.http.patch(url, json={"workflow_id": "no-such-flow", "name": "x"}, headers=svc.admin)
    problem = svc.problem(r, 422, "unknown_workflow")
    assert [e["loc"] for e in problem["errors"]] == [["body", "workflow_id"]]
    r = await svc.http.patch(url, json={"type": "no-such-flow"}, headers=svc.admin)
    assert [e["loc"] for e in svc.problem(r, 422, "unknown_workflow")["errors"]] == [["body", "type"]]
    # A known workflow is still fixed at creation.
    r = await svc.http.patch(url, json={"workflow_id": "greenfield-ui"}, headers=svc.admin)
    svc.problem(r, 422, "fields_not_writable")
    # Sending back the values the project has is fine.
    r = await svc.http.patch(url, json={"type": "fullstack", "name": "Renamed"}, headers=svc.admin)
    assert r.status_code == 200, r.text
    assert (await svc.counts())["projects"] == before["projects"]
    row = await svc.project_row(project["id"])
    assert (row.name, row.version, row.workflow_id) == ("Renamed", 2, None)


async def test_openapi_declares_the_unknown_workflow_answer(svc):
    spec = (await svc.http.get("/openapi.json")).json()
    for method in ("post", "patch"):
        path = "/v1/projects" if method == "post" else "/v1/projects/{project_id}"
        response = spec["paths"][path][method]["responses"]["422"]
        assert "unknown_workflow" in response["description"]
        assert "application/problem+json" in response["content"]
