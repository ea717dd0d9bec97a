"""From a JetStream message (or a replayed envelope) to an ``EntryDraft``.

Nothing is ever refused here: a message that is not a readable Baton event becomes a *raw* draft (headers
and body kept, flagged, on the platform chain), because the audit log must not drop what it was given.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any, Literal

from audit.chain.canonical import EntryDraft, bound_payload, normalize_json
from shared.events.catalog import parse_event_type
from shared.messaging import Envelope, from_nats
from shared.messaging.envelope import NatsMessage

__all__ = [
    "RAW_CAUSES",
    "draft_from_envelope",
    "draft_from_message",
    "is_raw",
    "producer_of_stream",
    "raw_draft",
    "trace_id_of",
]

_MAX_FIELD = 200


def producer_of_stream(stream: str, prefix: str = "BATON_") -> str:
    """``BATON_PROJECTS`` → ``projects``: the service whose relay numbers and replays the stream."""
    return (stream[len(prefix) :] if stream.startswith(prefix) else stream).lower()


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<trace>-<span>-<flags>``), if well-formed."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) >= 4 and len(parts[1]) == 32 and all(c in "0123456789abcdef" for c in parts[1]):
        return parts[1]
    return None


def _clip(value: str | None, limit: int = _MAX_FIELD) -> str | None:
    return None if value is None else value[:limit]


def _resource_type(event_type: str) -> str | None:
    try:
        _, subject, _ = parse_event_type(event_type)
    except ValueError:
        return None
    words = subject.split(".")[2:-1]  # drop "baton", the service, and the verb
    return ".".join(words) or None


def draft_from_envelope(
    envelope: Envelope,
    *,
    stream: str | None,
    stream_sequence: int | None,
    producer: str | None,
    max_payload_bytes: int,
) -> EntryDraft:
    client_id: uuid.UUID | None = None
    flags: list[str] = []
    if envelope.tenant:
        try:
            client_id = uuid.UUID(envelope.tenant)
        except ValueError:
            flags.append("tenant_not_a_client_id")
    payload, normalized = normalize_json(envelope.data)
    if normalized:
        flags.append("payload_normalized")
    payload, truncated = bound_payload(payload, max_payload_bytes)
    if envelope.tenant and client_id is None:
        payload = {"tenant": envelope.tenant[:_MAX_FIELD], "data": payload}
    return EntryDraft(
        event_id=envelope.id[:_MAX_FIELD],
        action=envelope.type[:_MAX_FIELD],
        payload=payload,
        client_id=client_id,
        occurred_at=envelope.time,
        actor_subject=_clip(envelope.actor.subject),
        actor_kind=envelope.actor.kind,
        actor_name=_clip(envelope.actor.name),
        resource_type=_clip(_resource_type(envelope.type), 100),
        resource_id=_clip(envelope.subject),
        trace_id=trace_id_of(envelope.traceparent),
        request_id=_clip(envelope.requestid, 128),
        payload_truncated=truncated,
        source_stream=stream,
        stream_sequence=stream_sequence,
        producer=producer,
        producer_sequence=envelope.sequence,
        flagged=bool(flags),
        flag_reason=",".join(flags) or None,
    )


RAW_CAUSES = ("unparseable", "refused")


def is_raw(draft: EntryDraft) -> bool:
    """Whether a draft keeps a message as it came (``raw_draft``) rather than an event read from it."""
    return draft.flag_reason is not None and draft.flag_reason.startswith(tuple(f"{c}:" for c in RAW_CAUSES))


def raw_draft(
    msg: NatsMessage,
    *,
    stream: str,
    stream_sequence: int | None,
    reason: str,
    max_payload_bytes: int,
    cause: Literal["unparseable", "refused"] = "unparseable",
) -> EntryDraft:
    """A message kept as it came (headers, body as text or base64), flagged with why it was not read as an
    event: ``unparseable`` (not an event at all) or ``refused`` (readable, but the log kept refusing it)."""
    headers = {str(k)[:_MAX_FIELD]: str(v)[:2048] for k, v in (msg.headers or {}).items()}
    text: str | None
    try:
        text = msg.data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    body: dict[str, Any] = (
        {"body_text": text}
        if text is not None and "\x00" not in text
        else {"body_base64": base64.b64encode(msg.data).decode("ascii")}
    )
    payload, _ = normalize_json({"subject": msg.subject, "headers": headers, **body})
    payload, truncated = bound_payload(payload, max_payload_bytes)
    lowered = {k.lower(): v for k, v in headers.items()}
    sequence = lowered.get("ce-sequence", "")
    key = f"raw:{stream}:{stream_sequence}" if stream_sequence is not None else f"raw:{uuid.uuid4()}"
    return EntryDraft(
        event_id=key[:_MAX_FIELD],
        action=(lowered.get("ce-type") or msg.subject)[:_MAX_FIELD],
        payload=payload,
        payload_truncated=truncated,
        source_stream=stream,
        stream_sequence=stream_sequence,
        producer=producer_of_stream(stream),
        producer_sequence=int(sequence) if sequence.isdigit() else None,
        flagged=True,
        flag_reason=f"{cause}: {reason}"[:_MAX_FIELD],
    )


def draft_from_message(
    msg: NatsMessage, *, stream: str, stream_sequence: int | None, producer: str, max_payload_bytes: int
) -> tuple[EntryDraft, bool]:
    """The draft for a consumed message, and whether it parsed as an event (raw drafts do not count as
    seeing their producer sequence: a replay may still bring the readable original)."""
    try:
        envelope = from_nats(msg)
    except Exception as exc:  # PoisonMessage, or anything else a hostile message provokes
        return (
            raw_draft(
                msg,
                stream=stream,
                stream_sequence=stream_sequence,
                reason=str(exc),
                max_payload_bytes=max_payload_bytes,
            ),
            False,
        )
    draft = draft_from_envelope(
        envelope,
        stream=stream,
        stream_sequence=stream_sequence,
        producer=producer,
        max_payload_bytes=max_payload_bytes,
    )
    return draft, True
