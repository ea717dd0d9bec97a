"""The envelope every Baton event travels in: CloudEvents 1.0 plus Baton's extensions.

On NATS an envelope uses CloudEvents' *binary* mode: attributes as ``ce-*`` headers, ``data`` as the JSON
body, so a consumer can route and dedupe without parsing the body. In the outbox and in replay answers it
is stored in *structured* mode (the whole envelope as one JSON object, ``Envelope.model_dump(mode="json")``).

Header mapping (``to_nats`` / ``from_nats``)::

    ce-specversion ce-id ce-source ce-type ce-subject ce-time ce-dataschema   CloudEvents attributes
    ce-tenant ce-actor (JSON) ce-sequence ce-requestid                        Baton extensions
    traceparent tracestate                                                    W3C trace context
    Content-Type (= datacontenttype)  Nats-Msg-Id (= id, JetStream dedupe)

``ce-*`` values are percent-encoded where they must be (non-ASCII, control characters, space, ``%``).
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import quote, unquote

import orjson
from pydantic import BaseModel, ConfigDict, Field

from shared.events.catalog import Event, subject_for_type
from shared.messaging.errors import PoisonMessage

__all__ = ["Actor", "ActorKind", "Envelope", "NatsMessage", "from_nats", "to_nats"]

ActorKind = Literal["user", "agent", "service", "system"]
EventT = TypeVar("EventT", bound=Event)


class Actor(BaseModel):
    """Who caused the event: a person, a machine client, a service acting on its own, or the platform."""

    model_config = ConfigDict(frozen=True)

    subject: str
    kind: ActorKind
    name: str | None = None


class Envelope(BaseModel):
    """One event: CloudEvents 1.0 attributes, Baton's extensions, and ``data`` as a plain dict.

    ``subject`` is the CloudEvents subject (the id of the resource the event is about), not the NATS
    subject; that one is ``nats_subject``. ``sequence`` is the producer's gap-free sequence number: unset
    until the relay publishes the event. ``requestid`` is the id of the API request that caused the event
    (the ``X-Request-ID`` the caller sent or was given), when one did.
    """

    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    subject: str | None = None
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = None
    tenant: str | None = None
    actor: Actor
    traceparent: str | None = None
    tracestate: str | None = None
    sequence: int | None = Field(default=None, ge=1)
    requestid: str | None = Field(default=None, max_length=200)
    data: dict[str, Any]

    @property
    def nats_subject(self) -> str:
        """``baton.<service>.<aggregate>.<event>``: the type without its version."""
        return subject_for_type(self.type)

    def parse_data(self, event_cls: builtins.type[EventT]) -> EventT:
        """Validate ``data`` as ``event_cls``.

        Raises ``PoisonMessage`` when the envelope carries another type (a handler registered for the
        wrong event), and pydantic's ``ValidationError`` when the data does not fit; the consumer treats
        both as poison.
        """
        if self.type != event_cls.event_type:
            raise PoisonMessage(f"{self.type} cannot be read as {event_cls.event_type}")
        return event_cls.model_validate(self.data)


class NatsMessage(Protocol):
    """What ``from_nats`` needs from a message (``nats.aio.msg.Msg`` fits)."""

    @property
    def subject(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def headers(self) -> dict[str, str] | None: ...


# Percent-encode what is not printable ASCII, plus space and '%' (CloudEvents' HTTP binding rule, minus
# the double quote, which NATS headers carry fine), so any value survives header parsing, including
# its surrounding spaces, which the parser strips.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


def _encode(value: str) -> str:
    return quote(value, safe=_HEADER_SAFE)


def to_nats(envelope: Envelope) -> tuple[str, dict[str, str], bytes]:
    """``(subject, headers, body)`` for publishing ``envelope`` in binary mode."""
    attributes = {
        "ce-specversion": envelope.specversion,
        "ce-id": envelope.id,
        "ce-source": envelope.source,
        "ce-type": envelope.type,
        "ce-subject": envelope.subject,
        "ce-time": envelope.time.isoformat().replace("+00:00", "Z"),
        "ce-dataschema": envelope.dataschema,
        "ce-tenant": envelope.tenant,
        "ce-actor": orjson.dumps(envelope.actor.model_dump(mode="json")).decode(),
        "ce-sequence": None if envelope.sequence is None else str(envelope.sequence),
        "ce-requestid": envelope.requestid,
    }
    headers = {k: _encode(v) for k, v in attributes.items() if v is not None}
    headers["Content-Type"] = envelope.datacontenttype
    headers["Nats-Msg-Id"] = envelope.id
    if envelope.traceparent is not None:
        headers["traceparent"] = envelope.traceparent
    if envelope.tracestate is not None:
        headers["tracestate"] = envelope.tracestate
    return envelope.nats_subject, headers, orjson.dumps(envelope.data)


def from_nats(msg: NatsMessage) -> Envelope:
    """Rebuild the envelope of a message published by ``to_nats``.

    Anything that is not a Baton event (missing attributes, a body that is not a JSON object, an actor
    that does not parse) raises ``PoisonMessage``: redelivering it could never help.
    """
    headers = {
        k.lower(): unquote(v) if k.lower().startswith("ce-") else v for k, v in (msg.headers or {}).items()
    }
    try:
        data = orjson.loads(msg.data)
        actor = orjson.loads(headers["ce-actor"]) if "ce-actor" in headers else None
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PoisonMessage("event data must be a JSON object")
    sequence = headers.get("ce-sequence")
    fields: dict[str, Any] = {
        "specversion": headers.get("ce-specversion"),
        "id": headers.get("ce-id"),
        "source": headers.get("ce-source"),
        "type": headers.get("ce-type"),
        "subject": headers.get("ce-subject"),
        "time": headers.get("ce-time"),
        "datacontenttype": headers.get("content-type", "application/json"),
        "dataschema": headers.get("ce-dataschema"),
        "tenant": headers.get("ce-tenant"),
        "actor": actor,
        "traceparent": headers.get("traceparent"),
        "tracestate": headers.get("tracestate"),
        "sequence": int(sequence) if sequence and sequence.isdigit() else None,
        "requestid": headers.get("ce-requestid"),
        "data": data,
    }
    try:
        envelope = Envelope.model_validate(fields)
        envelope.nats_subject  # noqa: B018 - a type that is not baton.<service>...vN is not ours
    except ValueError as exc:  # pydantic's ValidationError included
        raise PoisonMessage(f"not a Baton event: {exc}") from exc
    return envelope
