"""Search: tenant isolation in every mode, filters applied before ranking, filtered HNSW recall vs exact."""

from __future__ import annotations

import uuid

import numpy as np
from documents.index.partitions import ensure_client_partitions
from documents.index.repository import vector_literal
from documents.search.repository import SearchFilter, SearchRepository
from sqlalchemy import text

from shared.db import new_id, transaction

MODES = ("keyword", "semantic", "hybrid")
SECRET = "Zephyrine marmalade protocol 7731 governs the quokka observatory budget."


async def test_unique_phrase_of_client_a_never_reaches_client_b(real_svc):
    svc = real_svc
    a_client, a_project = await svc.known_project()
    b_client, b_project = await svc.known_project()
    empty_client, _ = await svc.known_project()
    a_doc = await svc.upload_md(
        a_project, f"# Budget\n\n## Secret\n\n{SECRET}", svc.user(a_client), title="A plan"
    )
    await svc.upload_md(
        b_project, "# Garden\n\n## Roses\n\nPrune roses in early spring.", svc.user(b_client), title="B plan"
    )
    await svc.process_pending()
    a_id = a_doc.json()["id"]
    for mode in MODES:
        own = (await svc.search(svc.user(a_client), SECRET, mode=mode)).json()["items"]
        assert own, mode
        assert own[0]["document_id"] == a_id, mode
        for headers in (
            svc.user(b_client, "product_owner"),
            svc.agent(b_client),
            svc.user(empty_client, "viewer"),
            svc.outsider(),
        ):
            r = await svc.search(headers, SECRET, mode=mode)
            assert r.status_code == 200, r.text
            items = r.json()["items"]
            assert all(hit["document_id"] != a_id for hit in items), mode
            assert all("marmalade" not in hit["snippet"].lower() for hit in items), mode
        # Naming client A's project explicitly does not help either.
        r = await svc.search(svc.user(b_client), SECRET, mode=mode, project_ids=[str(a_project)])
        assert r.json()["items"] == [], mode
    # A member of both clients sees both; an admin sees everything.
    both = svc.tokens.issue("u-both", memberships={str(a_client): "viewer", str(b_client): "viewer"})
    hits = (await svc.search({"Authorization": f"Bearer {both}"}, SECRET, mode="hybrid")).json()["items"]
    assert hits[0]["document_id"] == a_id
    assert (await svc.search(svc.admin(), SECRET, mode="keyword")).json()["items"][0]["document_id"] == a_id


async def test_hits_carry_location_snippet_and_score_parts(real_svc):
    svc = real_svc
    client_id, project_id = await svc.known_project()
    user = svc.user(client_id)
    md = (
        "# PRD\n\n## Epic 2\n\n### Story 2.3\n\nThe <b>checkout</b> flow must accept gift cards & vouchers.\n"
    )
    doc = (await svc.upload_md(project_id, md, user, title="Shop PRD")).json()
    await svc.process_pending()
    hit = (await svc.search(user, "checkout gift cards", mode="hybrid")).json()["items"][0]
    assert hit["document_id"] == doc["id"]
    assert hit["version"] == 1
    assert hit["title"] == "Shop PRD"
    assert hit["heading_path"] == ["PRD", "Epic 2", "Story 2.3"]
    assert hit["page"] is None
    assert hit["kind"] == "prd"
    assert hit["semantic"]["rank"] == 1
    assert hit["keyword"]["rank"] == 1
    assert hit["score"] > 0
    # User markup never reaches the snippet as HTML (tags dropped, text escaped); only <mark> is markup.
    assert "&amp;" in hit["snippet"]
    assert "<mark>gift</mark>" in hit["snippet"]
    assert "<b>" not in hit["snippet"]


async def test_filters_apply_before_ranking_and_never_starve_results(svc):
    client_id, big_project = await svc.known_project()
    _, small_project = await svc.known_project(client_id)
    user = svc.user(client_id)
    for i in range(30):
        await svc.upload_md(
            big_project, f"# Doc {i}\n\nshared topic words number {i} about rivers", user, title=f"Big {i}"
        )
    for i in range(3):
        await svc.upload_md(
            small_project,
            f"# Small {i}\n\nunrelated pastry baking notes {i}",
            user,
            title=f"Small {i}",
            kind="story",
        )
    await svc.process_pending()
    for mode in MODES:
        r = await svc.search(
            user, "rivers topic words", mode=mode, limit=10, project_ids=[str(small_project)]
        )
        items = r.json()["items"]
        assert {h["project_id"] for h in items} <= {str(small_project)}, mode
        if mode != "keyword":
            assert len(items) == 3, mode  # every chunk of the project is a hit, however poor
        r = await svc.search(user, "rivers topic words", mode=mode, limit=10, kinds=["story"])
        assert {h["kind"] for h in r.json()["items"]} <= {"story"}, mode
    full = (await svc.search(user, "rivers", mode="semantic", limit=50)).json()["items"]
    assert len(full) == 33


async def test_narrowed_agent_searches_only_its_projects(svc):
    client_id, p1 = await svc.known_project()
    _, p2 = await svc.known_project(client_id)
    user = svc.user(client_id)
    await svc.upload_md(p1, "# One\n\nlighthouse keeper log", user, title="One")
    await svc.upload_md(p2, "# Two\n\nlighthouse lamp maintenance", user, title="Two")
    await svc.process_pending()
    agent = svc.agent(client_id, scopes=("search",), project_ids=[p1])
    for mode in MODES:
        items = (await svc.search(agent, "lighthouse", mode=mode)).json()["items"]
        assert {h["project_id"] for h in items} == {str(p1)}, mode
    no_scope = svc.agent(client_id, scopes=("documents:write",))
    svc.problem(await svc.search(no_scope, "lighthouse"), 403, "insufficient_scope")
    svc.problem(await svc.http.post("/v1/search", json={"query": "x"}), 401)


async def test_search_during_model_switch_degrades_to_keyword(svc):
    client_id, project_id = await svc.known_project()
    user = svc.user(client_id)
    await svc.upload_md(project_id, "# A\n\nbarometer calibration", user)
    await svc.process_pending()
    async with transaction(svc.sessions) as s:
        await s.execute(text("UPDATE index_state SET active_model_id = 'other-model'"))
    svc.problem(await svc.search(user, "barometer", mode="semantic"), 503, "index_rebuilding")
    body = (await svc.search(user, "barometer", mode="hybrid")).json()
    assert body["semantic_available"] is False
    assert len(body["items"]) == 1


def _clustered_vectors(rng: np.random.Generator, n: int, centers: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(centers), n)
    vectors = centers[picks] + rng.normal(0, 1.0 / np.sqrt(centers.shape[1]), (n, centers.shape[1]))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


async def test_filtered_hnsw_recall_against_exact_with_20_clients(svc):
    """20 clients of skewed sizes (1,500 down to 35 chunks): per-client (and per-project) filtered HNSW
    search keeps recall@10 ≥ 0.95 against an exact scan of the same filter."""
    rng = np.random.default_rng(7)
    dim = 384
    centers = rng.normal(size=(60, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    sizes = [1500, 1000, 700, 500, 400, 300, 250, 200, 150, 120, 100, 90, 80, 70, 60, 55, 50, 45, 40, 35]
    model = "fake-hash-384"
    layout: list[tuple[uuid.UUID, list[uuid.UUID]]] = []
    for size in sizes:
        client = uuid.uuid4()
        projects = [uuid.uuid4() for _ in range(4)]
        layout.append((client, projects))
        async with transaction(svc.sessions) as s:
            await ensure_client_partitions(s, client)
        vectors = _clustered_vectors(rng, size, centers)
        doc = uuid.uuid4()
        rows = []
        for i, vec in enumerate(vectors):
            # Skewed projects too: the last project of each client holds ~3% of its chunks.
            project = projects[3] if i % 32 == 0 else projects[i % 3]
            rows.append({"c": client, "i": new_id(), "p": project, "d": doc, "e": vector_literal(vec)})
        async with transaction(svc.sessions) as s:
            await s.execute(
                text(
                    "INSERT INTO chunk_vectors (client_id, chunk_id, model_id, project_id, document_id, kind, embedding) "
                    "VALUES (:c, :i, 'fake-hash-384', :p, :d, 'reference', CAST(CAST(:e AS text) AS vector))"
                ),
                rows,
            )
    recalls: list[float] = []
    async with transaction(svc.sessions) as s:
        repo = SearchRepository(s)
        await repo.configure(100)
        for client, projects in layout:
            queries = _clustered_vectors(rng, 4, centers)
            filters = [SearchFilter((client,)), SearchFilter((client,), (projects[3],))]
            for q in queries:
                for flt in filters:
                    approx = await repo.vector_search_complete(flt, q, model, 10)
                    exact = await repo.vector_search(flt, q, model, 10, exact=True)
                    assert len(approx) == len(exact) == 10 or len(approx) == len(exact)
                    truth = {h.chunk_id for h in exact}
                    recalls.append(len(truth & {h.chunk_id for h in approx}) / len(truth))
    recall = float(np.mean(recalls))
    print(f"\nfiltered recall@10 vs exact over {len(recalls)} queries, 20 clients: {recall:.3f}")
    assert recall >= 0.95
