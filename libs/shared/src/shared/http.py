"""HTTP conventions every service follows: the transactional session dependency, cursor pages, ETags."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import BadRequest, PreconditionFailed, PreconditionRequired

__all__ = [
    "MAX_PAGE_LIMIT",
    "LimitParam",
    "Page",
    "SessionDep",
    "check_if_match",
    "decode_cursor",
    "encode_cursor",
    "etag_for",
    "get_session",
    "session_factory",
]

MAX_PAGE_LIMIT = 100
T = TypeVar("T")


def session_factory(request: Request) -> async_sessionmaker[AsyncSession]:
    factory = request.app.state.resources.session_factory
    assert factory is not None, "this app was created without a database"
    return factory  # type: ignore[no-any-return]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the handler returns, rolled back when it raises."""
    factory = session_factory(request)
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": the commit happens before the response is sent, so a 2xx means the write is durable.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
LimitParam = Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT, description="Page size (1-100)")]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(values: dict[str, Any]) -> str:
    raw = json.dumps(values, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    """Parse an opaque cursor; a tampered or foreign one is a 400, not a 500."""
    if not cursor:
        return None
    if len(cursor) > 512:
        raise BadRequest("Invalid cursor", code="invalid_cursor")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("Invalid cursor", code="invalid_cursor") from exc
    if not isinstance(value, dict):
        raise BadRequest("Invalid cursor", code="invalid_cursor")
    return value


def etag_for(version: int | str) -> str:
    return f'"{version}"'


def check_if_match(if_match: str | None, current_version: int, *, required: bool = False) -> None:
    """Optimistic concurrency: ``If-Match`` must name the current version (412 otherwise)."""
    if if_match is None:
        if required:
            raise PreconditionRequired("This request needs an If-Match header", code="if_match_required")
        return
    candidates = [c.strip().removeprefix("W/") for c in if_match.split(",")]
    if "*" in candidates or etag_for(current_version) in candidates:
        return
    raise PreconditionFailed(
        "The resource changed since you read it; fetch it again and retry", code="version_mismatch"
    )
