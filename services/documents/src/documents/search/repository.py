"""The search queries. Every one filters by what the caller may read inside the scan, before ranking.

Vector search walks the HNSW index of each client partition it is allowed into, with
``hnsw.iterative_scan = relaxed_order`` so a project or kind filter does not starve the result; when the
index scan still yields fewer hits than asked (a very selective filter), the same query runs exactly. A
filter to small projects skips the index and ranks exactly from the start.
Keyword search is Postgres full text (``websearch_to_tsquery``, GIN).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from documents.index.models import TSV_CONFIG
from documents.index.repository import vector_literal

__all__ = [
    "ANY_WORD_CANDIDATES",
    "EXACT_SCAN_VECTORS",
    "ChunkDetail",
    "RankedChunk",
    "SearchFilter",
    "SearchRepository",
]

_QUERY_VECTOR = "CAST(CAST(:q AS text) AS vector)"
# Every word as an alternative (websearch_to_tsquery requires all of them): used to highlight snippets.
_ANY_WORD = f"CAST(replace(CAST(plainto_tsquery('{TSV_CONFIG}', :query) AS text), ' & ', ' | ') AS tsquery)"
ANY_WORD_CANDIDATES = 2000
# A project filter keeping at most this many vectors is ranked exactly (vector_search_complete).
EXACT_SCAN_VECTORS = 1000
_HEADLINE_OPTIONS = (
    'StartSel=\x02, StopSel=\x03, MaxWords=40, MinWords=20, MaxFragments=2, FragmentDelimiter=" … "'
)


def _ranking(where: str, *, exact: bool) -> str:
    """The ``:n`` nearest vectors under a filter (``where``: ``SearchFilter.sql("v")``): by the HNSW index
    (approximate, the partition's index scan) or exactly (``+ 0`` makes the sort key an expression the
    index cannot serve). A subquery with its own LIMIT, so an outer ORDER BY is not merged into it."""
    distance = f"(v.embedding <=> {_QUERY_VECTOR})"
    order = f"{distance} + 0, v.chunk_id" if exact else f"v.embedding <=> {_QUERY_VECTOR}"
    return (
        f"SELECT v.client_id, v.chunk_id, {distance} AS distance FROM chunk_vectors v "
        f"WHERE v.model_id = :model{where} ORDER BY {order} LIMIT :n"
    )


def _matching(where: str) -> str:
    """The vectors under a filter, at most ``:cap`` of them (for a count)."""
    return f"SELECT 1 FROM chunk_vectors v WHERE v.model_id = :model{where} LIMIT :cap"


@dataclass(frozen=True)
class SearchFilter:
    """``client_ids`` None: every client (admins); ``project_ids``/``kinds`` None: no restriction."""

    client_ids: tuple[uuid.UUID, ...] | None
    project_ids: tuple[uuid.UUID, ...] | None = None
    kinds: tuple[str, ...] | None = None

    def sql(self, alias: str) -> tuple[str, dict[str, Any]]:
        parts: list[str] = []
        params: dict[str, Any] = {}
        if self.client_ids is not None:
            parts.append(f"{alias}.client_id = ANY(:clients)")
            params["clients"] = list(self.client_ids)
        if self.project_ids is not None:
            parts.append(f"{alias}.project_id = ANY(:projects)")
            params["projects"] = list(self.project_ids)
        if self.kinds is not None:
            parts.append(f"{alias}.kind = ANY(:kinds)")
            params["kinds"] = list(self.kinds)
        return "".join(f" AND {p}" for p in parts), params


@dataclass(frozen=True)
class RankedChunk:
    client_id: uuid.UUID
    chunk_id: uuid.UUID
    score: float  # similarity (1 - cosine distance) or text rank


@dataclass(frozen=True)
class ChunkDetail:
    client_id: uuid.UUID
    chunk_id: uuid.UUID
    project_id: uuid.UUID
    document_id: uuid.UUID
    title: str
    kind: str
    version: int
    heading_path: list[str]
    page_start: int | None
    page_end: int | None
    snippet: str


class SearchRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def configure(self, ef_search: int) -> None:
        """Per-transaction HNSW settings (``SET LOCAL``: they end with the search's transaction)."""
        await self.session.execute(text(f"SET LOCAL hnsw.ef_search = {int(ef_search)}"))
        await self.session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))

    async def vector_search(
        self, flt: SearchFilter, query: np.ndarray, model_id: str, limit: int, *, exact: bool = False
    ) -> list[RankedChunk]:
        where, params = flt.sql("v")
        params.update(q=vector_literal(query), model=model_id, n=limit)
        sql = f"SELECT client_id, chunk_id, distance FROM ({_ranking(where, exact=exact)}) r ORDER BY distance, chunk_id"
        rows = await self.session.execute(text(sql), params)
        return [RankedChunk(r.client_id, r.chunk_id, 1.0 - float(r.distance)) for r in rows]

    async def matching_vectors(self, flt: SearchFilter, model_id: str, cap: int) -> int:
        """How many vectors ``flt`` lets through, counted no further than ``cap``."""
        where, params = flt.sql("v")
        params.update(model=model_id, cap=cap)
        sql = f"SELECT count(*) FROM ({_matching(where)}) AS matching"
        return int((await self.session.execute(text(sql), params)).scalar_one())

    async def vector_search_complete(
        self, flt: SearchFilter, query: np.ndarray, model_id: str, limit: int
    ) -> list[RankedChunk]:
        """Approximate search, exact where that is both cheap and better.

        A filter to projects holding at most ``EXACT_SCAN_VECTORS`` vectors is ranked exactly: an HNSW
        walk under a filter that keeps a few percent of a partition can miss true neighbours (recall@10
        0.94 on a 3% project in test_filtered_hnsw), while ranking up to a thousand vectors exactly costs
        about what the walk does (bench/search.py). One statement counts the project's vectors (stopping
        past the threshold, from the project index) and runs only the ranking the count chooses.
        Otherwise, or past the threshold, the index scan runs, made exact when it could not fill ``limit``
        under the filter.
        """
        if flt.project_ids is None:
            hits = await self.vector_search(flt, query, model_id, limit)
        else:
            where, params = flt.sql("v")
            params.update(
                q=vector_literal(query),
                model=model_id,
                n=limit,
                cap=EXACT_SCAN_VECTORS + 1,
                threshold=EXACT_SCAN_VECTORS,
            )
            sql = (
                f"WITH counted AS MATERIALIZED (SELECT count(*) AS n FROM ({_matching(where)}) m) "
                f"SELECT client_id, chunk_id, distance, true AS exact FROM ({_ranking(where, exact=True)}) e "
                "WHERE (SELECT n FROM counted) <= :threshold "
                "UNION ALL "
                f"SELECT client_id, chunk_id, distance, false FROM ({_ranking(where, exact=False)}) w "
                "WHERE (SELECT n FROM counted) > :threshold "
                "ORDER BY distance, chunk_id"
            )
            rows = list(await self.session.execute(text(sql), params))
            hits = [RankedChunk(r.client_id, r.chunk_id, 1.0 - float(r.distance)) for r in rows]
            if rows and rows[0].exact:
                return hits
        if len(hits) < limit:
            hits = await self.vector_search(flt, query, model_id, limit, exact=True)
        return hits

    async def keyword_search(
        self, flt: SearchFilter, query: str, limit: int, *, match: Literal["all", "any"] = "all"
    ) -> list[RankedChunk]:
        """Full-text ranking (``ts_rank_cd``). ``any`` ranks at most ``ANY_WORD_CANDIDATES`` matching rows:
        in a large tenant a common word matches thousands of chunks, and ranking all of them cost
        ~100-300 ms (bench/search.py); the every-word leg stays exact."""
        where, params = flt.sql("c")
        params.update(query=query, n=limit)
        if match == "all":
            sql = (
                f"SELECT c.client_id, c.id AS chunk_id, ts_rank_cd(c.tsv, q.query) AS score "
                f"FROM chunks c, (SELECT websearch_to_tsquery('{TSV_CONFIG}', :query) AS query) q "
                f"WHERE c.tsv @@ q.query{where} ORDER BY score DESC, c.id LIMIT :n"
            )
        else:
            params["cap"] = ANY_WORD_CANDIDATES
            sql = (
                "SELECT m.client_id, m.chunk_id, ts_rank_cd(m.tsv, m.query) AS score FROM ("
                f"SELECT c.client_id, c.id AS chunk_id, c.tsv, q.query "
                f"FROM chunks c, (SELECT {_ANY_WORD} AS query) q "
                f"WHERE c.tsv @@ q.query{where} LIMIT :cap) m ORDER BY score DESC, m.chunk_id LIMIT :n"
            )
        rows = await self.session.execute(text(sql), params)
        return [RankedChunk(r.client_id, r.chunk_id, float(r.score)) for r in rows]

    async def keyword_search_relaxed(self, flt: SearchFilter, query: str, limit: int) -> list[RankedChunk]:
        """Chunks with every word first; when they are fewer than ``limit``, chunks with some words after."""
        strict = await self.keyword_search(flt, query, limit)
        if len(strict) >= limit:
            return strict
        seen = {hit.chunk_id for hit in strict}
        loose = await self.keyword_search(flt, query, limit, match="any")
        return strict + [hit for hit in loose if hit.chunk_id not in seen][: limit - len(strict)]

    async def details(
        self, keys: Sequence[tuple[uuid.UUID, uuid.UUID]], query: str
    ) -> dict[uuid.UUID, ChunkDetail]:
        """Display fields and a highlighted snippet for the chosen chunks (raw markers \\x02 / \\x03)."""
        if not keys:
            return {}
        sql = (
            "SELECT c.client_id, c.id, c.project_id, c.document_id, d.title, c.kind, c.version, "
            "c.heading_path, c.page_start, c.page_end, "
            f"ts_headline('{TSV_CONFIG}', c.content, {_ANY_WORD}, :opts) AS snippet "
            "FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE c.client_id = ANY(:clients) AND c.id = ANY(:ids)"
        )
        rows = await self.session.execute(
            text(sql),
            {
                "clients": list({k[0] for k in keys}),
                "ids": [k[1] for k in keys],
                "query": query,
                "opts": _HEADLINE_OPTIONS,
            },
        )
        return {
            r.id: ChunkDetail(
                client_id=r.client_id,
                chunk_id=r.id,
                project_id=r.project_id,
                document_id=r.document_id,
                title=r.title,
                kind=r.kind,
                version=r.version,
                heading_path=list(r.heading_path or []),
                page_start=r.page_start,
                page_end=r.page_end,
                snippet=r.snippet or "",
            )
            for r in rows
        }
