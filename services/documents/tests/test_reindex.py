"""Reindex: re-embed beside the active vectors, switch over only when complete."""

from __future__ import annotations

from documents.admin.service import ReindexRunner
from documents.embeddings import EmbeddingError
from documents.embeddings.fake import FakeHashProvider


class NextModel(FakeHashProvider):
    """Another model of the same dimension (different vectors, different id)."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.calls = 0
        self.fail_after = fail_after

    @property
    def model_id(self) -> str:
        return "fake-next-384"

    def embed_sync(self, texts):
        return super().embed_sync([t[::-1] for t in texts])

    async def embed_documents(self, texts):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise EmbeddingError("endpoint down", transient=True)
        return self.embed_sync(texts)


async def _corpus(svc, n=6):
    client_id, project_id = await svc.known_project()
    user = svc.user(client_id)
    for i in range(n):
        await svc.upload_md(
            project_id, f"# Note {i}\n\nanemometer reading number {i}", user, title=f"Note {i}"
        )
    await svc.process_pending()
    return client_id, user


async def test_reindex_is_admin_only_and_one_job_at_a_time(svc):
    _client_id, user = await _corpus(svc, 2)
    svc.problem(await svc.http.post("/v1/admin/reindex", headers=user), 403, "admin_required")
    for coerced in (0, 1, "true"):  # a boolean is a JSON boolean
        svc.problem(
            await svc.http.post("/v1/admin/reindex", json={"force": coerced}, headers=svc.admin()), 422
        )
    r = await svc.http.post("/v1/admin/reindex", json={"force": True}, headers=svc.admin())
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued"
    assert job["target_model_id"] == "fake-hash-384"
    assert job["force"] is True
    again = await svc.http.post("/v1/admin/reindex", headers=svc.admin())
    assert again.json()["id"] == job["id"]
    assert len(await svc.events("baton.documents.index.reindex_requested.v1")) == 1
    # Same model, forced: every vector is rewritten in place and the job completes.
    runner = ReindexRunner(svc.sessions, svc.processor.provider, batch_size=1)
    assert await runner.run_once() == "completed"
    done = (await svc.http.get(f"/v1/admin/reindex/{job['id']}", headers=svc.admin())).json()
    assert done["status"] == "completed"
    assert done["embedded_chunks"] == await svc.count("chunks")
    svc.problem(await svc.http.get(f"/v1/admin/reindex/{job['id']}", headers=user), 403)
    assert await runner.run_once() is None  # nothing queued


async def test_model_switch_happens_only_when_every_chunk_is_embedded(svc):
    _client_id, user = await _corpus(svc)
    chunks = await svc.count("chunks")
    from documents.admin.service import request_reindex

    from shared.auth.testing import TokenFactory
    from shared.db import transaction

    admin = TokenFactory().principal("admin-1", admin=True)
    async with transaction(svc.sessions) as s:
        _job, created = await request_reindex(s, admin, "fake-next-384", force=False)
    assert created

    flaky = NextModel(fail_after=1)
    runner = ReindexRunner(svc.sessions, flaky, batch_size=2)
    assert await runner.run_once() == "running"  # one batch written, then the endpoint went down
    assert await svc.scalar("SELECT active_model_id FROM index_state") == "fake-hash-384"
    assert await svc.scalar("SELECT count(*) FROM chunk_vectors WHERE model_id = 'fake-next-384'") == 2
    hits = (await svc.search(user, "anemometer reading", mode="semantic")).json()
    assert hits["model_id"] == "fake-hash-384"
    assert len(hits["items"]) == chunks

    assert await ReindexRunner(svc.sessions, NextModel(), batch_size=2).run_once() == "completed"
    assert await svc.scalar("SELECT active_model_id FROM index_state") == "fake-next-384"
    assert await svc.scalar("SELECT count(*) FROM chunk_vectors WHERE model_id = 'fake-next-384'") == chunks
    assert await svc.scalar("SELECT count(*) FROM chunk_vectors WHERE model_id <> 'fake-next-384'") == 0
    completed = (await svc.events("baton.documents.index.reindex_completed.v1"))[0]["data"]
    assert completed["status"] == "completed"
    assert completed["previous_model_id"] == "fake-hash-384"
    assert completed["model_id"] == "fake-next-384"
    # The API still embeds with the old model: semantic search says so instead of comparing apples to pears.
    svc.problem(await svc.search(user, "anemometer", mode="semantic"), 503, "index_rebuilding")


async def test_worker_with_another_model_fails_the_job(svc):
    await _corpus(svc, 1)
    r = await svc.http.post("/v1/admin/reindex", headers=svc.admin())
    assert await ReindexRunner(svc.sessions, NextModel()).run_once() == "failed"
    job = (await svc.http.get(f"/v1/admin/reindex/{r.json()['id']}", headers=svc.admin())).json()
    assert job["status"] == "failed"
    assert "Deploy that model" in job["error"]
    assert await svc.scalar("SELECT active_model_id FROM index_state") == "fake-hash-384"
