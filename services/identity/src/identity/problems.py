"""OpenAPI ``responses`` for the RFC 9457 problems identity's routes answer with.

``shared.errors`` renders every error as ``application/problem+json``; declaring them keeps the OpenAPI
document true to what clients receive (status codes, media type, body shape).
"""

from __future__ import annotations

from typing import Any

__all__ = ["problems"]

_DESCRIPTIONS = {
    400: "Malformed cursor, or a request body that is not valid JSON",
    401: "Missing, invalid or revoked bearer token (at login: wrong email or password)",
    403: "Authenticated, but the caller's role does not allow this",
    404: "No such resource, or one the caller may not see (the same answer for both)",
    409: "Conflicts with the current state (email taken, last administrator, last product owner)",
    412: "If-Match names a version that is no longer current",
    413: "Request body too large",
    422: "Invalid input",
    429: "Too many failed logins; retry after the Retry-After header",
    503: "No signing key is available yet",
}
_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
    },
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route or router: each status as a problem document."""
    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "content": {"application/problem+json": {"schema": _SCHEMA}},
        }
        for status in statuses
    }
