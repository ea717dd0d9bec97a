"""API shapes of workflow definitions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MAX_JSON_SOURCE_CHARS", "DefinitionRead", "DefinitionSummary", "DefinitionUpload", "VersionRead"]


# A JSON upload holds at most this many characters of YAML: escaped (up to 12 bytes a character), it
# still fits in the request body limit (1 MiB). Larger files are sent as YAML (up to 512 KiB).
MAX_JSON_SOURCE_CHARS = 64 * 1024


class DefinitionUpload(BaseModel):
    """JSON form of an upload (the raw YAML body is the usual one)."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=MAX_JSON_SOURCE_CHARS)


class VersionRead(BaseModel):
    version: int
    content_hash: str
    origin: str
    created_by: str | None
    created_at: datetime


class DefinitionSummary(BaseModel):
    id: str
    name: str
    format: str
    latest_version: int
    created_at: datetime
    updated_at: datetime


class DefinitionRead(DefinitionSummary):
    """One version of a definition: its normalized model (steps...), the mermaid diagram as given, the
    versions that exist, and the source text it was loaded from."""

    version: int
    content_hash: str
    versions: list[VersionRead]
    model: dict[str, Any]
    flow_diagram: str | None
    source: str
