"""Errors of the token endpoints.

``OAuthError`` is rendered as RFC 6749 section 5.2 JSON (``{"error", "error_description"}``) by the
token router, not as problem+json, because OAuth clients parse that shape. Both it and
``InvalidCredentials`` are recorded rejections: the failure counters, events and revocations written
before them are committed.
"""

from __future__ import annotations

from typing import Literal

from identity.transactions import RecordedRejection
from shared.errors import Unauthorized

__all__ = ["InvalidCredentials", "OAuthError", "OAuthErrorCode"]

OAuthErrorCode = Literal[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
]


class InvalidCredentials(RecordedRejection, Unauthorized):
    """The one answer to every failed password login: unknown email, wrong password, disabled account."""

    code = "invalid_credentials"
    title = "Invalid credentials"

    def __init__(self) -> None:
        super().__init__("The email or password is incorrect")


class OAuthError(RecordedRejection):
    def __init__(self, error: OAuthErrorCode, description: str, *, status: int | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        # invalid_client is a 401 (with a Basic challenge); everything else a 400 (RFC 6749 5.2).
        self.status = status or (401 if error == "invalid_client" else 400)

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}
