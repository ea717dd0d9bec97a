"""Search: tenant isolation in every mode, filters applied before ranking (HNSW recall: test_filtered_hnsw)."""

from __future__ import annotations

from sqlalchemy import text

from shared.db import transaction

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
