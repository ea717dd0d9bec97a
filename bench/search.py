"""Documents search benchmark (not a test): ``python bench/search.py [--chunks 100000]``.

1. Index: ``--chunks`` chunks over 20 tenants of skewed sizes (each tenant its own partition, as in
   production). Chunk *text* is real English (sentences of tests/data/retrieval_quality.json recombined),
   so the tsvector/GIN side is realistic; chunk *vectors* are synthetic clustered unit vectors (embedding
   100k chunks with the real model would take ~30 min on 2 cores), bulk-loaded with COPY, then the HNSW
   indexes are built per partition exactly as the migration declares them.
2. Search: p50/p95 latency per mode (keyword, semantic, hybrid) through ``documents.search.service.search``
   (authorization filter, SQL, fusion, snippets), for a large and a small tenant; the query vector is
   precomputed (the real model's query embedding cost is measured separately and reported).
   Recall@10 of the filtered HNSW search against an exact scan of the same filter. Project filters: the
   large tenant's chunks are spread over projects of 1%, 3% and 12.5% of it (the rest in its main
   project); for each, the index walk and the exact ranking are timed and the walk's recall measured,
   which is what ``EXACT_SCAN_VECTORS`` (documents.search.repository) is chosen from.
3. Ingestion: real Markdown documents through the real pipeline (store → extract → chunk → embed with the
   real all-MiniLM-L6-v2 → write chunks/vectors/sections) in chunks/s, against the raw embedding rate of the
   same provider on the same chunk texts in the same run.

Uses ``BATON_BENCH_DATABASE_URL`` if set, else starts an embedded Postgres in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from documents.database import Base
from documents.documents.blobstore import PostgresBlobStore
from documents.documents.content import sniff
from documents.documents.schemas import DocumentMeta
from documents.documents.service import create_document
from documents.embeddings.local import LocalMiniLMProvider
from documents.index.partitions import ensure_client_partitions, partition_name
from documents.processing.chunking import chunk_markdown
from documents.processing.service import Processor, embedding_text
from documents.projects.models import KnownProject
from documents.search.repository import EXACT_SCAN_VECTORS, SearchFilter, SearchRepository
from documents.search.schemas import SearchRequest
from documents.search.service import search
from sqlalchemy import text

from shared.auth.testing import TokenFactory
from shared.db import create_session_factory, new_id, transaction
from shared.testing.backends import create_fresh_schema, drop_schema

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "services/documents/tests/data/retrieval_quality.json"
MODEL = "bench-synthetic-384"
DIM = 384


class StubProvider:
    """Query vectors looked up by text (the benchmark measures search, not the model)."""

    model_id = MODEL
    dim = DIM

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}

    async def embed_query(self, query: str) -> np.ndarray:
        return self.vectors[query][None, :]

    async def embed_documents(self, texts: Any) -> np.ndarray:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def tenant_sizes(total: int, tenants: int = 20) -> list[int]:
    """Zipf-like: the largest tenant holds ~27%, the smallest well under 1%."""
    weights = np.array([1 / (i + 1) ** 0.9 for i in range(tenants)])
    sizes = np.floor(weights / weights.sum() * total).astype(int)
    sizes[0] += total - sizes.sum()
    return [int(s) for s in sizes]


def sentences() -> list[str]:
    data = json.loads(DATA.read_text())
    out: list[str] = []
    for doc in data["documents"]:
        for section in doc["sections"]:
            out.extend(s for s in re.split(r"(?<=[.!?])\s+", section["text"]) if s)
    return out


def clustered(rng: np.random.Generator, centers: np.ndarray, n: int) -> np.ndarray:
    picks = rng.integers(0, len(centers), n)
    v = centers[picks] + rng.normal(0, 1.0 / np.sqrt(DIM), (n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# The large tenant's project slices: share label -> chunk i belongs to it when i % every == its offset.
SLICES = {"1%": 100, "3%": 32, "12.5%": 8}
slices: dict[str, tuple[uuid.UUID, int]] = {}  # share -> (project id, every), filled by load_index


def _slice_of(i: int) -> uuid.UUID | None:
    """The project of the large tenant's ``i``-th chunk: a slice's, else None (its main project)."""
    for offset, (project, every) in enumerate(slices.values()):
        if i % every == offset:
            return project
    return None


async def load_index(
    engine: Any, schema: str, total: int, rng: np.random.Generator
) -> list[tuple[uuid.UUID, uuid.UUID, int]]:
    """Bulk-load chunks and vectors; returns (client, project, size) per tenant."""
    from pgvector.asyncpg import register_vector

    factory = create_session_factory(engine)
    pool = sentences()
    centers = rng.normal(size=(200, DIM))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    tenants = []
    slices.clear()
    async with engine.begin() as conn:
        # Build HNSW after the bulk load (as a restore would): drop the parent index, recreate it below.
        await conn.execute(text("DROP INDEX ix_chunk_vectors_embedding"))
    t0 = time.perf_counter()
    for size in tenant_sizes(total):
        client, project = uuid.uuid4(), uuid.uuid4()
        tenants.append((client, project, size))
        if not slices:  # the first (largest) tenant: a few projects of known shares beside its main one
            slices.update({share: (uuid.uuid4(), every) for share, every in SLICES.items()})
        async with transaction(factory) as s:
            await ensure_client_partitions(s, client)
            s.add(KnownProject(id=project, client_id=client, name="bench"))
            if len(tenants) == 1:
                for slice_project, _every in slices.values():
                    s.add(KnownProject(id=slice_project, client_id=client, name="bench slice"))
        doc = uuid.uuid4()
        chunk_rows, vector_rows = [], []
        vectors = clustered(rng, centers, size)
        for i in range(size):
            cid = new_id()
            in_project = (_slice_of(i) or project) if len(tenants) == 1 else project
            body = " ".join(random.sample(pool, k=random.randint(4, 8)))
            chunk_rows.append(
                (
                    client,
                    cid,
                    in_project,
                    doc,
                    doc,
                    1,
                    "reference",
                    i,
                    ["Bench", f"S{i % 50}"],
                    f"Bench > S{i % 50}",
                    None,
                    None,
                    body,
                )
            )
            vector_rows.append((client, cid, MODEL, in_project, doc, "reference", vectors[i]))
        async with engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            await register_vector(raw)
            await raw.copy_records_to_table(
                partition_name("chunks", client),
                schema_name=schema,
                records=chunk_rows,
                columns=["client_id", "id", "project_id", "document_id", "version_id", "version", "kind", "ord",
                         "heading_path", "heading", "page_start", "page_end", "content"],
            )  # fmt: skip
            await raw.copy_records_to_table(
                partition_name("chunk_vectors", client),
                schema_name=schema,
                records=vector_rows,
                columns=[
                    "client_id",
                    "chunk_id",
                    "model_id",
                    "project_id",
                    "document_id",
                    "kind",
                    "embedding",
                ],
            )
            await conn.commit()
    # Documents rows so the join for titles/snippets finds something (one per tenant).
    async with transaction(factory) as s:
        for client, project, _ in tenants:
            doc_id = await s.scalar(
                text("SELECT document_id FROM chunks WHERE client_id = :c LIMIT 1"), {"c": client}
            )
            await s.execute(
                text(
                    "INSERT INTO documents (id, client_id, project_id, title, kind, status, latest_version, "
                    "indexed_version, created_by) VALUES (:d, :c, :p, 'Bench', 'reference', 'indexed', 1, 1, 'bench')"
                ),
                {"d": doc_id, "c": client, "p": project},
            )
        await s.execute(text("INSERT INTO index_state (id, active_model_id) VALUES (1, :m)"), {"m": MODEL})
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(text("SET maintenance_work_mem = '512MB'"))
        await conn.execute(
            text(
                "CREATE INDEX ix_chunk_vectors_embedding ON chunk_vectors USING hnsw "
                "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
            )
        )
    build_s = time.perf_counter() - t1
    # VACUUM as autovacuum would after a bulk insert: statistics, and the visibility map that lets the
    # project count (SearchRepository.matching_vectors) read its index only.
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text("VACUUM (ANALYZE) chunks"))
        await autocommit.execute(text("VACUUM (ANALYZE) chunk_vectors"))
    print(f"loaded {total} chunks in {load_s:.1f} s (COPY + tsvector), HNSW build {build_s:.1f} s")
    return tenants


async def bench_search(
    engine: Any, tenants: list[Any], rng: np.random.Generator, queries: int
) -> dict[str, Any]:
    factory = create_session_factory(engine)
    provider = StubProvider()
    tokens = TokenFactory()
    pool = sentences()
    words = sorted({w.lower() for s in pool for w in re.findall(r"[A-Za-z]{5,}", s)})
    centers_src = rng.normal(size=(200, DIM))
    centers_src /= np.linalg.norm(centers_src, axis=1, keepdims=True)
    results: dict[str, Any] = {}
    picks = {"large tenant": tenants[0], "small tenant": tenants[-1]}
    for label, (client, _project, size) in picks.items():
        principal = tokens.principal("bench-user", memberships={str(client): "viewer"})
        # Query vectors near stored ones (a real query resembles some chunk), query texts from real words.
        async with factory() as s:
            sample = (await s.execute(
                text("SELECT embedding::text FROM chunk_vectors WHERE client_id = :c ORDER BY random() LIMIT :n"),
                {"c": client, "n": queries},
            )).scalars().all()  # fmt: skip
        qtexts = []
        for i, vec_text in enumerate(sample):
            vec = np.array(json.loads(vec_text), dtype=np.float32) + rng.normal(
                0, 0.5 / np.sqrt(DIM), DIM
            ).astype(np.float32)
            q = f"{random.choice(words)} {random.choice(words)} #{i}"
            provider.vectors[q] = vec / np.linalg.norm(vec)
            qtexts.append(q)
        for mode in ("keyword", "semantic", "hybrid"):
            times = []
            for q in qtexts:
                t = time.perf_counter()
                async with transaction(factory) as s:
                    await search(s, principal, SearchRequest(query=q, mode=mode, limit=10), provider)
                times.append((time.perf_counter() - t) * 1000)
            results[f"{label} ({size} chunks) {mode}"] = {
                "p50_ms": round(pct(times, 0.5), 2),
                "p95_ms": round(pct(times, 0.95), 2),
            }
        recalls = []
        async with transaction(factory) as s:
            repo = SearchRepository(s)
            await repo.configure(100)
            flt = SearchFilter((client,))
            for q in qtexts:
                approx = await repo.vector_search_complete(flt, provider.vectors[q], MODEL, 10)
                exact = await repo.vector_search(flt, provider.vectors[q], MODEL, 10, exact=True)
                truth = {h.chunk_id for h in exact}
                recalls.append(len(truth & {h.chunk_id for h in approx}) / max(1, len(truth)))
        results[f"{label} ({size} chunks) recall@10 vs exact"] = round(float(np.mean(recalls)), 4)
        if label == "large tenant":
            results["project filters in the large tenant"] = await bench_project_slices(
                factory, client, [provider.vectors[q] for q in qtexts]
            )
    return results


async def bench_project_slices(factory: Any, client: uuid.UUID, vectors: list[np.ndarray]) -> dict[str, Any]:
    """Per project slice: the HNSW walk (relaxed iterative scan, as configured for a search) against the
    exact ranking of the same filter, in latency and recall@10; and what the service does."""
    out: dict[str, Any] = {}
    for share, (project, _every) in slices.items():
        flt = SearchFilter((client,), (project,))
        walk_ms, exact_ms, service_ms, recalls = [], [], [], []
        async with transaction(factory) as s:
            repo = SearchRepository(s)
            await repo.configure(100)
            count = await repo.matching_vectors(flt, MODEL, 10**9)
            for vec in vectors:
                t = time.perf_counter()
                walk = await repo.vector_search(flt, vec, MODEL, 10)
                t1 = time.perf_counter()
                exact = await repo.vector_search(flt, vec, MODEL, 10, exact=True)
                t2 = time.perf_counter()
                await repo.vector_search_complete(flt, vec, MODEL, 10)
                t3 = time.perf_counter()
                walk_ms.append((t1 - t) * 1000)
                exact_ms.append((t2 - t1) * 1000)
                service_ms.append((t3 - t2) * 1000)
                truth = {h.chunk_id for h in exact}
                recalls.append(len(truth & {h.chunk_id for h in walk}) / max(1, len(truth)))
        out[f"{share} project ({count} vectors)"] = {
            "index walk p50 ms": round(pct(walk_ms, 0.5), 2),
            "index walk recall@10": round(float(np.mean(recalls)), 4),
            "exact p50 ms": round(pct(exact_ms, 0.5), 2),
            "as searched p50 ms": round(pct(service_ms, 0.5), 2),
            "as searched": "exact" if count <= EXACT_SCAN_VECTORS else "index walk",
        }
    return out


def ingestion_docs(n_docs: int) -> list[tuple[str, str]]:
    """Realistic Markdown documents (~6 sections of ~200 words) from the quality set's text."""
    data = json.loads(DATA.read_text())
    pool = sentences()
    docs = []
    for i in range(n_docs):
        src = data["documents"][i % len(data["documents"])]
        parts = [f"# {src['title']} {i}"]
        for j in range(6):
            body = " ".join(random.sample(pool, k=14))
            parts.append(f"## Part {j}\n\n{body}")
        docs.append((f"{src['title']} {i}", "\n\n".join(parts)))
    return docs


async def bench_ingestion(engine: Any, n_docs: int, rounds: int = 4) -> dict[str, Any]:
    """Raw embedding and the pipeline alternate over the same documents in ``rounds``, so load drift on a
    shared machine hits both alike; rates are totals over all rounds."""
    factory = create_session_factory(engine)
    model = LocalMiniLMProvider(threads=2, batch_size=32)
    tokens = TokenFactory()
    docs = ingestion_docs(n_docs)
    await model.embed_documents(["warm up the session"] * 8)
    query_ms = []
    for q in ("what is the refund policy", "how do I keep my starter alive", "pod restarts again and again"):
        t = time.perf_counter()
        await model.embed_query(q)
        query_ms.append((time.perf_counter() - t) * 1000)

    client, project = uuid.uuid4(), uuid.uuid4()
    async with transaction(factory) as s:
        await ensure_client_partitions(s, client)
        s.add(KnownProject(id=project, client_id=client, name="ingest"))
    blobs = PostgresBlobStore(factory)
    processor = Processor(factory=factory, provider=model, blobs=blobs)
    principal = tokens.principal("bench-writer", memberships={str(client): "member"})
    raw_s = upload_s = process_s = 0.0
    raw_chunks = 0
    per_round = max(1, len(docs) // rounds)
    for start in range(0, len(docs), per_round):
        batch = docs[start : start + per_round]
        # Raw: the same chunk texts the pipeline embeds, one call per document like the pipeline makes.
        per_doc = [[embedding_text(c, title) for c in chunk_markdown(md)] for title, md in batch]
        t = time.perf_counter()
        for texts in per_doc:
            await model.embed_documents(texts)
        raw_s += time.perf_counter() - t
        raw_chunks += sum(len(texts) for texts in per_doc)
        t = time.perf_counter()
        version_ids = []
        for title, md in batch:
            async with transaction(factory) as s:
                proj = await s.get(KnownProject, project)
                assert proj is not None
                stored = await create_document(
                    s, project=proj, meta=DocumentMeta(title=title, kind="reference"),
                    content=sniff(md.encode()), principal=principal, blobs=blobs,
                )  # fmt: skip
                version_ids.append(stored.version.id)
        upload_s += time.perf_counter() - t
        t = time.perf_counter()
        for vid in version_ids:
            async with transaction(factory) as s:
                assert await processor.process(s, vid) == "indexed"
        process_s += time.perf_counter() - t
    async with factory() as s:
        chunks = int(
            await s.scalar(text("SELECT count(*) FROM chunks WHERE client_id = :c"), {"c": client}) or 0
        )
    raw_rate = raw_chunks / raw_s
    pipeline_rate = chunks / process_s
    return {
        "documents": n_docs,
        "chunks": chunks,
        "words per chunk (mean)": round(
            statistics.mean(len(c.content.split()) for _, md in docs for c in chunk_markdown(md)), 1
        ),
        "raw embedding chunks/s": round(raw_rate, 2),
        "pipeline chunks/s (extract+chunk+embed+write)": round(pipeline_rate, 2),
        "pipeline / raw": round(pipeline_rate / raw_rate, 3),
        "upload (store + outbox) ms per document": round(upload_s / n_docs * 1000, 1),
        "query embedding ms (median of 3)": round(statistics.median(query_ms), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--ingest-docs", type=int, default=40)
    args = parser.parse_args()
    random.seed(1)
    rng = np.random.default_rng(1)
    tmp = None
    pg = None
    url = os.environ.get("BATON_BENCH_DATABASE_URL")
    if url is None:
        from shared.embedded import EmbeddedPostgres

        tmp = Path(tempfile.mkdtemp(prefix="baton-bench-search-"))
        pg = EmbeddedPostgres(tmp / "pg", durable=False).start()
        url = pg.url()
    schema, engine = await create_fresh_schema(url, "bench_search", Base.metadata)
    try:
        print(f"load average at start: {os.getloadavg()}")
        tenants = await load_index(engine, schema, args.chunks, rng)
        report = {"search": await bench_search(engine, tenants, rng, args.queries)}
        report["ingestion"] = await bench_ingestion(engine, args.ingest_docs)
        report["load average at end"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(report, indent=2))
    finally:
        await engine.dispose()
        await drop_schema(url, schema)
        if pg is not None:
            pg.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
