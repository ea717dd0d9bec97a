"""HTTP conventions every service follows: the transactional session dependency, cursor pages, ETags,
and the OpenAPI declaration of the problem answers (``problems``)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query, Request
from pydantic import BaseModel, BeforeValidator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import PROBLEM_CONTENT_TYPE, BadRequest, PreconditionFailed, PreconditionRequired

__all__ = [
    "JSON_INTEGER",
    "MAX_PAGE_LIMIT",
    "PROBLEM_SCHEMA",
    "WHITE_SPACE",
    "LimitParam",
    "Page",
    "SessionDep",
    "check_if_match",
    "decode_cursor",
    "encode_cursor",
    "etag_for",
    "get_session",
    "problems",
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


def _json_integer(value: object) -> object:
    """JSON Schema's ``integer``: ``5`` and ``5.0`` are integers, ``"5"`` and ``true`` are not (pydantic's
    lax mode would take them; its strict mode would refuse ``5.0``)."""
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number")
    return value


# Unicode White_Space, spelled out for patterns: what pydantic's ``strip_whitespace`` removes. ``\s``
# reads differently in JSON Schema (ECMA-262: no U+0085, but U+FEFF) and in Python (U+001C-U+001F too),
# so a documented pattern that says "not blank" names these characters instead: ``[^{WHITE_SPACE}]``.
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

# The last metadata of an ``int`` field of a JSON body, after its ``Field`` constraints (placed before
# them, it would hide ``ge``/``le`` from the JSON schema): ``Annotated[int, Field(ge=1), JSON_INTEGER]``.
JSON_INTEGER = BeforeValidator(_json_integer)


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


# The body ``shared.errors.problem_response`` renders (RFC 9457 plus ``code``, ``request_id`` and, for
# 422, the ``errors`` of the request validation); an error may add members of its own.
PROBLEM_SCHEMA: dict[str, Any] = {
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
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
_RETRY_AFTER = {"description": "Seconds to wait before retrying", "schema": {"type": "integer", "minimum": 1}}
_DESCRIPTIONS = {
    400: "Malformed request: a cursor that does not decode, or a body that cannot be parsed",
    401: "Missing, invalid or revoked bearer token",
    403: "Authenticated, but the caller's role or token scopes do not allow this",
    404: "No such resource, or one the caller may not see (the same answer for both)",
    409: "Conflicts with the current state of the resource",
    412: "If-Match names a version that is no longer current",
    413: "Request body too large",
    415: "The request body's media type is not accepted here",
    422: "Invalid input (``errors`` lists each problem of a request that does not match the schema)",
    428: "This change needs an If-Match header",
    429: "Too many requests; retry after Retry-After",
    503: "A backing service (the database) is unavailable; retry shortly",
}


def problems(
    *statuses: int, described: Mapping[int, str] | None = None, unavailable: bool = True
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the RFC 9457 problems an operation answers with, each as
    ``application/problem+json`` (declaring 422 replaces FastAPI's default ``HTTPValidationError``).

    ``described`` words a status for this operation (which conflict, which precondition). 503 is declared
    on every operation unless ``unavailable=False`` (an operation that reaches no backing service): any
    request that needs the database is answered 503 while the database is away. 500 is never declared:
    it is a bug, not part of the contract.
    """
    wanted = sorted({*statuses, 503} if unavailable else set(statuses))
    responses: dict[int | str, dict[str, Any]] = {}
    for status in wanted:
        text = (described or {}).get(status) or _DESCRIPTIONS[status]
        response: dict[str, Any] = {
            "description": text,
            "content": {PROBLEM_CONTENT_TYPE: {"schema": copy.deepcopy(PROBLEM_SCHEMA)}},
        }
        if status == 429:
            response["headers"] = {"Retry-After": {**copy.deepcopy(_RETRY_AFTER), "required": True}}
        elif status == 503:
            response["headers"] = {"Retry-After": copy.deepcopy(_RETRY_AFTER)}
        responses[status] = response
    return responses
