"""API shapes of search."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from documents.documents.schemas import DocumentKind
from shared.http import JSON_INTEGER, WHITE_SPACE

__all__ = [
    "MAX_QUERY_CHARS",
    "QUERY_PATTERN",
    "KeywordPart",
    "SearchHit",
    "SearchMode",
    "SearchRequest",
    "SearchResponse",
    "SemanticPart",
]

MAX_QUERY_CHARS = 1000
SearchMode = Literal["hybrid", "semantic", "keyword"]
# Something to search for besides white space, and no NUL (Postgres text cannot hold it).
QUERY_PATTERN = f"^[^\x00]*[^\x00{WHITE_SPACE}][^\x00]*$"


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Annotated[str, StringConstraints(max_length=MAX_QUERY_CHARS, pattern=QUERY_PATTERN)]
    mode: SearchMode = "hybrid"
    limit: Annotated[int, Field(ge=1, le=50), JSON_INTEGER] = 10
    project_ids: list[uuid.UUID] | None = Field(default=None, max_length=100)
    kinds: list[DocumentKind] | None = Field(default=None, max_length=10)


class SemanticPart(BaseModel):
    rank: int
    similarity: float


class KeywordPart(BaseModel):
    rank: int
    score: float


class SearchHit(BaseModel):
    document_id: uuid.UUID
    project_id: uuid.UUID
    title: str
    kind: DocumentKind
    version: int
    chunk_id: uuid.UUID
    heading_path: list[str]
    page: int | None = Field(description="First page of the chunk (PDF only)")
    page_end: int | None
    snippet: str = Field(description="HTML-escaped text with matched words in <mark>…</mark>")
    score: float = Field(description="What the hits are ordered by: RRF (hybrid), similarity or text rank")
    semantic: SemanticPart | None
    keyword: KeywordPart | None


class SearchResponse(BaseModel):
    items: list[SearchHit]
    mode: SearchMode
    model_id: str | None = None
    semantic_available: bool = True
