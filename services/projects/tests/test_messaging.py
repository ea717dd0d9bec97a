"""The worker's messaging on real NATS JetStream: ``workflow.completed`` through the real
``ConsumerRunner`` (replays change nothing), the relay publishing this service's outbox, and
``python -m projects.worker`` as its own process (relays, consumes, exits cleanly on SIGTERM)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid

import pytest
from projects.database import messaging
from projects.projects.handlers import WORKFLOW_CONSUMER, workflow_events_consumer
from sqlalchemy import func, select

from shared.db import new_id, utcnow
from shared.events.workflows import WorkflowCompleted
from shared.messaging import Actor, Envelope, OutboxRelay, ensure_stream, from_nats, stream_name, to_nats
from shared.testing.jetstream import drain, publish_envelope


def completed(project, *, client_id=None, tenant=None, **data):
    client_id = client_id or project["client_id"]
    event = {
        "instance_id": str(uuid.uuid4()),
        "project_id": project["id"],
        "client_id": client_id,
        "version": 9,
        "definition_id": "greenfield-fullstack",
        "outcome": "completed",
        **data,
    }
    return Envelope(
        id=str(new_id()),
        source="/baton/workflows",
        type=WorkflowCompleted.event_type,
        subject=event["instance_id"],
        time=utcnow(),
        tenant=tenant or client_id,
        actor=Actor(subject="workflows", kind="service"),
        data={k: v for k, v in event.items() if v is not None},
    )


@pytest.fixture
async def workflows_stream(clean_jetstream):
    await ensure_stream(clean_jetstream, "workflows")
    return clean_jetstream


@pytest.fixture
async def consumers(svc, nats_url):
    made = []

    def make():
        consumer = workflow_events_consumer(svc.sessions, nats_url, fetch_timeout=0.2, backoff=(0.1,))
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        await consumer.close()


async def inbox_rows(svc):
    async with svc.sessions() as session:
        query = (
            select(func.count())
            .select_from(messaging.inbox)
            .where(messaging.inbox.c.consumer == WORKFLOW_CONSUMER)
        )
        return int(await session.scalar(query))


async def test_workflow_completed_completes_the_project_once(svc, workflows_stream, consumers):
    js = workflows_stream
    client = await svc.new_client()
    project = await svc.new_project(client["id"])
    await svc.http.patch(f"/v1/projects/{project['id']}", json={"status": "paused"}, headers=svc.admin)
    outbox_before = len(await svc.outbox())

    envelope = completed(project)
    await publish_envelope(js, envelope)
    consumer = consumers()
    await drain(consumer, lambda s: s.processed == 1)

    row = await svc.project_row(project["id"])
    assert (row.status, row.version) == ("completed", 3)
    events = (await svc.outbox())[outbox_before:]
    assert len(events) == 1
    assert events[0]["type"] == "baton.projects.project.status_changed.v1"
    assert events[0]["tenant"] == client["id"]
    assert events[0]["actor"]["subject"] == "workflows"
    assert events[0]["data"] == {
        "project_id": project["id"],
        "client_id": client["id"],
        "from_status": "paused",
        "to_status": "completed",
        "reason": "workflow_completed",
        "version": 3,
    }
    r = await svc.http.get(f"/v1/projects/{project['id']}", headers=svc.admin)
    assert r.json()["status"] == "completed"

    # The same event again (a relay re-publishing past the dedupe window): the inbox skips it.
    await publish_envelope(js, envelope, msg_id=f"{envelope.id}-again")
    await drain(consumer, lambda s: s.duplicates == 1)
    # A consumer rebuilt from scratch replays the whole stream: nothing changes either.
    await js.delete_consumer(stream_name("workflows"), WORKFLOW_CONSUMER)
    await consumer.close()
    replayer = consumers()
    await drain(replayer, lambda s: s.duplicates == 2)
    # A second, distinct completion of the same project: applied, but the project is already completed.
    await publish_envelope(js, completed(project, version=10))
    await drain(replayer, lambda s: s.processed == 1)

    row = await svc.project_row(project["id"])
    assert (row.status, row.version) == ("completed", 3)
    assert len(await svc.outbox()) == outbox_before + 1
    assert await inbox_rows(svc) == 2
    assert replayer.stats.dead_lettered == 0


async def test_events_that_must_not_apply_are_dead_lettered_or_ignored(svc, workflows_stream, consumers):
    js = workflows_stream
    a, b = await svc.new_client(), await svc.new_client()
    project = await svc.new_project(a["id"])
    archived = await svc.new_project(a["id"])
    await svc.http.patch(f"/v1/projects/{archived['id']}", json={"status": "archived"}, headers=svc.admin)
    deleted = await svc.new_project(a["id"])
    await svc.http.delete(f"/v1/projects/{deleted['id']}", headers=svc.admin)
    before = await svc.counts()

    # Another tenant claiming A's project, an envelope tenant that contradicts its data, data that does
    # not fit the schema: poison, recorded, never applied.
    await publish_envelope(js, completed(project, client_id=b["id"]))
    await publish_envelope(js, completed(project, tenant=b["id"]))
    await publish_envelope(js, completed(project, project_id="not-a-uuid"))
    # Nothing to do: an unknown project, an archived one, a deleted one.
    await publish_envelope(js, completed({"id": str(uuid.uuid4()), "client_id": a["id"]}))
    await publish_envelope(js, completed(archived))
    await publish_envelope(js, completed(deleted))

    consumer = consumers()
    await drain(consumer, lambda s: s.dead_lettered == 3 and s.processed == 3)
    assert await svc.counts() == before
    for p, status, version in ((project, "active", 1), (archived, "archived", 2)):
        row = await svc.project_row(p["id"])
        assert (row.status, row.version) == (status, version)
    async with svc.sessions() as session:
        reasons = (await session.execute(select(messaging.dead_letters.c.reason))).scalars().all()
    assert len(reasons) == 3


async def test_the_relay_publishes_the_outbox_to_the_projects_stream(svc, clean_jetstream, nats_url):
    js = clean_jetstream
    await svc.know_workflows("greenfield-ui")
    client = await svc.new_client()
    project = await svc.new_project(client["id"], type="greenfield-ui")

    relay = OutboxRelay(svc.engine, nats_url, "projects")
    try:
        assert await relay.relay_once() == 2
    finally:
        await relay.close()

    sub = await js.pull_subscribe("baton.projects.>", stream=stream_name("projects"))
    msgs = await sub.fetch(2, timeout=5)
    envelopes = [from_nats(m) for m in msgs]
    assert [(m.subject, e.type) for m, e in zip(msgs, envelopes, strict=True)] == [
        ("baton.projects.client.created", "baton.projects.client.created.v1"),
        ("baton.projects.project.created", "baton.projects.project.created.v1"),
    ]
    created = envelopes[1]
    assert created.tenant == client["id"]
    assert created.subject == project["id"]
    assert created.data["workflow_id"] == "greenfield-ui"
    assert created.data["kind"] == "greenfield"
    async with svc.sessions() as session:
        unsent = await session.scalar(
            select(func.count()).select_from(messaging.outbox).where(messaging.outbox.c.sent_at.is_(None))
        )
    assert unsent == 0


async def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_the_worker_process_relays_and_consumes(svc, clean_jetstream, database_url, nats_url):
    js = clean_jetstream
    await ensure_stream(js, "workflows")
    client = await svc.new_client()
    project = await svc.new_project(client["id"])

    env = {
        **os.environ,
        "BATON_DATABASE_URL": database_url,
        "BATON_DATABASE_SCHEMA": svc.schema,
        "BATON_NATS_URL": nats_url,
        "BATON_LOG_JSON": "false",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "projects.worker",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def relayed(n):
            try:
                info = await js.stream_info(stream_name("projects"))
            except Exception:
                return False
            return info.state.messages >= n

        await wait_until(lambda: relayed(2))

        subject, headers, body = to_nats(completed(project))
        await js.publish(subject, body, headers=headers)

        async def project_completed():
            row = await svc.project_row(project["id"])
            return row.status == "completed"

        await wait_until(project_completed)
        await wait_until(lambda: relayed(3))  # its project.status_changed went out too
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()[-2000:]
