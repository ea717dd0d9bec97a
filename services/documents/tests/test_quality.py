"""Retrieval quality on a labelled set (tests/data/retrieval_quality.json) with the real model.

50 documents of varied topics (200 chunks), 53 paraphrased queries, each answered by one section.
Reports recall@5 and MRR (over the top 10) for keyword, semantic and hybrid search; hybrid must beat
keyword (paraphrases defeat keyword search), and semantic/hybrid must clear a floor so a regression in
the model, pooling or ranking shows up here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "retrieval_quality.json"


def to_markdown(doc: dict) -> str:
    parts = [f"# {doc['title']}"]
    for section in doc["sections"]:
        parts.append(f"## {section['heading']}\n\n{section['text']}")
    return "\n\n".join(parts) + "\n"


@pytest.fixture(scope="session")
async def quality_index(session_svc_factory, real_model):
    """The quality set uploaded and embedded once per session (200 chunks through the real pipeline)."""
    data = json.loads(DATA.read_text())
    async with session_svc_factory(real_model) as svc:
        client_id, project_id = await svc.known_project()
        user = svc.user(client_id, "viewer")
        writer = svc.user(client_id, "member")
        for doc in data["documents"]:
            r = await svc.upload_md(
                project_id, to_markdown(doc), writer, title=doc["title"], kind="reference"
            )
            assert r.status_code == 201, r.text
        outcomes = await svc.process_pending()
        assert set(outcomes.values()) == {"indexed"}
        yield svc, user, data


def _metrics(ranks: list[int | None], k: int = 5) -> tuple[float, float]:
    recall = sum(1 for r in ranks if r is not None and r <= k) / len(ranks)
    mrr = sum(1.0 / r for r in ranks if r is not None) / len(ranks)
    return recall, mrr


async def test_quality_set_is_big_enough():
    data = json.loads(DATA.read_text())
    assert len(data["queries"]) >= 40
    assert sum(len(d["sections"]) for d in data["documents"]) >= 200


async def test_hybrid_beats_keyword_on_paraphrased_queries(quality_index, capsys):
    svc, user, data = quality_index
    assert await svc.count("chunks") >= 200
    report = {}
    for mode in ("keyword", "semantic", "hybrid"):
        ranks: list[int | None] = []
        for q in data["queries"]:
            r = await svc.search(user, q["query"], mode=mode, limit=10)
            assert r.status_code == 200, r.text
            wanted = {(x["title"], x["heading"]) for x in q["relevant"]}
            rank = None
            for i, hit in enumerate(r.json()["items"], start=1):
                if (hit["title"], hit["heading_path"][-1]) in wanted:
                    rank = i
                    break
            ranks.append(rank)
        report[mode] = _metrics(ranks)
    with capsys.disabled():
        chunks = await svc.count("chunks")
        print(f"\nretrieval quality ({len(data['queries'])} queries, {chunks} chunks)")
        for mode, (recall, mrr) in report.items():
            print(f"  {mode:8s} recall@5={recall:.3f} MRR={mrr:.3f}")
    assert report["hybrid"][0] > report["keyword"][0]
    assert report["hybrid"][1] > report["keyword"][1]
    assert report["semantic"][0] >= 0.75
    assert report["hybrid"][0] >= 0.75
