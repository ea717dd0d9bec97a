"""Input conventions shared by the clients and projects schemas: bounded, Postgres-safe field types and
the base of every PATCH body.

Postgres rejects NUL in text and NaN/Infinity in JSONB; both would be 500s, so they are refused here.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.http import WHITE_SPACE

__all__ = [
    "MAX_METADATA_BYTES",
    "Description",
    "Metadata",
    "Name",
    "Patch",
    "ShortText",
    "Slug",
    "WorkflowRef",
    "check_metadata",
]

MAX_METADATA_BYTES = 8192
MAX_METADATA_DEPTH = 5
MAX_METADATA_KEYS = 50
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_EXCEPT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _single_line(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _text(value: str) -> str:
    if _CONTROL_EXCEPT_WHITESPACE.search(value):
        raise ValueError("must not contain control characters other than tab and newline")
    return value


# Documented as "some character that is not white space": surrounding white space is stripped, so a blank
# name is too short.
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_single_line),
    Field(json_schema_extra={"pattern": f"[^{WHITE_SPACE}]"}),
]
ShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(_single_line)
]
Description = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(_text)]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")]
# A project type or BMAD workflow id: "fullstack", "greenfield-service", "method-brownfield", ...
WorkflowRef = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]


def _check_value(value: Any, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"must not nest deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or "\x00" in key or len(key) > 64:
                raise ValueError("keys must be strings of at most 64 characters")
            _check_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
    elif value is not None and not isinstance(value, bool | int):
        raise ValueError("must be JSON")


def check_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Free-form metadata: at most 50 top-level keys, 5 levels deep, 8 KiB of JSON."""
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"must have at most {MAX_METADATA_KEYS} keys")
    _check_value(value, 1)
    if len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
        raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes of JSON")
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(check_metadata)]


class Patch(BaseModel):
    """A partial update: unknown fields are refused, only the fields sent count, and ``null`` is refused
    (no field of ours can be cleared to null; send ``{}`` or ``""`` where empty is allowed)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_nulls(self) -> Patch:
        nulls = [name for name in self.model_fields_set if getattr(self, name) is None]
        if nulls:
            raise ValueError(f"fields cannot be null: {', '.join(sorted(nulls))}")
        return self

    def changes(self) -> dict[str, Any]:
        """The sent fields and their values (nested models stay models)."""
        return {name: getattr(self, name) for name in self.model_fields_set}
