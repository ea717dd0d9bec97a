"""Documents and versions through the HTTP API: create, idempotency, list, read, update, delete."""

from __future__ import annotations

import uuid

from shared.events.documents import DocumentCreated

PRD = """# PRD

## Goals
Ship a searchable document store for every client project.

## Epic 1
### Story 1.1
Upload a document and find it again.
"""


async def test_create_json_document_stores_version_and_events(svc):
    client_id, project_id = await svc.known_project()
    r = await svc.upload_md(
        project_id, PRD, svc.user(client_id), title="Product PRD", tags=["Core", "core", "v1"]
    )
    assert r.status_code == 201, r.text
    doc = r.json()
    assert r.headers["location"] == f"/v1/documents/{doc['id']}"
    assert doc["status"] == "pending"
    assert doc["client_id"] == str(client_id)
    assert doc["tags"] == ["core", "v1"]
    assert doc["latest"]["version"] == 1
    assert doc["latest"]["content_type"] == "text/markdown"
    assert doc["latest"]["size_bytes"] == len(PRD.encode())
    types = [e["type"] for e in await svc.events()]
    assert types == [DocumentCreated.event_type, "baton.documents.document.version_created.v1"]
    created = (await svc.events(DocumentCreated.event_type))[0]
    assert created["tenant"] == str(client_id)
    assert created["data"]["project_id"] == str(project_id)
    assert await svc.count("blobs") == 1


async def test_identical_upload_is_idempotent(svc):
    client_id, project_id = await svc.known_project()
    first = await svc.upload_md(project_id, PRD, svc.user(client_id), title="Product PRD")
    events = await svc.outbox_count()
    again = await svc.upload_md(project_id, PRD, svc.user(client_id), title="Product PRD")
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert await svc.outbox_count() == events
    assert await svc.count("document_versions") == 1
    # Same content under another title is another document.
    other = await svc.upload_md(project_id, PRD, svc.user(client_id), title="PRD copy")
    assert other.status_code == 201


async def test_multipart_upload_sniffs_type_and_titles_from_filename(svc):
    client_id, project_id = await svc.known_project()
    r = await svc.upload_file(
        project_id,
        b"plain words here",
        svc.user(client_id),
        filename="notes.txt",
        content_type="application/pdf",
        fields={"kind": "reference"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["title"] == "notes"
    # The declared type (PDF) is not trusted: the bytes are text.
    assert body["latest"]["content_type"] == "text/plain"


async def test_versions_are_immutable_and_identical_content_is_not_a_new_version(svc):
    client_id, project_id = await svc.known_project()
    user = svc.user(client_id)
    doc = (await svc.upload_md(project_id, PRD, user)).json()
    r = await svc.http.post(
        f"/v1/documents/{doc['id']}/versions", json={"content": PRD + "\nMore."}, headers=user
    )
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 2
    same = await svc.http.post(
        f"/v1/documents/{doc['id']}/versions", json={"content": PRD + "\nMore."}, headers=user
    )
    assert same.status_code == 200
    assert same.json()["version"] == 2
    files = {"file": ("v3.md", b"# Third\n\nthird text", "text/markdown")}
    r3 = await svc.http.post(f"/v1/documents/{doc['id']}/versions", files=files, headers=user)
    assert r3.status_code == 201
    assert r3.json()["version"] == 3
    listing = await svc.http.get(f"/v1/documents/{doc['id']}/versions?limit=2", headers=user)
    page = listing.json()
    assert [v["version"] for v in page["items"]] == [3, 2]
    rest = await svc.http.get(
        f"/v1/documents/{doc['id']}/versions?limit=2&cursor={page['next_cursor']}", headers=user
    )
    assert [v["version"] for v in rest.json()["items"]] == [1]
    assert rest.json()["next_cursor"] is None
    old = await svc.http.get(f"/v1/documents/{doc['id']}/content?version=1", headers=user)
    assert old.content == PRD.encode()


async def test_list_filters_and_paginates(svc):
    client_id, project_id = await svc.known_project()
    user = svc.user(client_id)
    for i in range(5):
        await svc.upload_md(
            project_id,
            f"# D{i}\n\ntext {i}",
            user,
            title=f"Story {i}",
            kind="story",
            tags=["sprint-1"] if i % 2 else [],
        )
    await svc.upload_md(project_id, "# Arch\n\narch", user, title="Architecture", kind="architecture")
    r = await svc.http.get(f"/v1/projects/{project_id}/documents?limit=4", headers=user)
    page = r.json()
    assert len(page["items"]) == 4
    assert page["next_cursor"]
    r2 = await svc.http.get(
        f"/v1/projects/{project_id}/documents?limit=4&cursor={page['next_cursor']}", headers=user
    )
    titles = [d["title"] for d in page["items"] + r2.json()["items"]]
    assert len(titles) == 6
    assert len(set(titles)) == 6
    assert titles[0] == "Architecture"  # newest first
    stories = await svc.http.get(f"/v1/projects/{project_id}/documents?kind=story", headers=user)
    assert len(stories.json()["items"]) == 5
    tagged = await svc.http.get(f"/v1/projects/{project_id}/documents?tag=SPRINT-1", headers=user)
    assert {d["title"] for d in tagged.json()["items"]} == {"Story 1", "Story 3"}
    by_title = await svc.http.get(f"/v1/projects/{project_id}/documents?q=arch", headers=user)
    assert [d["title"] for d in by_title.json()["items"]] == ["Architecture"]
    pending = await svc.http.get(f"/v1/projects/{project_id}/documents?status=indexed", headers=user)
    assert pending.json()["items"] == []
    wildcard = await svc.http.get(f"/v1/projects/{project_id}/documents?q=%25", headers=user)
    assert wildcard.json()["items"] == []


async def test_patch_with_if_match_and_delete(svc):
    client_id, project_id = await svc.known_project()
    user = svc.user(client_id)
    doc = (await svc.upload_md(project_id, PRD, user)).json()
    await svc.process_pending()
    got = await svc.http.get(f"/v1/documents/{doc['id']}", headers=user)
    etag = got.headers["etag"]
    r = await svc.http.patch(
        f"/v1/documents/{doc['id']}",
        json={"kind": "architecture", "tags": ["x"]},
        headers={**user, "If-Match": etag},
    )
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "architecture"
    assert r.json()["revision"] == 2
    assert await svc.scalar("SELECT count(*) FROM chunks WHERE kind <> 'architecture'") == 0
    assert await svc.scalar("SELECT count(*) FROM chunk_vectors WHERE kind <> 'architecture'") == 0
    stale = await svc.http.patch(
        f"/v1/documents/{doc['id']}", json={"title": "New"}, headers={**user, "If-Match": etag}
    )
    svc.problem(stale, 412, "version_mismatch")
    updated = await svc.events("baton.documents.document.updated.v1")
    assert updated[-1]["data"]["changed_fields"] == ["kind", "tags"]

    assert await svc.count("chunks") > 0
    d = await svc.http.delete(f"/v1/documents/{doc['id']}", headers=user)
    assert d.status_code == 204
    assert (await svc.http.get(f"/v1/documents/{doc['id']}", headers=user)).status_code == 404
    for table in ("documents", "document_versions", "blobs", "sections", "chunks", "chunk_vectors"):
        assert await svc.count(table) == 0, table
    deleted = await svc.events("baton.documents.document.deleted.v1")
    assert deleted[0]["data"]["reason"] == "requested"


async def test_content_is_streamed_with_type_and_etag(svc, pdfs):
    client_id, project_id = await svc.known_project()
    user = svc.user(client_id)
    pdf = pdfs.text(["page one", "page two"])
    doc = (
        await svc.upload_file(
            project_id, pdf, user, filename="spec.pdf", content_type="application/octet-stream"
        )
    ).json()
    r = await svc.http.get(f"/v1/documents/{doc['id']}/content", headers=user)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.content == pdf
    assert r.headers["etag"] == f'"{doc["latest"]["sha256"]}"'
    again = await svc.http.get(
        f"/v1/documents/{doc['id']}/content", headers={**user, "If-None-Match": r.headers["etag"]}
    )
    assert again.status_code == 304
    missing = await svc.http.get(f"/v1/documents/{doc['id']}/content?version=9", headers=user)
    svc.problem(missing, 404, "version_not_found")


async def test_large_content_streams_in_slices(make_svc):
    async with make_svc(max_upload_bytes=5 * 1024 * 1024) as svc:
        client_id, project_id = await svc.known_project()
        user = svc.user(client_id)
        body = ("word " * 600_000).encode()  # 3 MB: three slices
        doc = (
            await svc.upload_file(project_id, body, user, filename="big.txt", content_type="text/plain")
        ).json()
        async with svc.http.stream("GET", f"/v1/documents/{doc['id']}/content", headers=user) as r:
            parts = [part async for part in r.aiter_raw()]
        assert b"".join(parts) == body
        assert r.headers["content-type"] == "text/plain; charset=utf-8"


async def test_sections_after_processing(svc):
    client_id, project_id = await svc.known_project()
    user = svc.user(client_id)
    doc = (await svc.upload_md(project_id, PRD, user)).json()
    early = await svc.http.get(f"/v1/documents/{doc['id']}/sections", headers=user)
    svc.problem(early, 409, "version_not_processed")
    await svc.process_pending()
    r = await svc.http.get(f"/v1/documents/{doc['id']}/sections", headers=user)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(s["ord"], s["heading"]) for s in items] == [(1, "Goals"), (2, "Epic 1")]
    assert items[1]["content"].startswith("### Story 1.1")
    assert "Upload a document" in items[1]["content"]


async def test_authorization_matrix(svc):
    client_id, project_id = await svc.known_project()
    other_client, other_project = await svc.known_project()
    doc = (await svc.upload_md(project_id, PRD, svc.user(client_id, "product_owner"))).json()
    url = f"/v1/documents/{doc['id']}"
    # Readers read but cannot write.
    for role in ("viewer", "auditor"):
        assert (await svc.http.get(url, headers=svc.user(client_id, role))).status_code == 200
        r = await svc.upload_md(project_id, "# x\n\ny", svc.user(client_id, role), title="Nope")
        svc.problem(r, 403, "insufficient_role")
        svc.problem(await svc.http.patch(url, json={"title": "z"}, headers=svc.user(client_id, role)), 403)
    # Strangers see nothing: the same 404 as a missing document.
    hidden = await svc.http.get(url, headers=svc.user(other_client, "product_owner"))
    missing = await svc.http.get(f"/v1/documents/{uuid.uuid4()}", headers=svc.user(client_id))
    svc.problem(hidden, 404, "document_not_found")
    svc.problem(missing, 404, "document_not_found")
    assert hidden.json()["detail"] == missing.json()["detail"]
    svc.problem(await svc.upload_md(project_id, "# x\n\ny", svc.outsider()), 404, "project_not_found")
    svc.problem(await svc.http.get(f"/v1/projects/{project_id}/documents", headers=svc.outsider()), 404)
    # Agents act by scope, within their client and projects.
    reader = svc.agent(client_id, scopes=("documents:read",))
    assert (await svc.http.get(url, headers=reader)).status_code == 200
    refused = svc.problem(
        await svc.upload_md(project_id, "# a\n\nb", reader, title="A"), 403, "insufficient_scope"
    )
    assert refused["detail"] == "The token does not allow changing documents"
    # An agent of the client without a documents scope sees the project: 403 naming the scope, not 404.
    scopeless = svc.agent(client_id, scopes=("projects:read",))
    for request in (
        svc.http.get(url, headers=scopeless),
        svc.http.get(f"/v1/projects/{project_id}/documents", headers=scopeless),
        svc.http.get(f"{url}/content", headers=scopeless),
        svc.http.post("/v1/search", json={"query": "prd"}, headers=scopeless),
    ):
        r = await request
        svc.problem(r, 403, "insufficient_scope")
        assert 'scope="' in r.headers["WWW-Authenticate"]
    writer = svc.agent(client_id, scopes=("documents:read", "documents:write"))
    assert (await svc.upload_md(project_id, "# a\n\nb", writer, title="A")).status_code == 201
    narrowed = svc.agent(client_id, scopes=("documents:read",), project_ids=[other_project])
    svc.problem(await svc.http.get(url, headers=narrowed), 404)
    foreign = svc.agent(other_client)
    svc.problem(await svc.http.get(url, headers=foreign), 404)
    assert (await svc.http.get(url, headers=svc.admin())).status_code == 200
    svc.problem(await svc.http.get(url), 401)


async def test_unknown_project_is_404_and_a_late_project_is_awaited(make_svc):
    async with make_svc(project_wait_seconds=3.0) as svc:
        client_id = uuid.uuid4()
        project_id = uuid.uuid4()
        user = svc.user(client_id)
        import asyncio

        async def announce_later():
            await asyncio.sleep(0.3)
            await svc.known_project(client_id, project_id)

        task = asyncio.create_task(announce_later())
        r = await svc.upload_md(project_id, PRD, user)
        await task
        assert r.status_code == 201, r.text
    async with make_svc(project_wait_seconds=0.2) as svc:
        r = await svc.upload_md(uuid.uuid4(), PRD, svc.user(uuid.uuid4()))
        svc.problem(r, 404, "project_not_found")
        assert await svc.count("documents") == 0
