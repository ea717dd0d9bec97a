"""What an entry's hash covers, and how payloads are made safe for both JSONB and RFC 8785.

An entry's hash is ``SHA-256(JCS(document))`` where ``document`` is ``entry_document(...)``: every
recorded field plus ``prev_hash``. Verification rebuilds the same document from the stored row, so every
value must survive a round trip through Postgres unchanged: times are rendered at microsecond precision in
UTC, and payloads are normalized once at ingestion (integers beyond 2^53, non-finite floats and NUL
characters cannot be represented faithfully by JCS or JSONB, so they become strings).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import rfc8785

__all__ = [
    "DOCUMENT_VERSION",
    "GENESIS_HASH",
    "PLATFORM_CHAIN",
    "EntryDraft",
    "EntryRecord",
    "bound_payload",
    "canonical_bytes",
    "chain_for",
    "format_time",
    "normalize_json",
    "sha256_hex",
]

DOCUMENT_VERSION = 1
GENESIS_HASH = "0" * 64
PLATFORM_CHAIN = "platform"
_MAX_SAFE_INT = 2**53 - 1
_MAX_DEPTH = 64


def _orjson_is_jcs(value: Any, depth: int = 0) -> bool:
    """Whether orjson's sorted output is byte-for-byte RFC 8785 for ``value``: no floats (ECMAScript number
    formatting differs), integers in the safe range, ASCII keys (UTF-16 vs code point order can differ
    beyond the BMP). Strings are escaped identically (checked by the tests). Hot path: exact type checks."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_MAX_SAFE_INT <= value <= _MAX_SAFE_INT)
    if depth > _MAX_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii() or not _orjson_is_jcs(item, depth + 1):
                return False
        return True
    if kind is list:
        return all(_orjson_is_jcs(item, depth + 1) for item in value)
    return False


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 (JCS) serialization: orjson where it provably gives the same bytes (much faster), the
    reference implementation otherwise."""
    if _orjson_is_jcs(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # e.g. a lone surrogate: let the reference decide
            pass
    return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def format_time(value: datetime | None) -> str | None:
    """UTC, microseconds, ``Z``: the one textual form of a time inside a hashed document."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_for(client_id: uuid.UUID | None) -> str:
    return str(client_id) if client_id is not None else PLATFORM_CHAIN


def normalize_json(value: Any, _depth: int = 0) -> tuple[Any, bool]:
    """A JSON value both JSONB and JCS store faithfully; the flag says whether anything was changed."""
    if _depth > _MAX_DEPTH:
        return "<too deep>", True
    if value is None or isinstance(value, bool):
        return value, False
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            return str(value), True
        return value, False
    if isinstance(value, float):
        # JSONB renders 1e16 as a 17-digit integer, which reads back as an int beyond JCS's domain.
        if not math.isfinite(value) or abs(value) > _MAX_SAFE_INT:
            return repr(value), True
        return value, False
    if isinstance(value, str):
        if "\x00" in value:
            return value.replace("\x00", "\ufffd"), True
        return value, False
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        changed = False
        for k, v in value.items():
            key, key_changed = normalize_json(str(k), _depth + 1)
            item, item_changed = normalize_json(v, _depth + 1)
            out[key] = item
            changed = changed or key_changed or item_changed or not isinstance(k, str)
        return out, changed
    if isinstance(value, list | tuple):
        items = []
        changed = False
        for v in value:
            item, item_changed = normalize_json(v, _depth + 1)
            items.append(item)
            changed = changed or item_changed
        return items, changed
    return str(value), True


def bound_payload(value: Any, max_bytes: int) -> tuple[Any, bool]:
    """The payload itself when its canonical form fits ``max_bytes``; else a stub naming its size and
    digest (so the original can still be matched against the producer's copy). Returns (payload, truncated)."""
    # orjson's compact form has the canonical form's length up to number formatting: a cheap first check.
    if len(orjson.dumps(value)) <= max_bytes // 2:
        return value, False
    encoded = canonical_bytes(value)
    if len(encoded) <= max_bytes:
        return value, False
    preview = encoded[: min(1024, max_bytes // 4)].decode("utf-8", errors="ignore")
    return {"truncated": True, "size": len(encoded), "sha256": sha256_hex(encoded), "preview": preview}, True


@dataclass(frozen=True, slots=True)
class EntryDraft:
    """What ingestion (or the service itself) wants recorded; the chain assigns the rest."""

    event_id: str
    action: str
    payload: Any
    client_id: uuid.UUID | None = None
    occurred_at: datetime | None = None
    actor_subject: str | None = None
    actor_kind: str | None = None
    actor_name: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    payload_truncated: bool = False
    source_stream: str | None = None
    stream_sequence: int | None = None
    producer: str | None = None
    producer_sequence: int | None = None
    flagged: bool = False
    flag_reason: str | None = None

    @property
    def chain_id(self) -> str:
        return chain_for(self.client_id)


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """A chained entry: the draft plus identity, position, time and hashes."""

    id: uuid.UUID
    chain_id: str
    sequence: int
    recorded_at: datetime
    prev_hash: str
    draft: EntryDraft
    hash: str = ""

    def document(self) -> dict[str, Any]:
        """The hashed document (everything but ``hash`` itself)."""
        d = self.draft
        return {
            "v": DOCUMENT_VERSION,
            "id": str(self.id),
            "chain": self.chain_id,
            "sequence": self.sequence,
            "client_id": None if d.client_id is None else str(d.client_id),
            "event_id": d.event_id,
            "recorded_at": format_time(self.recorded_at),
            "occurred_at": format_time(d.occurred_at),
            "actor": {"subject": d.actor_subject, "kind": d.actor_kind, "name": d.actor_name},
            "action": d.action,
            "resource": {"type": d.resource_type, "id": d.resource_id},
            "request_id": d.request_id,
            "trace_id": d.trace_id,
            "payload": d.payload,
            "payload_truncated": d.payload_truncated,
            "source": {
                "stream": d.source_stream,
                "stream_sequence": d.stream_sequence,
                "producer": d.producer,
                "producer_sequence": d.producer_sequence,
            },
            "flagged": d.flagged,
            "flag_reason": d.flag_reason,
            "prev_hash": self.prev_hash,
        }

    def compute_hash(self) -> str:
        doc = self.document()
        d = self.draft
        # Every field but the payload has a fixed shape (ASCII keys, strings, booleans, null, integers):
        # only the payload and the integers decide whether the fast serializer is exact.
        if _orjson_is_jcs(d.payload) and all(
            v is None or abs(v) <= _MAX_SAFE_INT
            for v in (self.sequence, d.stream_sequence, d.producer_sequence)
        ):
            try:
                return sha256_hex(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
            except orjson.JSONEncodeError:
                pass
        return sha256_hex(rfc8785.dumps(doc))

    def sealed(self) -> EntryRecord:
        return EntryRecord(
            id=self.id,
            chain_id=self.chain_id,
            sequence=self.sequence,
            recorded_at=self.recorded_at,
            prev_hash=self.prev_hash,
            draft=self.draft,
            hash=self.compute_hash(),
        )
