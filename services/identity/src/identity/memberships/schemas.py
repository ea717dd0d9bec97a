"""HTTP shapes of memberships."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["MembershipPut", "MembershipRead", "Role"]

Role = Literal["product_owner", "member", "viewer", "auditor"]


class MembershipPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role


class MembershipRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    client_id: uuid.UUID
    user_id: uuid.UUID
    role: Role
    created_at: datetime
    updated_at: datetime
