"""The worker on real NATS JetStream and Postgres with the real model: the projects service's events make a
project known, an upload leaves through the outbox relay, the processing consumer indexes it, search finds
it; a broken PDF fails cleanly and the worker carries on; a project deletion removes its documents."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import timedelta

from documents.worker import components

from shared.db import new_id, utcnow
from shared.events.projects import ClientCreated, ProjectCreated, ProjectDeleted
from shared.messaging import Actor, ConsumerRunner, Envelope, ensure_stream, to_nats


async def publish(js, event, tenant):
    envelope = Envelope(
        id=str(new_id()),
        source="/baton/projects",
        type=event.event_type,
        subject=str(getattr(event, "project_id", None) or event.client_id),
        time=utcnow(),
        tenant=str(tenant),
        actor=Actor(subject="po-1", kind="user"),
        data=event.model_dump(mode="json"),
    )
    subject, headers, body = to_nats(envelope)
    await js.publish(subject, body, headers=headers)


async def wait_for(predicate, timeout=60.0, every=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every)


async def test_upload_is_processed_by_the_worker_and_searchable(
    make_svc, real_model, nats_url, clean_jetstream, pdfs
):
    js = clean_jetstream
    await ensure_stream(js, "projects")
    async with make_svc(
        real_model, nats_url=nats_url, project_wait_seconds=10.0, reindex_poll_seconds=0.5
    ) as svc:
        parts = components(svc.settings, svc.sessions, real_model)
        tasks = [asyncio.create_task(part.run()) for part in parts]
        try:
            client_id, project_id = uuid.uuid4(), uuid.uuid4()
            await publish(
                js,
                ClientCreated(client_id=client_id, name="Acme", slug="acme", status="active", version=1),
                client_id,
            )
            await publish(
                js,
                ProjectCreated(
                    project_id=project_id,
                    client_id=client_id,
                    name="Shop",
                    kind="greenfield",
                    type="fullstack",
                    created_by="po-1",
                    version=1,
                ),
                client_id,
            )
            user = svc.user(client_id)
            md = (
                "# Shop PRD\n\n## Payments\n\nCustomers settle their orders with credit cards, PayPal or "
                "store gift vouchers; refunds go back to the original payment method within five days.\n\n"
                "## Delivery\n\nParcels ship from the regional warehouse with tracking numbers.\n"
            )
            r = await svc.upload_md(project_id, md, user, title="Shop PRD")  # waits for the project event
            assert r.status_code == 201, r.text
            doc_id = r.json()["id"]
            bad = await svc.upload_file(
                project_id, pdfs.corrupt(), user, filename="bad.pdf", content_type="application/pdf"
            )
            good_after = await svc.upload_md(
                project_id, "# Ops\n\n## Pager\n\nThe on-call engineer answers alerts.", user, title="Ops"
            )

            async def status(doc):
                return (await svc.http.get(f"/v1/documents/{doc}", headers=user)).json()["status"]

            async def done(doc):
                return await status(doc) in ("indexed", "failed")

            for doc in (doc_id, bad.json()["id"], good_after.json()["id"]):
                await wait_for(lambda doc=doc: done(doc))
            assert await status(doc_id) == "indexed"
            assert await status(bad.json()["id"]) == "failed"
            assert await status(good_after.json()["id"]) == "indexed"

            hits = (
                await svc.search(user, "how do shoppers pay and get their money back", mode="semantic")
            ).json()["items"]
            assert hits[0]["document_id"] == doc_id
            assert hits[0]["heading_path"] == ["Shop PRD", "Payments"]
            sections = (await svc.http.get(f"/v1/documents/{doc_id}/sections", headers=user)).json()["items"]
            assert [s["heading"] for s in sections] == ["Payments", "Delivery"]

            # The worker's own events went out through the relay.
            async def relayed():
                return await svc.scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0

            await wait_for(relayed)
            info = await js.stream_info("BATON_DOCUMENTS")
            assert info.state.messages == await svc.count("outbox")

            await publish(
                js, ProjectDeleted(project_id=project_id, client_id=client_id, version=2), client_id
            )

            async def emptied():
                return await svc.count("documents") == 0

            await wait_for(emptied)
            assert await svc.count("chunk_vectors") == 0
        finally:
            for part in parts:
                part.stop()
            for task in tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 15)


async def test_the_workers_consumers_prune_their_inbox_as_the_settings_say(make_svc, real_model, nats_url):
    async with make_svc(real_model, nats_url=nats_url) as svc:
        settings = svc.settings.model_copy(
            update={"inbox_retention_days": 3.0, "inbox_prune_interval_seconds": 0.0}
        )
        runners = [p for p in components(settings, svc.sessions, real_model) if isinstance(p, ConsumerRunner)]
    assert len(runners) == 2
    for runner in runners:
        assert runner.inbox_pruning.retention == timedelta(days=3)
        assert not runner.inbox_pruning.enabled
