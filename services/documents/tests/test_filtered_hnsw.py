"""Filtered approximate vector search on real HNSW indexes: 20 clients of skewed sizes, one partition each.

The test data is large enough, and ANALYZEd, that the planner walks the HNSW index of the biggest
tenant on its own. Small partitions and very selective filters are cheaper to scan exactly, so the
planner would never touch their index and a recall test there would compare an exact scan with itself:
the approximate transactions therefore disable the other access paths (``enable_seqscan``,
``enable_bitmapscan``, ``enable_sort``) and every test checks with EXPLAIN that the statement the
repository ran uses the partition's ``..._embedding_idx``. The statements themselves are the service's.

Vectors are synthetic (clustered, deterministic); the model is not needed to test the index.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from documents.database import Base
from documents.index.models import EMBEDDING_DIM
from documents.index.partitions import ensure_client_partitions, partition_name
from documents.search import repository as search_repository
from documents.search.repository import EXACT_SCAN_VECTORS, RankedChunk, SearchFilter, SearchRepository
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import create_session_factory, new_id, transaction
from shared.testing.backends import create_fresh_schema, drop_schema

MODEL = "fake-hash-384"
EF_SEARCH = 100  # the service's default (Settings.hnsw_ef_search)
K = 10
# Chunks per client: one tenant big enough for the planner to choose its HNSW index unaided, then a long
# tail. Each client's fourth project holds every 32nd chunk (~3%), the selective filter; its fifth every
# 1,000th (6 chunks in the big tenant), the rare one.
SIZES = (6000, 2500, 1500, 1000, 700, 500, 400, 300, 250, 200, 150, 120, 100, 90, 80, 70, 60, 50, 45, 35)
QUERIES_PER_CLIENT = 4
QUERIES_BIG_TENANT = 20
FORCE_INDEX = ("enable_seqscan", "enable_bitmapscan", "enable_sort")


@dataclass(frozen=True)
class Tenant:
    client_id: uuid.UUID
    projects: tuple[uuid.UUID, ...]
    size: int
    queries: np.ndarray

    @property
    def whole(self) -> SearchFilter:
        return SearchFilter((self.client_id,))

    @property
    def selective(self) -> SearchFilter:
        return SearchFilter((self.client_id,), (self.projects[3],))

    @property
    def rare(self) -> SearchFilter:
        return SearchFilter((self.client_id,), (self.projects[4],))

    def count(self, flt: SearchFilter) -> int:
        """How many chunks ``flt`` lets through (the layout of ``_project_of``)."""
        projects = (0, 1, 2, 3, 4) if flt.project_ids is None else (self.projects.index(flt.project_ids[0]),)
        return sum(1 for i in range(self.size) if _project_of(i) in projects)

    @property
    def index_name(self) -> str:
        return f"{partition_name('chunk_vectors', self.client_id)}_embedding_idx"


@dataclass(frozen=True)
class World:
    sessions: async_sessionmaker[AsyncSession]
    tenants: tuple[Tenant, ...]

    @property
    def big(self) -> Tenant:
        return self.tenants[0]


def _clustered(rng: np.random.Generator, n: int, centers: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(centers), n)
    vectors = centers[picks] + rng.normal(0, 1.0 / np.sqrt(centers.shape[1]), (n, centers.shape[1]))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _project_of(i: int) -> int:
    return 4 if i % 1000 == 500 else 3 if i % 32 == 0 else i % 3


_INSERT = text(
    "INSERT INTO chunk_vectors (client_id, chunk_id, model_id, project_id, document_id, kind, embedding) "
    f"VALUES (:c, :i, '{MODEL}', :p, :d, 'reference', CAST(CAST(:e AS real[]) AS vector))"
)


@pytest.fixture(scope="module")
async def world(database_url: str) -> AsyncIterator[World]:
    """The 20 clients' vectors, inserted through the partitions' live HNSW indexes, then ANALYZEd."""
    schema, engine = await create_fresh_schema(database_url, "docs", Base.metadata)
    sessions = create_session_factory(engine)
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(60, EMBEDDING_DIM))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    tenants = []
    try:
        for n, size in enumerate(SIZES):
            client = uuid.uuid4()
            projects = tuple(uuid.uuid4() for _ in range(5))
            async with transaction(sessions) as s:
                await ensure_client_partitions(s, client)
            doc = uuid.uuid4()
            rows = [
                {
                    "c": client,
                    "i": new_id(),
                    "p": projects[_project_of(i)],
                    "d": doc,
                    "e": vec.tolist(),
                }
                for i, vec in enumerate(_clustered(rng, size, centers))
            ]
            async with transaction(sessions) as s:
                await s.execute(_INSERT, rows)
            queries = _clustered(rng, QUERIES_BIG_TENANT if n == 0 else QUERIES_PER_CLIENT, centers)
            tenants.append(Tenant(client, projects, size, queries))
        async with engine.begin() as c:
            await c.execute(text("ANALYZE chunk_vectors"))
        yield World(sessions, tuple(tenants))
    finally:
        await engine.dispose()
        await drop_schema(database_url, schema)


@asynccontextmanager
async def searching(world: World, *, force_index: bool = True) -> AsyncIterator[AsyncSession]:
    """A search transaction configured as the service configures it (``SearchRepository.configure``);
    with ``force_index``, every access path but an index scan without a sort is disabled too."""
    async with transaction(world.sessions) as s:
        await SearchRepository(s).configure(EF_SEARCH)
        if force_index:
            for setting in FORCE_INDEX:
                await s.execute(text(f"SET LOCAL {setting} = off"))
        yield s


class _Recording:
    """A session that keeps the statements run through it, so EXPLAIN sees exactly the repository's SQL."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.statements: list[tuple[Any, dict[str, Any]]] = []

    async def execute(self, statement: Any, params: dict[str, Any]) -> Any:
        self.statements.append((statement, params))
        return await self.session.execute(statement, params)


async def vector_plan(s: AsyncSession, flt: SearchFilter, query: np.ndarray, *, exact: bool = False) -> str:
    recording = _Recording(s)
    await SearchRepository(recording).vector_search(flt, query, MODEL, K, exact=exact)  # type: ignore[arg-type]
    ((statement, params),) = recording.statements
    rows = await s.execute(text(f"EXPLAIN {statement.text}"), params)
    return "\n".join(row[0] for row in rows)


async def exact_hits(
    world: World, flt: SearchFilter, queries: Sequence[np.ndarray]
) -> list[list[RankedChunk]]:
    async with transaction(world.sessions) as s:
        repo = SearchRepository(s)
        return [await repo.vector_search(flt, q, MODEL, K, exact=True) for q in queries]


def recall(approx: Sequence[RankedChunk], exact: Sequence[RankedChunk]) -> float:
    truth = {hit.chunk_id for hit in exact}
    return len(truth & {hit.chunk_id for hit in approx}) / len(truth)


async def test_search_plans_walk_the_partitions_hnsw_index(world):
    big = world.big
    q = big.queries[0]
    # The big tenant's index is chosen by the planner's own costs, as in production.
    async with searching(world, force_index=False) as s:
        plan = await vector_plan(s, big.whole, q)
    assert f"Index Scan using {big.index_name}" in plan, plan
    # Everywhere else the index is forced, and the exact ranking really is not the index's.
    async with searching(world) as s:
        for tenant in world.tenants:
            for flt in (tenant.whole, tenant.selective, *([tenant.rare] if tenant is big else [])):
                plan = await vector_plan(s, flt, tenant.queries[0])
                assert f"Index Scan using {tenant.index_name}" in plan, (tenant.size, plan)
                assert "Order By: (embedding <=> " in plan, plan
        exact_plan = await vector_plan(s, big.whole, q, exact=True)
    assert "embedding_idx" not in exact_plan, exact_plan


async def test_filtered_hnsw_recall_against_exact_with_20_clients(world):
    """Per-client and ~3%-project filtered search as the service runs it (approximate, exact when short)
    keeps recall@10 ≥ 0.95 against an exact scan of the same filter, and never returns fewer hits."""
    recalls: list[float] = []
    for tenant in world.tenants:
        for flt in (tenant.whole, tenant.selective):
            truths = await exact_hits(world, flt, tenant.queries)
            async with searching(world) as s:
                repo = SearchRepository(s)
                for q, exact in zip(tenant.queries, truths, strict=True):
                    approx = await repo.vector_search_complete(flt, q, MODEL, K)
                    assert len(exact) == min(K, tenant.count(flt))
                    assert len(approx) == len(exact), (tenant.size, flt)
                    recalls.append(recall(approx, exact))
    mean = float(np.mean(recalls))
    print(
        f"\nfiltered HNSW recall@{K} vs exact, {len(recalls)} queries over {len(SIZES)} clients: {mean:.3f}"
    )
    assert mean >= 0.95


async def test_selective_filter_is_filled_by_the_iterative_index_scan(world):
    """A project holding ~3% of the big tenant: the first ef_search candidates hold ~3 of its chunks, so
    only the iterative scan (``hnsw.iterative_scan``) fills the page, without the exact fallback."""
    big = world.big
    truths = await exact_hits(world, big.selective, big.queries)
    async with searching(world) as s:
        repo = SearchRepository(s)
        found = [await repo.vector_search(big.selective, q, MODEL, K) for q in big.queries]
    assert [len(hits) for hits in found] == [K] * len(big.queries)
    mean = float(np.mean([recall(a, e) for a, e in zip(found, truths, strict=True)]))
    print(f"\n~3% project, index scan alone: recall@{K} vs exact {mean:.3f} over {len(found)} queries")
    assert mean >= 0.9


async def test_a_small_project_is_ranked_exactly(world):
    """A project filter keeping at most ``EXACT_SCAN_VECTORS`` vectors skips the walk: the service's answer
    is the exact ranking, in order, for every query (the walk alone misses some neighbours, test above),
    even with every access path but the index disabled."""
    big = world.big
    assert big.count(big.selective) <= EXACT_SCAN_VECTORS
    truths = await exact_hits(world, big.selective, big.queries)
    async with searching(world) as s:
        repo = SearchRepository(s)
        assert await repo.matching_vectors(big.selective, MODEL, 10**6) == big.count(big.selective)
        assert await repo.matching_vectors(big.whole, MODEL, 100) == 100  # bounded by its cap
        found = [await repo.vector_search_complete(big.selective, q, MODEL, K) for q in big.queries]
    assert [[h.chunk_id for h in hits] for hits in found] == [[h.chunk_id for h in t] for t in truths]


async def test_one_statement_counts_and_runs_only_the_ranking_it_chose(world, monkeypatch):
    """Under a project filter, the count and both rankings are one statement; EXPLAIN ANALYZE shows that
    only the chosen ranking ran: the exact one for a small project, the HNSW walk past the threshold."""
    big = world.big

    async def plan() -> str:
        async with searching(world) as s:
            recording = _Recording(s)
            await SearchRepository(recording).vector_search_complete(big.selective, big.queries[0], MODEL, K)  # type: ignore[arg-type]
            statement, params = recording.statements[0]
            rows = await s.execute(text(f"EXPLAIN (ANALYZE, COSTS OFF) {statement.text}"), params)
            return "\n".join(row[0] for row in rows)

    def walked(explained: str) -> bool:
        line = next(x for x in explained.splitlines() if f"Index Scan using {big.index_name}" in x)
        return "never executed" not in line

    small = await plan()
    assert not walked(small), small
    monkeypatch.setattr(search_repository, "EXACT_SCAN_VECTORS", big.count(big.selective) - 1)
    large = await plan()
    assert walked(large), large


async def test_a_project_past_the_exact_threshold_walks_the_index(world, monkeypatch):
    """With the threshold below the project's size, the service's answer is the index walk's."""
    big = world.big
    monkeypatch.setattr(search_repository, "EXACT_SCAN_VECTORS", big.count(big.selective) - 1)
    async with searching(world) as s:
        repo = SearchRepository(s)
        walked = [await repo.vector_search(big.selective, q, MODEL, K) for q in big.queries]
        found = [await repo.vector_search_complete(big.selective, q, MODEL, K) for q in big.queries]
    assert [[h.chunk_id for h in hits] for hits in found] == [[h.chunk_id for h in w] for w in walked]


async def test_rare_filter_falls_back_to_exact_when_the_scan_gives_up(world, monkeypatch):
    """A project of 6 chunks in the big tenant. When the iterative scan gives up before it has met them
    all (``hnsw.max_scan_tuples``: 20,000 tuples by default, lowered here so that 6,000 rows stand for a
    tenant past it), the search reruns exactly and returns every hit that exists, in exact order. (The
    exact threshold is set to 0 so that the walk runs: a real tenant's project this small never walks.)"""
    big = world.big
    monkeypatch.setattr(search_repository, "EXACT_SCAN_VECTORS", 0)
    assert big.count(big.rare) == 6
    truths = await exact_hits(world, big.rare, big.queries)
    async with searching(world) as s:
        await s.execute(text("SET LOCAL hnsw.max_scan_tuples = 1"))
        repo = SearchRepository(s)
        short = [await repo.vector_search(big.rare, q, MODEL, K) for q in big.queries]
        complete = [await repo.vector_search_complete(big.rare, q, MODEL, K) for q in big.queries]
    assert all(len(hits) < 6 for hits in short), [len(hits) for hits in short]
    assert [len(hits) for hits in complete] == [6] * len(big.queries)
    assert [[h.chunk_id for h in hits] for hits in complete] == [[h.chunk_id for h in t] for t in truths]
