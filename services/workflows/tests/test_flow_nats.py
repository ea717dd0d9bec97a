"""greenfield-fullstack end to end through the real service: events over real NATS JetStream into the
worker's consumers, people and agents through the HTTP API, the relay publishing workflow events.

project.created → instance → analyst task ready → document.indexed → next task ready → ... → three
stories through the story cycle (one with a QA fix loop) → workflow.completed; the sprint status matches;
duplicate and out-of-order events change nothing they should not.
"""

from __future__ import annotations

import time

import pytest
import yaml
from sqlalchemy import func, select
from workflows.database import messaging
from workflows.instances.handlers import documents_consumer, projects_consumer
from workflows.instances.models import InstanceRow

from shared.db import new_id, utcnow
from shared.messaging import Actor, Envelope, OutboxRelay, ensure_stream, from_nats, stream_name, to_nats

from .conftest import document_indexed, project_created


def envelope(event, service, tenant, **extra):
    return Envelope(
        id=str(extra.get("event_id") or new_id()),
        source=f"/baton/{service}",
        type=event.event_type,
        subject=str(getattr(event, "document_id", None) or event.project_id),
        time=utcnow(),
        tenant=str(tenant),
        actor=Actor(subject="user-po", kind="user"),
        data=event.model_dump(mode="json"),
    )


class Bus:
    def __init__(self, svc, js, nats_url):
        self.svc, self.js = svc, js
        self.projects = projects_consumer(svc.sessions, nats_url, fetch_timeout=0.2, backoff=(0.1,))
        self.documents = documents_consumer(svc.sessions, nats_url, fetch_timeout=0.2, backoff=(0.1,))
        self.expected = 0

    async def publish(self, env, *, counted=True):
        subject, headers, body = to_nats(env)
        await self.js.publish(subject, body, headers=headers)
        self.expected += int(counted)
        return env

    async def project_created(self, client, project, **fields):
        return await self.publish(envelope(project_created(client, project, **fields), "projects", client))

    async def indexed(self, project, client, kind, **fields):
        event = document_indexed(project, client, kind, **fields)
        await self.publish(envelope(event, "documents", client))
        return event.document_id

    def handled(self):
        return sum(
            c.stats.processed + c.stats.duplicates + c.stats.dead_lettered + c.stats.unhandled
            for c in (self.projects, self.documents)
        )

    async def drain(self, timeout=30.0):
        """Let the consumers apply everything published so far (``expected`` messages in all)."""
        deadline = time.monotonic() + timeout
        while self.handled() < self.expected:
            assert time.monotonic() < deadline, (self.handled(), self.expected)
            for consumer in (self.projects, self.documents):
                try:
                    await consumer.process_batch(timeout=0.05)
                except TimeoutError:
                    continue

    async def close(self):
        await self.projects.close()
        await self.documents.close()


@pytest.fixture
async def bus(svc, clean_jetstream, nats_url):
    for service in ("projects", "documents", "workflows"):
        await ensure_stream(clean_jetstream, service)
    b = Bus(svc, clean_jetstream, nats_url)
    yield b
    await b.close()


async def test_greenfield_fullstack_end_to_end(svc, bus, nats_url, clean_jetstream):
    client, project = new_id(), new_id()
    user = svc.user(client, "product_owner")
    agents = {
        role: svc.agent(client, (role,))
        for role in ("analyst", "pm", "ux-expert", "architect", "po", "sm", "dev", "qa")
    }

    # project.created → instance → analyst task ready (a redelivery under another id changes nothing).
    env = await bus.project_created(client, project)
    await bus.publish(env, counted=False)  # same Nats-Msg-Id: JetStream drops it
    dup = envelope(project_created(client, project), "projects", client)
    await bus.publish(dup)  # a second event for the same project: the service keeps one instance
    await bus.drain()
    async with svc.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(InstanceRow)) == 1
    task = await svc.waiting(project)
    assert task["step_id"] == "create_project_brief"
    assert task["state"] == "ready"
    assert task["roles"] == ["analyst"]

    # The analyst claims it and writes the brief; the documents service indexes it → the PM's task.
    r = await svc.http.post(f"/v1/tasks/{task['id']}/claim", headers=agents["analyst"])
    assert r.status_code == 200
    await bus.indexed(project, client, "project-brief")
    await bus.drain()
    task = await svc.waiting(project)
    assert task["step_id"] == "create_prd"
    assert task["state"] == "ready"
    assert task["roles"] == ["pm"]

    async def work(expected_step, *, kind=None, role=None, title=None):
        t = await svc.waiting(project)
        assert t["step_id"] == expected_step, t
        headers = agents[role or t["roles"][0]] if (role or t["roles"]) else user
        r = await svc.http.post(f"/v1/tasks/{t['id']}/claim", headers=headers)
        assert r.status_code == 200, r.text
        if kind:
            await bus.indexed(project, client, kind, title=title or kind)
            await bus.drain()
        else:
            r = await svc.http.post(f"/v1/tasks/{t['id']}/complete", json={}, headers=headers)
            assert r.status_code == 200, r.text

    answered = []

    async def answer(token, value, **extra):
        answered.append(token)
        d = await svc.waiting(project)
        assert d.get("token") == token, d
        r = await svc.http.post(f"/v1/decisions/{d['id']}", json={"answer": value, **extra}, headers=user)
        assert r.status_code == 200, r.text

    await work("create_prd", kind="prd")
    await work("create_front_end_spec", kind="front-end-spec")
    await answer("user_wants_ai_generation", "no")
    await work("create_fullstack_architecture", kind="architecture")
    await answer("architecture_suggests_prd_changes", "no")
    await work("validate_all_artifacts")
    await answer("po_checklist_issues", "yes", flagged_documents=["prd.md"])
    fix = await svc.waiting(project)
    assert fix["roles"] == ["pm"]
    await work("update_any_flagged_documents")
    await work("validate_all_artifacts")
    await answer("po_checklist_issues", "no")
    await answer("user_has_generated_ui", "no")
    await work("development_order_guidance")
    await work("shard_documents")

    for n in (1, 2, 3):
        await work("create_story", kind="story", title=f"Story number {n}")
        await answer("user_wants_story_review", "no")
        await work("implement_story")
        await work("review_implementation")
        if n == 1:  # QA leaves unchecked items once: dev fixes, QA reviews again
            await answer("qa_left_unchecked_items", "yes")
            await work("address_qa_feedback")
            await work("review_implementation")
        await answer("qa_left_unchecked_items", "no")
        await answer("more_stories_in_epic", "yes" if n < 3 else "no")
    retro = await svc.waiting(project)
    assert retro["step_id"] == "epic_retrospective"
    assert retro["optional"]
    r = await svc.http.post(f"/v1/tasks/{retro['id']}/skip", json={"reason": "later"}, headers=user)
    assert r.status_code == 200
    await answer("another_epic", "no")

    wf = await svc.workflow(project)
    assert wf["status"] == "completed"
    assert wf["outcome"] == "completed"
    assert wf["open_tasks"] == []
    r = await svc.http.get(f"/v1/projects/{project}/sprint-status?format=yaml", headers=user)
    assert yaml.safe_load(r.text)["development_status"] == {
        "epic-1": "done",
        "1-1-story-number-1": "done",
        "1-2-story-number-2": "done",
        "1-3-story-number-3": "done",
        "epic-1-retrospective": "optional",
    }

    # Late and duplicate events after the end change nothing.
    await bus.indexed(project, client, "story")
    await bus.publish(dup, counted=False)  # within JetStream's duplicate window: dropped
    await bus.publish(envelope(project_created(client, project), "projects", client))
    await bus.drain()
    after = await svc.workflow(project)
    assert after["status"] == "completed"
    assert after["open_tasks"] == []
    assert after["open_decisions"] == []

    # The relay publishes every workflow event once, in order, ending with workflow.completed.
    relay = OutboxRelay(svc.engine, nats_url, "workflows")
    try:
        published = await relay.relay_once()
    finally:
        await relay.close()
    async with svc.sessions() as session:
        rows = await session.scalar(select(func.count()).select_from(messaging.outbox))
    assert published == rows
    sub = await clean_jetstream.pull_subscribe("baton.workflows.>", stream=stream_name("workflows"))
    msgs = []
    while len(msgs) < published:
        msgs += await sub.fetch(500, timeout=2)
    # The built-in definitions' definition.published came first; the workflow's own events follow.
    msgs = [m for m in msgs if m.subject.startswith("baton.workflows.workflow.")]
    types = [from_nats(m).type for m in msgs]
    assert types[0] == "baton.workflows.workflow.started.v1"
    assert types[-1] == "baton.workflows.workflow.completed.v1"
    short = [t.removeprefix("baton.workflows.workflow.").removesuffix(".v1") for t in types]
    assert set(short) == {
        "started",
        "task_ready",
        "task_claimed",
        "task_completed",
        "task_skipped",
        "decision_requested",
        "decision_made",
        "story_status_changed",
        "completed",
    }
    # Every decision was announced once before its answer, and answered once by the product owner.
    asked = [from_nats(m).data for m in msgs if m.subject.endswith("decision_requested")]
    made = [from_nats(m).data for m in msgs if m.subject.endswith("decision_made")]
    assert [d["token"] for d in asked] == [d["token"] for d in made] == answered
    assert [d["decision_id"] for d in asked] == [d["decision_id"] for d in made]
    assert {d["answered_by"] for d in made} == {"user-product_owner"}
    # One question at a time: each announcement is followed by its own answer before the next one.
    pairs = [
        (t.removeprefix("decision_"), from_nats(m).data["decision_id"])
        for t, m in zip(short, msgs, strict=True)
        if t.startswith("decision_")
    ]
    assert pairs == [(step, d["decision_id"]) for d in asked for step in ("requested", "made")]
    stories = [from_nats(m).data for m in msgs if m.subject.endswith("story_status_changed")]
    assert [s["to_status"] for s in stories if s["story"] == 1] == [
        "backlog",
        "ready-for-dev",
        "in-progress",
        "review",
        "in-progress",
        "review",
        "done",
    ]
    completed = from_nats(msgs[-1])
    assert completed.tenant == str(client)
    assert completed.data["project_id"] == str(project)


async def test_out_of_order_and_cross_tenant_events(svc, bus):
    client, project = new_id(), new_id()
    # The brief is indexed before the project exists: remembered, then used when the instance starts.
    await bus.indexed(project, client, "project-brief")
    await bus.drain()
    await bus.project_created(client, project)
    await bus.drain()
    assert (await svc.waiting(project))["step_id"] == "create_prd"
    # A document that names another client for this project is dead-lettered, not applied.
    await bus.indexed(project, new_id(), "prd")
    await bus.drain()
    assert (await svc.waiting(project))["step_id"] == "create_prd"
    assert bus.documents.stats.dead_lettered == 1
    # A project whose kind/type names no workflow is dead-lettered with the reason.
    await bus.project_created(client, new_id(), kind="brownfield", type="spaceship")
    await bus.drain()
    assert bus.projects.stats.dead_lettered == 1
