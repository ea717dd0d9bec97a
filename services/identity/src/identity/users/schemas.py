"""HTTP shapes of users."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from identity.users.passwords import check_password_rules
from shared.http import WHITE_SPACE

__all__ = [
    "DisplayName",
    "Email",
    "MembershipSummary",
    "NewPassword",
    "UserCreate",
    "UserMeRead",
    "UserRead",
    "UserUpdate",
]

_EMAIL = re.compile(r"^[^@\s\x00-\x1f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _check_email(value: str) -> str:
    """A deliberately simple check (one ``@``, no spaces, a plausible host); delivery proves the rest."""
    if not _EMAIL.match(value) or ".." in value.rpartition("@")[2]:
        raise ValueError("not a valid email address")
    return value


Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=320), AfterValidator(_check_email)]
NewPassword = Annotated[str, Field(max_length=1024), AfterValidator(check_password_rules)]
# Not blank once stripped, and no NUL (Postgres text cannot hold it): both in the documented pattern.
DisplayName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=200, pattern=f"^[^\x00]*[^\x00{WHITE_SPACE}][^\x00]*$"
    ),
]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: NewPassword
    display_name: DisplayName
    is_admin: bool = False


class UserUpdate(BaseModel):
    """Users may change their own name and password (``current_password`` required); admins may change
    anything of anyone, without ``current_password``."""

    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName | None = None
    password: NewPassword | None = None
    current_password: str | None = Field(default=None, max_length=1024)
    status: Literal["active", "disabled"] | None = None
    is_admin: bool | None = None


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    display_name: str
    status: Literal["active", "disabled"]
    is_admin: bool
    created_at: datetime
    updated_at: datetime
    version: int


class MembershipSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    client_id: uuid.UUID
    role: str


class UserMeRead(UserRead):
    memberships: list[MembershipSummary]
