"""Revocations reach the gateway's NATS KV bucket through identity's own events, and client deletions
from the projects service drop memberships, through the real relay and ConsumerRunner."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from identity.notbefore.store import NotBeforeStore
from identity.tables import Agent, KnownClient, Membership
from identity.worker import Worker
from nats.js.errors import KeyNotFoundError
from sqlalchemy import func, select

from shared.db import new_id, utcnow
from shared.events.projects import ClientCreated, ClientDeleted
from shared.messaging import Actor, Envelope, ensure_stream, to_nats
from shared.messaging.outbox import outbox

from .conftest import PASSWORD, IdentityFactory

BUCKET = "baton_not_before"


@pytest.fixture
async def wired(identity_factory: IdentityFactory, clean_jetstream: Any) -> Any:
    identity = await identity_factory()
    worker = Worker(identity.settings, identity.sessions)
    await worker.declare()
    yield identity, worker
    await worker.close()


async def drain(worker: Worker) -> None:
    """Publish the outbox, then let the not-before consumer apply what arrived."""
    while await worker.relay.relay_once():
        pass
    while await worker.not_before.process_batch(timeout=0.5):
        pass


async def kv_stamp(nats_client: Any, subject: str) -> int | None:
    kv = await nats_client.jetstream().key_value(BUCKET)
    try:
        entry = await kv.get(subject)
    except KeyNotFoundError:
        return None
    return int(entry.value)


async def test_disabling_a_user_writes_not_before(wired: Any, nats_client: Any) -> None:
    identity, worker = wired
    user = await identity.create_user("leaver@example.org")
    token = await identity.token("leaver@example.org", PASSWORD)
    issued_at = int(
        __import__("json").loads(__import__("base64").urlsafe_b64decode(token.split(".")[1] + "=="))["iat"]
    )
    response = await identity.client.patch(
        f"/v1/users/{user['id']}", json={"status": "disabled"}, headers=await identity.admin_headers()
    )
    assert response.status_code == 200
    await drain(worker)
    stamp = await kv_stamp(nats_client, user["id"])
    assert stamp is not None
    assert stamp > issued_at
    assert worker.not_before.stats.processed >= 1
    # The disabled user's refresh tokens died with it, and its old token is refused by identity too.
    assert (
        await identity.client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    ).status_code == 401


async def test_removing_a_membership_writes_not_before(wired: Any, nats_client: Any) -> None:
    identity, worker = wired
    client_id = await identity.add_client()
    user = await identity.create_user("member@example.org")
    admin = await identity.admin_headers()
    url = f"/v1/clients/{client_id}/members/{user['id']}"
    await identity.client.put(url, json={"role": "member"}, headers=admin)
    await drain(worker)
    assert await kv_stamp(nats_client, user["id"]) is None  # a grant takes nothing away
    assert (await identity.client.delete(url, headers=admin)).status_code == 204
    await drain(worker)
    first = await kv_stamp(nats_client, user["id"])
    assert first is not None
    async with identity.sessions() as session:
        payload = (
            await session.execute(
                select(outbox.c.payload).where(outbox.c.event_type == "baton.identity.membership.revoked.v1")
            )
        ).scalar_one()
    assert payload["tenant"] == str(client_id)
    assert payload["data"]["not_before"] == first


async def test_stamps_never_go_backwards(nats_client: Any, nats_url: str, clean_jetstream: Any) -> None:
    store = NotBeforeStore(nats_url, bucket=BUCKET, ttl_seconds=3600)
    subject = str(uuid.uuid4())
    assert await store.raise_to(subject, 200) == 200
    assert await store.raise_to(subject, 100) == 200  # a late, older event
    assert await store.raise_to(subject, 300) == 300
    assert await kv_stamp(nats_client, subject) == 300
    await store.close()


async def publish_client_event(nats_client: Any, event: Any) -> None:
    js = nats_client.jetstream()
    await ensure_stream(js, "projects")
    envelope = Envelope(
        id=str(new_id()),
        source="/baton/projects",
        type=event.event_type,
        subject=str(event.client_id),
        time=utcnow(),
        tenant=str(event.client_id),
        actor=Actor(subject="admin", kind="user"),
        data=event.model_dump(mode="json"),
    )
    subject, headers, body = to_nats(envelope)
    await js.publish(subject, body, headers=headers)


async def test_client_events_through_the_consumer(wired: Any, nats_client: Any) -> None:
    identity, worker = wired
    client_id = uuid.uuid4()
    await publish_client_event(
        nats_client, ClientCreated(client_id=client_id, name="Acme", slug="acme", status="active", version=1)
    )
    assert await worker.clients.process_batch(timeout=2) == 1
    admin = await identity.admin_headers()
    user = await identity.create_user("acme@example.org")
    url = f"/v1/clients/{client_id}/members/{user['id']}"
    assert (await identity.client.put(url, json={"role": "product_owner"}, headers=admin)).status_code == 201
    agent = (
        await identity.client.post(
            f"/v1/clients/{client_id}/agents", json={"name": "bot", "scopes": ["search"]}, headers=admin
        )
    ).json()

    await publish_client_event(nats_client, ClientDeleted(client_id=client_id, version=2))
    assert await worker.clients.process_batch(timeout=2) == 1
    async with identity.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Membership).where(Membership.client_id == client_id)
        )
        client = await session.get(KnownClient, client_id)
        bot = await session.get(Agent, uuid.UUID(agent["id"]))
    assert count == 0
    assert client is not None
    assert client.deleted_at is not None
    assert bot is not None
    assert bot.status == "deleted"
    # The dropped membership and the agent reach the not-before bucket through identity's own events.
    await drain(worker)
    assert await kv_stamp(nats_client, user["id"]) is not None
    assert await kv_stamp(nats_client, agent["id"]) is not None
    # The client is gone for identity: no new memberships, and a late duplicate "created" changes nothing.
    assert (await identity.client.put(url, json={"role": "viewer"}, headers=admin)).status_code == 404
    await publish_client_event(
        nats_client, ClientCreated(client_id=client_id, name="Acme", slug="acme", status="active", version=1)
    )
    await worker.clients.process_batch(timeout=2)
    assert (await identity.client.put(url, json={"role": "viewer"}, headers=admin)).status_code == 404


async def test_running_worker_stamps_within_seconds(wired: Any, nats_client: Any) -> None:
    """The worker's components as they run in production: relay and consumers in their own loops."""
    identity, worker = wired
    user = await identity.create_user("live@example.org")
    tasks = [asyncio.create_task(c.run()) for c in (worker.relay, worker.not_before, worker.housekeeping)]
    try:
        await identity.client.patch(
            f"/v1/users/{user['id']}", json={"status": "disabled"}, headers=await identity.admin_headers()
        )
        deadline = time.monotonic() + 10
        stamp = None
        while stamp is None and time.monotonic() < deadline:
            stamp = await kv_stamp(nats_client, user["id"])
            await asyncio.sleep(0.1)
        assert stamp is not None
    finally:
        for component in (worker.relay, worker.not_before, worker.housekeeping):
            component.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=15)


async def test_the_workers_consumers_prune_their_inbox_as_the_settings_say(
    identity_factory: IdentityFactory,
) -> None:
    identity = await identity_factory()
    settings = identity.settings.model_copy(
        update={"inbox_retention_days": 3.0, "inbox_prune_interval_seconds": 0.0}
    )
    worker = Worker(settings, identity.sessions)
    for runner in (worker.not_before, worker.clients):
        assert runner.inbox_pruning.retention == timedelta(days=3)
        assert not runner.inbox_pruning.enabled
