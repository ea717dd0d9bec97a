"""Request and response details both routers share: the principal dependencies, headers, query types."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Response

from projects.policy import READ_SCOPE, WRITE_SCOPE
from shared.auth import Principal, require_scopes
from shared.http import SessionDep, etag_for

__all__ = ["CursorParam", "IfMatch", "Reader", "SearchParam", "Session", "Writer", "set_etag"]

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
