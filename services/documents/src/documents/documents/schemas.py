"""API shapes of documents, versions and sections."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "DocumentCreateJson",
    "DocumentKind",
    "DocumentMeta",
    "DocumentRead",
    "DocumentStatus",
    "DocumentUpdate",
    "SectionRead",
    "VersionCreateJson",
    "VersionRead",
    "check_title",
]

DocumentKind = Literal[
    "project-brief",
    "prd",
    "front-end-spec",
    "architecture",
    "ui-architecture",
    "story",
    "qa-gate",
    "epic-retrospective",
    "sprint-status",
    "reference",
]
DocumentStatus = Literal["pending", "processing", "indexed", "failed"]
VersionStatus = Literal["pending", "processing", "indexed", "failed", "superseded"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
TITLE_MAX = 200


def check_title(value: str) -> str:
    """A human title, not a path: no slashes, no leading dot or tilde, no control characters.

    Titles end up in file names (downloads, shard-doc exports); refusing path syntax here keeps
    ``../../etc/passwd`` from ever reaching one.
    """
    value = value.strip()
    if not value:
        raise ValueError("the title is empty")
    if len(value) > TITLE_MAX:
        raise ValueError(f"the title is longer than {TITLE_MAX} characters")
    if _CONTROL.search(value):
        raise ValueError("the title contains control characters")
    if "/" in value or "\\" in value:
        raise ValueError("the title must not contain '/' or '\\' (it is a title, not a path)")
    if value.startswith((".", "~")):
        raise ValueError("the title must not start with '.' or '~'")
    return value


def _check_tags(values: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for tag in values:
        tag = tag.strip().lower()
        if tag:
            seen[tag] = None
    return list(seen)


Title = Annotated[str, AfterValidator(check_title)]
Tag = Annotated[
    str, StringConstraints(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._:-]*$")
]
Tags = Annotated[list[Tag], Field(max_length=20), AfterValidator(_check_tags)]
Number = Annotated[int, Field(ge=0, le=100_000)]


class DocumentMeta(BaseModel):
    """Metadata given with an upload (as form fields or JSON members)."""

    model_config = ConfigDict(extra="forbid")

    title: Title
    kind: DocumentKind = "reference"
    tags: Tags = Field(default_factory=list)
    epic: Number | None = None
    story: Number | None = None


class DocumentCreateJson(DocumentMeta):
    """``POST /v1/projects/{id}/documents`` as JSON: Markdown ``content`` inline."""

    content: str = Field(min_length=1)


class VersionCreateJson(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1)


class DocumentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    kind: DocumentKind | None = None
    tags: Tags | None = None
    epic: Number | None = None
    story: Number | None = None


class VersionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    document_id: uuid.UUID
    version: int
    content_type: str
    size_bytes: int
    sha256: str
    author: str
    status: VersionStatus
    failure_code: str | None
    failure_reason: str | None
    chunk_count: int | None
    page_count: int | None
    model_id: str | None
    created_at: datetime
    processed_at: datetime | None


class DocumentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    client_id: uuid.UUID
    title: str
    kind: DocumentKind
    epic: int | None
    story: int | None
    tags: list[str]
    status: DocumentStatus
    failure_code: str | None
    failure_reason: str | None
    latest_version: int
    indexed_version: int | None
    revision: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    latest: VersionRead | None = None


class SectionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ord: int
    heading: str
    content: str
    version: int
