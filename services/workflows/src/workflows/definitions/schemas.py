"""API shapes of workflow definitions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DefinitionRead", "DefinitionSummary", "DefinitionUpload", "VersionRead"]


class DefinitionUpload(BaseModel):
    """JSON form of an upload (the raw YAML body is the usual one)."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=512 * 1024)


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
