"""The errors token verification raises; all are 401s rendered as problem+json by ``shared.errors``.

``detail`` is short and fixed per failure so nothing about keys, libraries or claim values leaks.
"""

from __future__ import annotations

from shared.errors import Unauthorized

__all__ = ["InvalidToken", "KeySetUnavailable", "bearer_challenge"]


def bearer_challenge(error: str | None = None) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of RFC 6750 section 3, with an optional error code."""
    value = "Bearer" if error is None else f'Bearer error="{error}"'
    return {"WWW-Authenticate": value}


class InvalidToken(Unauthorized):
    """A presented bearer token was rejected. ``code`` says why: ``invalid_token``, ``token_expired``,
    ``token_not_yet_valid`` or ``token_revoked``."""

    code = "invalid_token"
    title = "Invalid token"

    def __init__(self, detail: str | None = None, *, code: str | None = None) -> None:
        super().__init__(detail, code=code, headers=bearer_challenge("invalid_token"))


class KeySetUnavailable(Unauthorized):
    """The issuer's keys could not be fetched and the cached set is older than the stale bound:
    verification fails closed rather than trusting nothing or everything."""

    code = "jwks_unavailable"
    title = "Token keys unavailable"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "The token signing keys are unavailable", headers=bearer_challenge())
