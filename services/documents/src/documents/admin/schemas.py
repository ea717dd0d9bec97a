"""API shapes of index administration."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictBool

__all__ = ["ReindexJobRead", "ReindexRequest"]


class ReindexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Re-embed chunks that already have a vector of the target model too (same model, new weights).
    force: StrictBool = False


class ReindexJobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    target_model_id: str
    previous_model_id: str | None
    force: bool
    status: Literal["queued", "running", "completed", "failed"]
    requested_by: str
    total_chunks: int | None
    embedded_chunks: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
