"""HTTP shapes of the token endpoints (RFC 6749 section 5.1 responses)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LoginRequest", "LogoutRequest", "TokenResponse"]


class LoginRequest(BaseModel):
    """No password rules here: a password that could never be valid simply fails like a wrong one."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=1, max_length=320, pattern=r"^[^\x00]*$")  # Postgres text holds no NUL
    password: str = Field(min_length=1, max_length=1024)


class LogoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=512)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int
    refresh_token: str | None = None
    scope: str | None = None
    issued_token_type: str | None = None
