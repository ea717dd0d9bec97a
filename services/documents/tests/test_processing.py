"""The processing pipeline on real Postgres: Markdown and PDF in, chunks/vectors/sections out, and every
way a file can fail ends as a failed version with a reason and an event (never a crashed worker)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from documents.embeddings import EmbeddingError
from documents.processing.extraction import extract_pdf

from shared.messaging import TransientError

LONG_SECTION = " ".join(
    f"Sentence {i} explains one more detail about the widget pipeline." for i in range(60)
)
MD = f"""# PRD

Intro paragraph for the whole document.

## Epic 2

### Story 2.3
{LONG_SECTION}

## Epic 3
Short epic.
"""


async def _doc(svc, content=MD, **kw):
    client_id, project_id = await svc.known_project()
    r = await svc.upload_md(project_id, content, svc.user(client_id), **kw)
    assert r.status_code == 201, r.text
    return client_id, project_id, r.json()


async def test_markdown_is_chunked_with_heading_paths_and_indexed(svc):
    client_id, project_id, doc = await _doc(svc)
    outcome = await svc.process_pending()
    assert list(outcome.values()) == ["indexed"]
    async with svc.sessions() as s:
        from sqlalchemy import text

        rows = (
            await s.execute(
                text("SELECT heading_path, content, client_id, project_id FROM chunks ORDER BY ord")
            )
        ).all()
    paths = [tuple(r.heading_path) for r in rows]
    assert paths[0] == ("PRD",)
    assert ("PRD", "Epic 2", "Story 2.3") in paths
    story = [r for r in rows if tuple(r.heading_path) == ("PRD", "Epic 2", "Story 2.3")]
    assert len(story) >= 3  # ~600 words → several chunks of ≤ 240 words
    assert all(len(r.content.split()) <= 240 for r in rows)
    # Consecutive chunks of a section overlap.
    assert story[1].content.split()[:30] == story[0].content.split()[-30:]
    assert {r.client_id for r in rows} == {client_id}
    assert {r.project_id for r in rows} == {project_id}
    assert await svc.scalar("SELECT count(*) FROM chunk_vectors WHERE model_id = 'fake-hash-384'") == len(
        rows
    )
    got = (await svc.http.get(f"/v1/documents/{doc['id']}", headers=svc.user(client_id))).json()
    assert got["status"] == "indexed"
    assert got["indexed_version"] == 1
    assert got["latest"]["chunk_count"] == len(rows)
    indexed = (await svc.events("baton.documents.document.indexed.v1"))[0]["data"]
    assert indexed["chunk_count"] == len(rows)
    assert indexed["section_count"] == 2
    assert indexed["kind"] == "prd"
    assert indexed["project_id"] == str(project_id)
    assert indexed["version"] == 1
    # A chunk lives in its client's own partition.
    part = f"chunks_p_{client_id.hex}"
    assert await svc.scalar(f"SELECT count(*) FROM {part}") == len(rows)


async def test_processing_twice_is_a_no_op(svc):
    await _doc(svc)
    await svc.process_pending()
    chunks = await svc.count("chunks")
    events = await svc.outbox_count()
    vid = await svc.scalar("SELECT id FROM document_versions")
    from shared.db import transaction

    async with transaction(svc.sessions) as s:
        assert await svc.processor.process(s, vid) == "indexed"
    assert await svc.count("chunks") == chunks
    assert await svc.outbox_count() == events


async def test_multi_page_pdf_chunks_know_their_pages(svc, pdfs):
    client_id, project_id = await svc.known_project()
    pages = [
        "\n".join(
            f"Page {n} line {i}: the {['harbour', 'glacier', 'orchard'][n - 1]} report continues here."
            for i in range(40)
        )
        for n in (1, 2, 3)
    ]
    r = await svc.upload_file(
        project_id,
        pdfs.text(pages),
        svc.user(client_id),
        filename="report.pdf",
        content_type="application/pdf",
    )
    assert r.status_code == 201, r.text
    assert r.json()["latest"]["content_type"] == "application/pdf"
    assert list((await svc.process_pending()).values()) == ["indexed"]
    async with svc.sessions() as s:
        from sqlalchemy import text

        rows = (await s.execute(text("SELECT page_start, page_end, content FROM chunks ORDER BY ord"))).all()
    assert rows[0].page_start == 1
    assert rows[-1].page_end == 3
    for row in rows:
        for n, word in ((1, "harbour"), (2, "glacier"), (3, "orchard")):
            if word in row.content:
                assert row.page_start <= n <= row.page_end
    got = (await svc.http.get(f"/v1/documents/{r.json()['id']}", headers=svc.user(client_id))).json()
    assert got["latest"]["page_count"] == 3
    hit = (await svc.search(svc.user(client_id), "glacier report", mode="keyword")).json()["items"][0]
    assert hit["page"] <= 2 <= hit["page_end"]


@pytest.mark.parametrize(
    ("make", "code", "hint"),
    [
        ("encrypted", "pdf_encrypted", "without a password"),
        ("corrupt", "pdf_corrupt", "re-export"),
        ("image_only", "pdf_no_text", "OCR"),
        ("zip_bomb", "pdf_too_large", "split"),
    ],
)
async def test_bad_pdfs_fail_cleanly_with_a_reason(svc, pdfs, make, code, hint):
    client_id, project_id = await svc.known_project()
    data = pdfs.encrypted(["secret plans"]) if make == "encrypted" else getattr(pdfs, make)()
    r = await svc.upload_file(
        project_id, data, svc.user(client_id), filename="x.pdf", content_type="application/pdf"
    )
    assert r.status_code == 201, r.text
    assert list((await svc.process_pending()).values()) == ["failed"]
    got = (await svc.http.get(f"/v1/documents/{r.json()['id']}", headers=svc.user(client_id))).json()
    assert got["status"] == "failed"
    assert got["failure_code"] == code
    assert hint in got["failure_reason"]
    failed = (await svc.events("baton.documents.document.processing_failed.v1"))[0]["data"]
    assert failed["code"] == code
    assert hint in failed["reason"]
    assert await svc.count("chunks") == 0


async def _pdf_fails_under(svc, data, **limits):
    """Process ``data`` under tightened extraction limits; the failed version's (code, reason). The worker
    goes on: a document uploaded after it is indexed."""
    client_id, project_id = await svc.known_project()
    user = svc.user(client_id)
    r = await svc.upload_file(project_id, data, user, filename="x.pdf", content_type="application/pdf")
    assert r.status_code == 201, r.text
    generous = svc.processor.limits
    svc.processor.limits = replace(generous, **limits)
    assert list((await svc.process_pending()).values()) == ["failed"]
    svc.processor.limits = generous
    await svc.upload_md(project_id, "# Next\n\nstill working", user)
    assert list((await svc.process_pending()).values()) == ["indexed"]
    return tuple(
        await svc.scalar(
            "SELECT array[failure_code, failure_reason] FROM document_versions WHERE status = 'failed'"
        )
    )


async def test_pdf_over_the_time_limit_fails_with_pdf_timeout(svc, pdfs):
    # The file parses for seconds; the wall-clock limit (1 s) ends it before the CPU cap (2 s) could.
    code, reason = await _pdf_fails_under(svc, pdfs.slow(), timeout_seconds=1.0)
    assert code == "pdf_timeout"
    assert "longer than 1 s" in reason


async def test_pdf_over_the_memory_cap_fails_with_pdf_too_complex(svc, pdfs):
    hog, low = pdfs.memory_hog(), replace(svc.processor.limits, memory_bytes=128 * 1024 * 1024)
    code, reason = await _pdf_fails_under(svc, hog, memory_bytes=low.memory_bytes)
    assert code == "pdf_too_complex"
    assert "needs more memory" in reason  # the child's own MemoryError, not a crash
    # The cap is what fails it: an ordinary PDF reads under the same cap, this one under the usual 512 MB.
    assert (await extract_pdf(pdfs.text(["fine text"]), low)).pages[0].strip() == "fine text"
    assert (await extract_pdf(hog, svc.processor.limits)).pages == ("hog",)


async def test_too_many_chunks_fails_with_advice(svc):
    svc.processor.max_chunks = 2
    await _doc(svc)
    assert list((await svc.process_pending()).values()) == ["failed"]
    reason = await svc.scalar("SELECT failure_reason FROM documents")
    assert "Split it" in reason


async def test_new_version_swaps_the_index_and_old_version_is_superseded(svc):
    client_id, _project_id, doc = await _doc(svc, "# One\n\nalpha bravo charlie")
    await svc.process_pending()
    user = svc.user(client_id)
    await svc.http.post(
        f"/v1/documents/{doc['id']}/versions", json={"content": "# Two\n\ndelta echo"}, headers=user
    )
    await svc.http.post(
        f"/v1/documents/{doc['id']}/versions", json={"content": "# Three\n\nfoxtrot golf"}, headers=user
    )
    # Process the newest first: the older pending one must not overwrite it.
    v2, v3 = await svc.scalar(
        "SELECT array_agg(id ORDER BY version) FROM document_versions WHERE version > 1"
    )
    from shared.db import transaction

    async with transaction(svc.sessions) as s:
        assert await svc.processor.process(s, v3) == "indexed"
    async with transaction(svc.sessions) as s:
        assert await svc.processor.process(s, v2) == "superseded"
    assert await svc.scalar("SELECT array_agg(DISTINCT version) FROM chunks") == [3]
    assert (await svc.search(user, "alpha", mode="keyword")).json()["items"] == []
    assert len((await svc.search(user, "foxtrot", mode="keyword")).json()["items"]) == 1
    got = (await svc.http.get(f"/v1/documents/{doc['id']}", headers=user)).json()
    assert got["status"] == "indexed"
    assert got["indexed_version"] == 3


async def test_failed_new_version_keeps_the_previous_one_searchable(svc, pdfs):
    client_id, _project_id, doc = await _doc(svc, "# One\n\nquokka habitat notes")
    await svc.process_pending()
    user = svc.user(client_id)
    files = {"file": ("v2.pdf", pdfs.corrupt(), "application/pdf")}
    assert (
        await svc.http.post(f"/v1/documents/{doc['id']}/versions", files=files, headers=user)
    ).status_code == 201
    await svc.process_pending()
    got = (await svc.http.get(f"/v1/documents/{doc['id']}", headers=user)).json()
    assert got["status"] == "failed"
    assert got["latest_version"] == 2
    assert got["indexed_version"] == 1
    assert len((await svc.search(user, "quokka", mode="keyword")).json()["items"]) == 1


async def test_embedding_outage_is_transient_and_leaves_nothing_half_done(svc):
    class Down:
        model_id = "fake-hash-384"
        dim = 384

        async def embed_documents(self, texts):
            raise EmbeddingError("endpoint down", transient=True)

        async def embed_query(self, text):
            raise EmbeddingError("endpoint down", transient=True)

        async def aclose(self):
            return None

    await _doc(svc)
    svc.processor.provider = Down()
    vid = await svc.scalar("SELECT id FROM document_versions")
    from shared.db import transaction

    with pytest.raises(TransientError):
        async with transaction(svc.sessions) as s:
            await svc.processor.process(s, vid)
    assert await svc.count("chunks") == 0
    assert await svc.scalar("SELECT status FROM document_versions") == "processing"


async def test_marking_processing_takes_the_document_before_its_version(svc):
    """A deletion holds the document, then removes its versions; the worker marking a version as processing
    must wait on the document first, holding nothing a deletion needs, or the two deadlock."""
    import asyncio

    from sqlalchemy import text

    from shared.db import transaction

    _, _, doc = await _doc(svc)
    version_id = await svc.scalar("SELECT id FROM document_versions")
    async with transaction(svc.sessions) as deleting:
        await deleting.execute(text("SELECT id FROM documents WHERE id = :d FOR UPDATE"), {"d": doc["id"]})
        marking = asyncio.create_task(svc.processor._mark_processing(doc["id"], version_id, 1))
        await asyncio.sleep(0.5)
        assert not marking.done()  # it waits on the document
        async with transaction(svc.sessions) as probe:  # and meanwhile holds no lock on the version
            await probe.execute(text("SET LOCAL lock_timeout = '200ms'"))
            await probe.execute(
                text("SELECT id FROM document_versions WHERE id = :v FOR UPDATE"), {"v": version_id}
            )
    await asyncio.wait_for(marking, 10)
    assert await svc.scalar("SELECT status FROM document_versions") == "processing"
