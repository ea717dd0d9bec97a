"""What the documents-projects consumer does with the projects service's events."""

from __future__ import annotations

import uuid

from documents.projects.handlers import ProjectEvents

from shared.db import transaction
from shared.events.projects import ClientDeleted, ProjectCreated, ProjectDeleted


async def apply(svc, event, tenant):
    events = ProjectEvents(svc.processor.blobs)
    handler = events.handlers()[event.event_type]
    envelope = _envelope(event, tenant)
    async with transaction(svc.sessions) as s:
        await handler(s, envelope)


def _envelope(event, tenant):
    from shared.db import new_id, utcnow
    from shared.messaging import Actor, Envelope

    return Envelope(
        id=str(new_id()),
        source="/baton/projects",
        type=event.event_type,
        time=utcnow(),
        tenant=str(tenant),
        actor=Actor(subject="po-1", kind="user"),
        data=event.model_dump(mode="json"),
    )


async def _indexed_doc(svc, client_id, project_id, title="Doc"):
    r = await svc.upload_md(
        project_id, f"# {title}\n\nsome text about {title}", svc.user(client_id), title=title
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_project_deleted_removes_its_documents_content_and_vectors(svc):
    client_id, p1 = await svc.known_project()
    _, p2 = await svc.known_project(client_id)
    gone = [await _indexed_doc(svc, client_id, p1, f"Gone {i}") for i in range(2)]
    kept = await _indexed_doc(svc, client_id, p2, "Kept")
    await svc.process_pending()
    await apply(svc, ProjectDeleted(project_id=p1, client_id=client_id, version=2), client_id)
    assert await svc.count("documents") == 1
    assert await svc.count("blobs") == 1
    assert await svc.scalar("SELECT count(DISTINCT document_id) FROM chunks") == 1
    assert await svc.scalar("SELECT count(DISTINCT document_id) FROM chunk_vectors") == 1
    deleted = await svc.events("baton.documents.document.deleted.v1")
    assert {e["data"]["document_id"] for e in deleted} == set(gone)
    assert {e["data"]["reason"] for e in deleted} == {"project_deleted"}
    assert (await svc.http.get(f"/v1/documents/{kept}", headers=svc.user(client_id))).status_code == 200
    # The project is gone for uploads, and a replayed or late "created" does not bring it back.
    svc.problem(await svc.upload_md(p1, "# x\n\ny", svc.user(client_id)), 404, "project_not_found")
    await apply(
        svc,
        ProjectCreated(
            project_id=p1,
            client_id=client_id,
            name="P",
            kind="greenfield",
            type="x",
            created_by="u",
            version=1,
        ),
        client_id,
    )
    svc.problem(await svc.upload_md(p1, "# x\n\ny", svc.user(client_id)), 404, "project_not_found")
    # Applying the deletion again is harmless.
    await apply(svc, ProjectDeleted(project_id=p1, client_id=client_id, version=2), client_id)


async def test_deleted_before_created_stays_deleted(svc):
    client_id = uuid.uuid4()
    project_id = uuid.uuid4()
    await apply(svc, ProjectDeleted(project_id=project_id, client_id=client_id, version=2), client_id)
    await apply(
        svc,
        ProjectCreated(
            project_id=project_id,
            client_id=client_id,
            name="P",
            kind="greenfield",
            type="x",
            created_by="u",
            version=1,
        ),
        client_id,
    )
    svc.problem(await svc.upload_md(project_id, "# x\n\ny", svc.user(client_id)), 404, "project_not_found")


async def test_client_deleted_drops_partitions_and_everything_of_the_client(svc):
    a, pa = await svc.known_project()
    b, pb = await svc.known_project()
    await _indexed_doc(svc, a, pa, "A doc")
    await _indexed_doc(svc, b, pb, "B doc")
    await svc.process_pending()
    part = f"chunks_p_{a.hex}"
    assert await svc.scalar("SELECT to_regclass(:t) IS NOT NULL", t=part)
    await apply(svc, ClientDeleted(client_id=a, version=3), a)
    assert not await svc.scalar("SELECT to_regclass(:t) IS NOT NULL", t=part)
    assert not await svc.scalar("SELECT to_regclass(:t) IS NOT NULL", t=f"chunk_vectors_p_{a.hex}")
    assert await svc.scalar("SELECT count(*) FROM documents WHERE client_id = :c", c=a) == 0
    assert await svc.scalar("SELECT count(*) FROM blobs WHERE client_id = :c", c=a) == 0
    assert await svc.scalar("SELECT count(*) FROM documents WHERE client_id = :c", c=b) == 1
    assert len((await svc.search(svc.user(b), "B doc", mode="keyword")).json()["items"]) == 1
    # The tombstoned client gets no new partitions or projects.
    svc.problem(await svc.upload_md(pa, "# x\n\ny", svc.user(a)), 404, "project_not_found")
    _, late_project = uuid.uuid4(), uuid.uuid4()
    await apply(
        svc,
        ProjectCreated(
            project_id=late_project,
            client_id=a,
            name="P",
            kind="greenfield",
            type="x",
            created_by="u",
            version=1,
        ),
        a,
    )
    assert not await svc.scalar("SELECT to_regclass(:t) IS NOT NULL", t=part)
