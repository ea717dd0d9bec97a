"""Pure rules: canonical hashing, payload normalization and bounds, sequence bookkeeping, signatures."""

from __future__ import annotations

import hashlib
import typing
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import rfc8785
from audit.chain.canonical import (
    GENESIS_HASH,
    EntryDraft,
    EntryRecord,
    bound_payload,
    canonical_bytes,
    format_time,
    normalize_json,
)
from audit.checkpoints.signing import Keyring, Signer, statement
from audit.ingest.mapping import producer_of_stream, trace_id_of
from audit.ingest.sequences import SequenceState
from audit.retention.service import add_months
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _record(**draft_fields) -> EntryRecord:
    draft = EntryDraft(
        event_id="e1", action="baton.x.y.created.v1", payload={"b": 1, "a": [1, 2]}, **draft_fields
    )
    return EntryRecord(
        id=uuid.UUID(int=1),
        chain_id=draft.chain_id,
        sequence=1,
        recorded_at=T0,
        prev_hash=GENESIS_HASH,
        draft=draft,
    ).sealed()


def test_hash_is_sha256_of_the_canonical_document():
    base = _record()
    assert len(base.hash) == 64
    assert base.compute_hash() == base.hash
    doc = base.document()
    assert rfc8785.dumps(doc).startswith(b'{"action":')  # canonical key order
    assert base.hash == hashlib.sha256(rfc8785.dumps(doc)).hexdigest()


def _samples(hint: Any) -> tuple[Any, Any]:
    """Two different values of a field's type (an optional field's other type)."""
    kinds = [k for k in typing.get_args(hint) if k is not type(None)]
    kind = kinds[0] if kinds else hint
    return {
        str: ("a", "b"),
        int: (1, 2),
        bool: (False, True),
        uuid.UUID: (uuid.UUID(int=1), uuid.UUID(int=2)),
        datetime: (T0, T0 + timedelta(microseconds=1)),
        Any: ({"a": [1, 2]}, {"a": [2, 1]}),
    }[kind]  # a KeyError: a field of a new type, give it two samples here


# Every field that goes into the hashed document: the draft's and the record's own, derived from the
# dataclasses, so a field added later is covered (or fails here) without touching this test.
_DRAFT_HINTS = typing.get_type_hints(EntryDraft)
_RECORD_HINTS = {k: v for k, v in typing.get_type_hints(EntryRecord).items() if k not in ("draft", "hash")}
_HASHED_FIELDS = sorted({*_DRAFT_HINTS, *_RECORD_HINTS})


def _full_record(**changes: Any) -> EntryRecord:
    """A record with every field set (first sample), but for ``changes``."""
    draft = EntryDraft(**{name: changes.get(name, _samples(hint)[0]) for name, hint in _DRAFT_HINTS.items()})
    own = {name: changes.get(name, _samples(hint)[0]) for name, hint in _RECORD_HINTS.items()}
    return EntryRecord(**own, draft=draft).sealed()


@pytest.mark.parametrize("name", _HASHED_FIELDS)
def test_hash_covers_every_field_and_prev_hash(name):
    base = _full_record()
    hint = {**_DRAFT_HINTS, **_RECORD_HINTS}[name]
    assert _full_record(**{name: _samples(hint)[1]}).hash != base.hash
    if type(None) in typing.get_args(hint):
        assert _full_record(**{name: None}).hash != base.hash


def test_time_format_is_utc_microseconds():
    other_zone = T0.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    assert format_time(other_zone) == "2025-03-01T12:00:00.123456Z"
    assert format_time(None) is None


def test_normalize_makes_values_faithful_for_jsonb_and_jcs():
    value, changed = normalize_json(
        {"big": 2**60, "ok": 5, "f": 1e300, "nul": "a\x00b", "n": [1.5, None, True]}
    )
    assert changed
    assert value["big"] == str(2**60)
    assert value["ok"] == 5
    assert isinstance(value["f"], str)
    assert "\x00" not in value["nul"]
    rfc8785.dumps(value)  # representable
    same, unchanged = normalize_json({"a": [1, 2.5, "x"], "b": {"c": None}})
    assert not unchanged
    assert same == {"a": [1, 2.5, "x"], "b": {"c": None}}


def test_bound_payload_replaces_oversized_with_digest_stub():
    small, truncated = bound_payload({"a": "x" * 10}, 1024)
    assert not truncated
    assert small == {"a": "x" * 10}
    stub, truncated = bound_payload({"a": "x" * 5000}, 1024)
    assert truncated
    assert stub["truncated"] is True
    assert stub["size"] > 1024
    assert len(stub["sha256"]) == 64
    assert len(rfc8785.dumps(stub)) <= 1024


def test_sequence_state_tracks_high_water_and_gaps():
    now = T0
    s = SequenceState()
    s.observe([1, 2, 3], now)
    assert (s.high_water, s.gaps) == (3, [])
    s.observe([6, 7, 9], now)
    assert s.high_water == 3
    assert [(g.start, g.end) for g in s.gaps] == [(4, 5), (8, 8)]
    later = now + timedelta(seconds=10)
    s.observe([4], later)  # partial heal keeps the original "since"
    assert [(g.start, g.end, g.since) for g in s.gaps] == [(5, 5, now), (8, 8, now)]
    assert s.due(now + timedelta(seconds=1), grace_seconds=5, retry_seconds=10) == []
    due = s.due(later, grace_seconds=5, retry_seconds=10)
    assert [(g.start, g.end) for g in due] == [(5, 5), (8, 8)]
    s.mark_requested(due[0], later)
    assert [(g.start, g.end) for g in s.due(later, grace_seconds=5, retry_seconds=10)] == [(8, 8)]
    s.observe([5, 8, 5, 2], later)  # duplicates and old ones are harmless
    assert (s.high_water, s.gaps, s.max_seen) == (9, [], 9)


def test_sequence_state_lost_tail_and_lost_gaps():
    s = SequenceState()
    s.observe([1, 2], T0)
    s.report_last(5, T0)
    assert s.holes() == [(3, 5)]
    s.mark_lost(below=4)
    assert s.gaps[0].lost
    assert s.due(T0 + timedelta(hours=1), grace_seconds=0, retry_seconds=0) == []
    s.observe([3, 4, 5], T0)
    assert s.gaps == []
    assert s.high_water == 5


def test_checkpoint_signature_round_trip_and_rejections():
    signer = Signer.derived("some secret")
    assert signer.key_id == Signer.derived("some secret").key_id  # deterministic
    doc = statement(
        chain="platform", client_id=None, sequence=7, hash_="a" * 64, created_at=T0, key_id=signer.key_id
    )
    signature = signer.sign(doc)
    keyring = Keyring(signer.public)
    assert keyring.verify(signer.key_id, doc, signature)
    assert not keyring.verify(signer.key_id, {**doc, "sequence": 8}, signature)
    assert not keyring.verify("audit-unknown", doc, signature)
    assert not keyring.verify(signer.key_id, doc, "not base64 !!")
    jwk = signer.jwk()
    assert (jwk["kty"], jwk["crv"], jwk["kid"]) == ("OKP", "Ed25519", signer.key_id)
    # A retired key still verifies old checkpoints when listed.
    new = Signer.derived("another secret")
    rotated = Keyring(new.public, [jwk["x"]])
    assert rotated.verify(signer.key_id, doc, signature)
    with pytest.raises(ValueError, match="32 bytes"):
        Signer.from_seed("c2hvcnQ")


def test_small_helpers():
    assert producer_of_stream("BATON_PROJECTS") == "projects"
    assert trace_id_of("00-" + "a" * 32 + "-" + "b" * 16 + "-01") == "a" * 32
    assert trace_id_of("garbage") is None
    assert add_months(datetime(2025, 1, 15, tzinfo=UTC), -2) == datetime(2024, 11, 1, tzinfo=UTC)
    assert add_months(datetime(2025, 12, 1, tzinfo=UTC), 1) == datetime(2026, 1, 1, tzinfo=UTC)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_fast_canonical_form_is_exactly_rfc8785(value):
    """``canonical_bytes`` (orjson where provably equal) and the reference implementation agree."""
    try:
        expected = rfc8785.dumps(value)
    except Exception:
        return  # not representable (e.g. a lone surrogate): normalization keeps such values out
    assert canonical_bytes(value) == expected
    record = EntryRecord(
        id=uuid.UUID(int=7), chain_id="platform", sequence=3, recorded_at=T0, prev_hash=GENESIS_HASH,
        draft=EntryDraft(event_id="e", action="a", payload=value),
    )  # fmt: skip
    assert record.compute_hash() == hashlib.sha256(rfc8785.dumps(record.document())).hexdigest()


def test_settled_up_to_stops_at_the_first_hole_and_steps_over_lost_ones() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    state = SequenceState()
    assert state.settled_up_to() == 0
    state.observe([1, 2, 3, 6, 7], now)
    assert state.settled_up_to() == 3  # 4 must come first
    state.report_last(12, now)
    state.mark_lost(below=6)  # the producer no longer has 4..5: nothing to wait for
    assert state.settled_up_to() == 7
    state.observe([9], now)
    assert state.settled_up_to() == 7


def test_an_entry_keeps_the_request_and_trace_of_its_event() -> None:
    from audit.ingest.mapping import draft_from_envelope

    from shared.messaging import Actor, Envelope

    env = Envelope(
        id=str(uuid.uuid4()),
        source="/baton/projects",
        type="baton.projects.project.created.v1",
        subject="p-1",
        time=datetime(2026, 1, 1, tzinfo=UTC),
        tenant=str(uuid.uuid4()),
        actor=Actor(subject="u-1", kind="user"),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        requestid="req-77",
        data={"name": "x"},
    )
    draft = draft_from_envelope(env, stream="BATON_PROJECTS", stream_sequence=3, producer="projects",
                                max_payload_bytes=65536)  # fmt: skip
    assert (draft.request_id, draft.trace_id) == ("req-77", "0af7651916cd43dd8448eb211c80319c")
