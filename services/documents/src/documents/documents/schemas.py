"""API shapes of documents, versions and sections."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from shared.http import JSON_INTEGER

__all__ = [
    "CONTENT_PATTERN",
    "DocumentCreateJson",
    "DocumentForm",
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
# Markdown given inline (JSON ``content``): text with something besides ASCII whitespace in it, and no
# control character but tab, newline, vertical tab, form feed and carriage return. What ``sniff`` would
# refuse in an uploaded file (empty, NUL bytes, "looks binary") is refused here by the schema itself.
CONTENT_PATTERN = r"^[^\x00-\x08\x0e-\x1f]*[^\x00-\x20][^\x00-\x08\x0e-\x1f]*$"
# The ``tags`` form field: up to 20 comma-separated tags (see ``Tag``), or nothing.
_TAG = r"[A-Za-z0-9][A-Za-z0-9 ._:-]{0,49}"
TAGS_FIELD_PATTERN = rf"^(?:{_TAG}(?:,{_TAG}){{0,19}})?$"


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


Title = Annotated[str, StringConstraints(max_length=TITLE_MAX), AfterValidator(check_title)]
Tag = Annotated[
    str, StringConstraints(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._:-]*$")
]
Tags = Annotated[list[Tag], Field(max_length=20), AfterValidator(_check_tags)]
Number = Annotated[int, Field(ge=0, le=100_000), JSON_INTEGER]


def _absent_is_unchanged(schema: dict[str, Any]) -> None:
    """A PATCH field that may be left out but not sent as null: no ``default: null`` in its schema."""
    schema.pop("default", None)


def _optional() -> Any:
    """The default of a PATCH field that cannot be cleared: absent means unchanged, ``null`` is refused
    (the type has no ``None``, and pydantic does not validate defaults)."""
    return Field(default=None, json_schema_extra=_absent_is_unchanged)


class DocumentMeta(BaseModel):
    """Metadata given with an upload (as form fields or JSON members)."""

    model_config = ConfigDict(extra="forbid")

    title: Title
    kind: DocumentKind = "reference"
    tags: Tags = Field(default_factory=list)
    epic: Number | None = None
    story: Number | None = None


Content = Annotated[str, StringConstraints(pattern=CONTENT_PATTERN)]


def _digits(value: object) -> object:
    """A form number is its digits and nothing else (not `` 5``, ``+5``, ``1_000`` or ``5.0``)."""
    if isinstance(value, str) and not re.fullmatch(r"0|[1-9][0-9]*", value):
        raise ValueError("must be a whole number written in digits")
    return value


FormNumber = Annotated[int, Field(ge=0, le=100_000), BeforeValidator(_digits)]


class DocumentCreateJson(DocumentMeta):
    """``POST /v1/projects/{id}/documents`` as JSON: Markdown ``content`` inline."""

    content: Content


class DocumentForm(BaseModel):
    """``POST /v1/projects/{id}/documents`` as multipart/form-data: the fields besides the ``file`` part
    (the title defaults to the file's name). Form values are text: ``tags`` is one comma-separated field,
    ``epic`` and ``story`` are the digits of a number."""

    model_config = ConfigDict(extra="forbid")

    title: Title = _optional()
    kind: DocumentKind = "reference"
    tags: Annotated[str, StringConstraints(pattern=TAGS_FIELD_PATTERN)] = ""
    epic: FormNumber = _optional()
    story: FormNumber = _optional()

    def meta(self, default_title: str | None) -> DocumentMeta:
        """The metadata these fields give (validated again as ``DocumentMeta``)."""
        fields = self.model_dump(exclude_unset=True)
        fields["tags"] = [t for t in self.tags.split(",") if t] if self.tags else []
        if "title" not in fields and default_title is not None:
            fields["title"] = default_title
        return DocumentMeta.model_validate(fields)


class VersionCreateJson(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: Content


class DocumentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title = _optional()
    kind: DocumentKind = _optional()
    tags: Tags = _optional()
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
