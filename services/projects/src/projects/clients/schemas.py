"""API shapes of clients. Inputs forbid unknown fields; a PATCH may not send ``null`` for a field."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from projects.fields import Metadata, Name, Patch, ShortText, Slug
from shared.http import WHITE_SPACE

__all__ = ["ClientCreate", "ClientRead", "ClientStatus", "ClientUpdate", "Contact"]

ClientStatus = Literal["active", "archived"]
# Exactly what the patterns say (nothing stripped first, so no white space around or inside an email).
_NOT_IN_EMAIL = f"@{WHITE_SPACE}\x00-\x1f"
Email = Annotated[
    str, StringConstraints(max_length=254, pattern=f"^[^{_NOT_IN_EMAIL}]+@[^{_NOT_IN_EMAIL}]+$")
]
Phone = Annotated[str, StringConstraints(max_length=50, pattern=r"^[0-9+()./ -]*$")]


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ShortText | None = None
    email: Email | None = None
    phone: Phone | None = None


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    slug: Slug
    contact: Contact = Field(default_factory=Contact)
    metadata: Metadata = Field(default_factory=dict)


class ClientUpdate(Patch):
    """Only the fields sent are changed; who may send which is decided in the service. ``contact``
    and ``metadata`` are replaced as a whole."""

    name: Name | None = None
    slug: Slug | None = None
    status: ClientStatus | None = None
    contact: Contact | None = None
    metadata: Metadata | None = None


class ClientRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    slug: str
    status: ClientStatus
    contact: dict[str, Any]
    metadata: dict[str, Any] = Field(validation_alias="extra")
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime
