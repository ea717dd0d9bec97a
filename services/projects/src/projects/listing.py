"""Keyset pagination and text filters shared by the clients and projects lists.

Lists are ordered newest first by id (UUIDv7 ids sort by creation time); the cursor holds the last id
of a page, so a page never shifts when rows are added while a caller pages through.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, or_

from shared.errors import BadRequest
from shared.http import decode_cursor, encode_cursor

__all__ = ["Slice", "after_id", "cursor_after", "slice_rows", "text_filter"]

T = TypeVar("T")


@dataclass(frozen=True)
class Slice(Generic[T]):
    """One page of rows and the cursor of the next one (None on the last page)."""

    items: list[T]
    next_cursor: str | None


def slice_rows(rows: Sequence[T], limit: int, key: Callable[[T], uuid.UUID]) -> Slice[T]:
    """``rows`` were fetched with ``limit + 1``: one extra row means there is a next page."""
    items = list(rows[:limit])
    more = len(rows) > limit and bool(items)
    return Slice(items=items, next_cursor=cursor_after(key(items[-1])) if more else None)


def after_id(cursor: str | None) -> uuid.UUID | None:
    """The id a cursor points after; a cursor that does not hold one is a 400."""
    value = decode_cursor(cursor)
    if value is None:
        return None
    try:
        return uuid.UUID(str(value["after"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise BadRequest("Invalid cursor", code="invalid_cursor") from exc


def cursor_after(last_id: uuid.UUID) -> str:
    return encode_cursor({"after": str(last_id)})


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def text_filter(q: str, *columns: Any) -> ColumnElement[bool]:
    """Case-insensitive substring match of ``q`` (taken literally, wildcards escaped) on any column."""
    pattern = f"%{_escape_like(q)}%"
    return or_(*(column.ilike(pattern, escape="\\") for column in columns))
