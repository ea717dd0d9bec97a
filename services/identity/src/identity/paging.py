"""Keyset pagination by UUIDv7 id (time-ordered): the cursor is the last id of the previous page."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import TypeVar

from shared.errors import BadRequest
from shared.http import decode_cursor, encode_cursor

__all__ = ["after_id", "next_cursor"]

T = TypeVar("T")


def after_id(cursor: str | None) -> uuid.UUID | None:
    values = decode_cursor(cursor)
    if values is None:
        return None
    try:
        return uuid.UUID(str(values["after"]))
    except (KeyError, ValueError):
        raise BadRequest("Invalid cursor", code="invalid_cursor") from None


def next_cursor(items: Sequence[T], limit: int, key: Callable[[T], uuid.UUID]) -> str | None:
    """A cursor when the page is full (there may be more), None on the last page."""
    if len(items) < limit or not items:
        return None
    return encode_cursor({"after": str(key(items[-1]))})
