"""Request and response details both routers share: the principal dependencies, headers, query types."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Query, Response

from projects.policy import READ_SCOPE, WRITE_SCOPE
from shared.auth import Principal, require_scopes
from shared.http import SessionDep, etag_for

__all__ = ["CursorParam", "IfMatch", "Reader", "SearchParam", "Session", "Writer", "problems", "set_etag"]

Session = SessionDep

# Agents need the scope; users and admins pass here and are judged per object in the service.
Reader = Annotated[Principal, Depends(require_scopes(READ_SCOPE))]
Writer = Annotated[Principal, Depends(require_scopes(WRITE_SCOPE))]
IfMatch = Annotated[
    str | None,
    Header(max_length=256, description="The ETag last read; the change is refused (412) if it moved on"),
]
CursorParam = Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")]
SearchParam = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00]*$",  # Postgres text cannot hold NUL: refused here (422), not a 500 in the query
        description="Case-insensitive literal substring of the name (and slug or description)",
    ),
]


def set_etag(response: Response, version: int) -> None:
    response.headers["ETag"] = etag_for(version)


_PROBLEMS = {
    400: "Malformed cursor, or a request body that is not valid JSON",
    401: "Missing or invalid bearer token",
    403: "Authenticated, but the role or token scope does not allow this",
    404: "No such resource, or one the caller may not see (the same answer for both)",
    409: "Conflicts with the current state (duplicate name or slug, archived client, status transition)",
    412: "If-Match names a version that is no longer current",
    413: "Request body too large",
    422: "Invalid input, or fields the caller may not set",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the RFC 9457 problems an operation can answer with."""
    schema = {"type": "object", "required": ["type", "title", "status", "code", "detail"]}
    return {
        status: {
            "description": _PROBLEMS[status],
            "content": {"application/problem+json": {"schema": schema}},
        }
        for status in statuses
    }
