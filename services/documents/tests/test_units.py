"""Pure logic: chunking, content sniffing, access rules, fusion, embedding providers, settings, event models."""

from __future__ import annotations

import itertools
import json
import uuid

import httpx
import numpy as np
import pytest
from documents.access import can_read, can_write, ensure_read, ensure_write, readable_scope
from documents.config import Settings
from documents.documents.content import EmptyContent, UnsupportedContent, sniff
from documents.embeddings import EmbeddingError
from documents.embeddings.fake import FakeHashProvider
from documents.embeddings.local import verify_model_file
from documents.embeddings.openai_compatible import OpenAICompatibleProvider
from documents.processing.chunking import ChunkingOptions, chunk_markdown, chunk_pages, split_sections
from documents.search.repository import RankedChunk
from documents.search.service import fuse
from pydantic import ValidationError

from shared.auth.testing import TokenFactory
from shared.errors import Forbidden, NotFound
from shared.events import event_class
from shared.events.documents import DocumentIndexed

# -- chunking ------------------------------------------------------------------------------------------


def test_headings_inside_code_fences_are_text():
    md = "# Guide\n\n```bash\n# not a heading\necho hi\n```\n\n## Real\n\nbody\n"
    chunks = chunk_markdown(md)
    assert [c.heading_path for c in chunks] == [("Guide",), ("Guide", "Real")]
    assert "# not a heading" in chunks[0].content


def test_heading_path_pops_to_the_right_level():
    md = "# A\n\n## B\n\n### C\n\nc text\n\n## D\n\nd text\n\n# E\n\ne text\n"
    assert [c.heading_path for c in chunk_markdown(md)] == [("A", "B", "C"), ("A", "D"), ("E",)]


def test_chunk_sizes_and_overlap():
    opts = ChunkingOptions(target=50, max_words=70, overlap=10)
    paragraphs = "\n\n".join(" ".join(f"p{p}w{i}" for i in range(20)) for p in range(12))
    chunks = chunk_markdown(f"# T\n\n{paragraphs}", opts)
    assert len(chunks) > 3
    for a, b in itertools.pairwise(chunks):
        assert len(a.content.split()) <= 70
        assert b.content.split()[:10] == a.content.split()[-10:]
    words = set(paragraphs.split())
    assert words <= {w for c in chunks for w in c.content.split()}  # nothing lost


def test_a_giant_paragraph_is_split_by_sentences_then_words():
    one_sentence = " ".join(f"w{i}" for i in range(1000))
    chunks = chunk_markdown(one_sentence)
    assert all(len(c.content.split()) <= 240 for c in chunks)
    assert {f"w{i}" for i in range(1000)} <= {w for c in chunks for w in c.content.split()}


def test_pages_are_tracked_and_empty_pages_skipped():
    chunks = chunk_pages(["alpha " * 100, "", "beta " * 100, "gamma " * 10])
    assert chunks[0].page_start == 1
    assert all(c.page_start is not None and c.page_start <= c.page_end for c in chunks)
    gamma = [c for c in chunks if "gamma" in c.content]
    assert gamma[-1].page_end == 4
    assert not any(c.page_start == 2 == c.page_end for c in chunks)


def test_sections_are_level_two_with_their_subsections():
    md = "intro\n\n# Doc\n\n## One\n\nfirst\n\n### Sub\n\nnested\n\n## Two\n\nsecond\n\n# Appendix\n\nignored\n"
    sections = split_sections(md)
    assert [(s.ord, s.heading) for s in sections] == [(1, "One"), (2, "Two")]
    assert sections[0].content == "first\n\n### Sub\n\nnested"
    assert sections[1].content == "second"


# -- sniffing ------------------------------------------------------------------------------------------


def test_sniffing_trusts_bytes_not_labels():
    assert sniff(b"%PDF-1.7\n...", declared="text/markdown").content_type == "application/pdf"
    assert sniff(b"# hi", declared="application/pdf").content_type == "text/markdown"
    assert sniff(b"hi", declared="text/plain").content_type == "text/plain"
    assert sniff(b"hi", filename="notes.md", declared="text/plain").content_type == "text/markdown"
    assert (
        sniff("naïve café".encode()).sha256 == __import__("hashlib").sha256("naïve café".encode()).hexdigest()
    )
    for bad in (b"\x7fELF\x02\x01", b"GIF89a....", b"\x1f\x8b\x08\x00", b"text\x00with nul"):
        with pytest.raises(UnsupportedContent):
            sniff(bad)
    with pytest.raises(EmptyContent):
        sniff(b" \n ")


# -- access --------------------------------------------------------------------------------------------

TOKENS = TokenFactory()


def test_roles_and_scopes():
    c, p, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for role, write in (("product_owner", True), ("member", True), ("viewer", False), ("auditor", False)):
        who = TOKENS.principal("u", memberships={str(c): role})
        assert can_read(who, c, p)
        assert can_write(who, c, p) is write
        assert not can_read(who, other, p)
    agent = TOKENS.principal(
        "a", kind="agent", client_id=str(c), scopes=["documents:read"], project_ids=[str(p)]
    )
    assert can_read(agent, c, p)
    assert not can_write(agent, c, p)
    assert not can_read(agent, c, uuid.uuid4())
    scope = readable_scope(agent)
    assert scope.client_ids == {c}
    assert scope.project_ids == {p}
    assert readable_scope(TOKENS.principal("x", admin=True)).all_clients
    assert readable_scope(TOKENS.principal("nobody")).empty
    no_search = TOKENS.principal("a", kind="agent", client_id=str(c), scopes=["documents:write"])
    assert readable_scope(no_search).empty


def _refusal(fn, who, c, p):
    """What ``fn`` raises for ``who`` on project ``p`` of client ``c``: (status, code), or None."""
    try:
        fn(who, c, p, NotFound("Project not found", code="project_not_found"))
    except (NotFound, Forbidden) as exc:
        return exc.status, exc.instance_code
    return None


def test_who_gets_404_and_who_gets_403():
    """404 for a caller who cannot see the project; 403 for one who can but may not do this."""
    c, p, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    hidden, scope, role = (404, "project_not_found"), (403, "insufficient_scope"), (403, "insufficient_role")
    cases = {
        "outsider": (TOKENS.principal("u", memberships={str(other): "product_owner"}), hidden, hidden),
        "viewer": (TOKENS.principal("u", memberships={str(c): "viewer"}), None, role),
        "member": (TOKENS.principal("u", memberships={str(c): "member"}), None, None),
        "agent without a documents scope": (
            TOKENS.principal("a", kind="agent", client_id=str(c), scopes=["projects:read"]), scope, scope),
        "reading agent": (
            TOKENS.principal("a", kind="agent", client_id=str(c), scopes=["documents:read"]), None, scope),
        "agent narrowed to another project": (
            TOKENS.principal("a", kind="agent", client_id=str(c), scopes=["documents:write"],
                             project_ids=[str(uuid.uuid4())]), hidden, hidden),
        "another client's agent": (
            TOKENS.principal("a", kind="agent", client_id=str(other), scopes=["documents:write"]), hidden, hidden),
        "admin": (TOKENS.principal("x", admin=True), None, None),
    }  # fmt: skip
    for name, (who, on_read, on_write) in cases.items():
        assert _refusal(ensure_read, who, c, p) == on_read, name
        assert _refusal(ensure_write, who, c, p) == on_write, name


# -- fusion --------------------------------------------------------------------------------------------


def test_rrf_rewards_agreement():
    c = uuid.uuid4()
    a, b, d = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    semantic = [RankedChunk(c, a, 0.9), RankedChunk(c, b, 0.8)]
    keyword = [RankedChunk(c, b, 3.0), RankedChunk(c, d, 1.0)]
    fused = fuse(semantic, keyword)
    assert [f.chunk_id for f in fused] == [b, a, d]
    assert fused[0].semantic.rank == 2
    assert fused[0].keyword.rank == 1
    assert fused[0].rrf == pytest.approx(1 / 62 + 1 / 61)


# -- providers -----------------------------------------------------------------------------------------


async def test_fake_provider_is_deterministic_and_normalised():
    p = FakeHashProvider()
    a = await p.embed_documents(["the same text", "other words"])
    b = await p.embed_query("the same text")
    assert a.shape == (2, 384)
    assert np.allclose(a[0], b[0])
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def _openai_transport(log: list, script: list):
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        log.append((request.headers.get("authorization"), body))
        action = script.pop(0) if script else "ok"
        if action != "ok":
            return httpx.Response(action, headers={"Retry-After": "0"})
        data = [
            {"index": i, "embedding": [float(len(t)), 1.0, 0.0]}
            for i, t in reversed(list(enumerate(body["input"])))
        ]
        return httpx.Response(200, json={"data": data, "model": body["model"]})

    return httpx.MockTransport(handler)


async def test_openai_provider_batches_orders_retries_and_normalises():
    log: list = []
    p = OpenAICompatibleProvider(
        base_url="http://tei.local/v1", model="m", dim=3, api_key="k", batch_size=2,
        backoff_base=0.0, transport=_openai_transport(log, [429, 503]),
    )  # fmt: skip
    out = await p.embed_documents(["a", "bbb", "cc"])
    assert p.model_id == "openai:m"
    assert [len(b["input"]) for _, b in log] == [2, 2, 2, 1]  # two retries, then two batches
    assert log[0][0] == "Bearer k"
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0)
    assert out[1][0] > out[2][0] > out[0][0]  # rows follow the inputs, not the answer's order
    await p.aclose()


async def test_openai_provider_gives_up_and_checks_answers():
    p = OpenAICompatibleProvider(
        base_url="http://x/v1", model="m", dim=3, max_retries=2, backoff_base=0.0,
        transport=_openai_transport([], [500, 500, 500]),
    )  # fmt: skip
    with pytest.raises(EmbeddingError) as info:
        await p.embed_query("x")
    assert info.value.transient
    wrong_dim = OpenAICompatibleProvider(
        base_url="http://x/v1", model="m", dim=4, transport=_openai_transport([], [])
    )
    with pytest.raises(EmbeddingError, match="shape"):
        await wrong_dim.embed_query("x")

    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    down = OpenAICompatibleProvider(
        base_url="http://x/v1",
        model="m",
        dim=3,
        max_retries=1,
        backoff_base=0.0,
        transport=httpx.MockTransport(refuse),
    )
    with pytest.raises(EmbeddingError, match="unreachable"):
        await down.embed_query("x")


def test_model_file_checksum_is_enforced(tmp_path):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"not the model")
    with pytest.raises(EmbeddingError, match="sha256"):
        verify_model_file(f, "0" * 64)
    import hashlib

    verify_model_file(f, hashlib.sha256(b"not the model").hexdigest())


async def test_real_model_vectors(real_model):
    texts = ["A feline rested on the rug.", "The cat sat on the mat.", "Quarterly revenue grew by a fifth."]
    vectors = await real_model.embed_documents(texts)
    assert vectors.shape == (3, 384)
    assert real_model.dim == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    # Batching sorts by length internally; results stay in input order and match single embeddings.
    single = await real_model.embed_query(texts[2])
    assert np.allclose(single[0], vectors[2], atol=1e-4)
    assert real_model.model_id == "all-MiniLM-L6-v2-onnx-int8"


# -- settings ------------------------------------------------------------------------------------------

PRODUCTION_SECRET = "a-real-production-secret-0123456789"


def test_the_default_embedding_provider_is_the_local_model(monkeypatch):
    monkeypatch.delenv("BATON_DOCUMENTS_EMBEDDING_PROVIDER", raising=False)
    assert Settings().embedding_provider == "local"
    assert Settings(environment="production", secret_key=PRODUCTION_SECRET).embedding_provider == "local"


def test_production_refuses_the_fake_embedding_provider():
    with pytest.raises(ValidationError, match="EMBEDDING_PROVIDER=fake is for tests only"):
        Settings(environment="production", secret_key=PRODUCTION_SECRET, embedding_provider="fake")
    assert Settings(environment="test", embedding_provider="fake").embedding_provider == "fake"


# -- events --------------------------------------------------------------------------------------------


def test_event_models_are_registered_and_round_trip():
    assert event_class("baton.documents.document.indexed.v1") is DocumentIndexed
    event = DocumentIndexed(
        document_id=uuid.uuid4(), project_id=uuid.uuid4(), client_id=uuid.uuid4(), version_id=uuid.uuid4(),
        version=2, kind="prd", title="PRD", chunk_count=7, section_count=3, model_id="m",
    )  # fmt: skip
    assert DocumentIndexed.model_validate(json.loads(event.model_dump_json())) == event
    for t in (
        "baton.documents.document.created.v1",
        "baton.documents.document.version_created.v1",
        "baton.documents.document.processing_failed.v1",
        "baton.documents.document.deleted.v1",
    ):
        assert event_class(t).event_service == "documents"
