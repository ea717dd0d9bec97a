"""The event catalog: the base class for event data models, the global registry, and the documents
generated from it (one JSON Schema per event type, one AsyncAPI 3.0 document for all of them).

Contract for a producing service (``shared/events/<service>.py``)::

    @register
    class ProjectCreated(Event):
        \"\"\"A project was created for a client.\"\"\"

        event_type: ClassVar[str] = "baton.projects.project.created.v1"
        project_id: UUID
        client_id: UUID
        name: str

The type names the producer (``projects``), the aggregate (``project``), what happened (``created``, past
tense; more dotted words are allowed: ``document.version.created``) and the schema version. A change that
would break an existing reader gets a new version (``.v2``), registered next to the old one; both travel on
the same NATS subject (the type without ``.vN``). Only registered types can be emitted, so every event
on the wire is described by the generated documents.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

__all__ = [
    "SCHEMA_URI_PREFIX",
    "DuplicateEventType",
    "Event",
    "UnknownEventType",
    "asyncapi_document",
    "event_class",
    "is_registered",
    "json_schemas",
    "parse_event_type",
    "register",
    "registered_events",
    "schema_uri",
    "subject_for_type",
]

# ``dataschema`` of every envelope and ``$id`` of every generated schema: a URN, so it names the schema
# without promising a host that serves it (the files live in docs/events/schemas/<type>.json).
SCHEMA_URI_PREFIX = "urn:baton:event-schema:"

_WORD = r"[a-z][a-z0-9_]*"
_TYPE_RE = re.compile(
    rf"^baton\.(?P<service>{_WORD})\.(?P<name>{_WORD}(?:\.{_WORD})+)\.v(?P<version>[1-9][0-9]*)$"
)


class DuplicateEventType(ValueError):
    """Two different classes claim the same event type: one of them would silently lose."""


class UnknownEventType(KeyError):
    """No registered class for this type (a typo, a module not imported, or an event from the future)."""


def parse_event_type(event_type: str) -> tuple[str, str, int]:
    """Split ``baton.<service>.<aggregate>.<event>.v<N>`` into (service, subject, version).

    Raises ``ValueError`` for anything else, so a malformed type fails where it is declared.
    """
    match = _TYPE_RE.match(event_type)
    if match is None:
        raise ValueError(
            f"event type {event_type!r} must read baton.<service>.<aggregate>.<event>.v<N> "
            "(lowercase words, version from 1)"
        )
    subject = event_type.rsplit(".", 1)[0]
    return match["service"], subject, int(match["version"])


def subject_for_type(event_type: str) -> str:
    """The NATS subject an event type travels on: the type without its ``.vN`` suffix."""
    return parse_event_type(event_type)[1]


def schema_uri(event_type: str) -> str:
    """The ``dataschema`` URI of an event type (also the ``$id`` of its generated JSON Schema)."""
    return f"{SCHEMA_URI_PREFIX}{event_type}"


class Event(BaseModel):
    """Base of every event *data* model: immutable, JSON-serializable, versioned by ``event_type``.

    Readers ignore fields they do not know (``extra="ignore"``), so a producer may add optional fields
    within a version without breaking consumers. ``event_subject``, ``event_service`` and
    ``event_version`` are derived from ``event_type`` when the class is defined. They are not named
    ``subject``/``service`` so that data models stay free to have fields with those names.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    event_subject: ClassVar[str]
    event_service: ClassVar[str]
    event_version: ClassVar[int]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        # Intermediate bases without their own type are allowed; only concrete events are checked.
        if "event_type" in cls.__dict__:
            service, subject, version = parse_event_type(cls.event_type)
            cls.event_service = service
            cls.event_subject = subject
            cls.event_version = version


_REGISTRY: dict[str, type[Event]] = {}
_EventClassT = TypeVar("_EventClassT", bound=type[Event])


def register(cls: _EventClassT) -> _EventClassT:
    """Class decorator: add an event class to the catalog.

    Registering the same class again is a no-op (a re-imported module); a different class with an
    already registered type raises ``DuplicateEventType``.
    """
    if not (isinstance(cls, type) and issubclass(cls, Event)):
        raise TypeError(f"{cls!r} is not an Event subclass")
    if "event_type" not in cls.__dict__:
        raise TypeError(f"{cls.__qualname__} must declare event_type: ClassVar[str]")
    existing = _REGISTRY.get(cls.event_type)
    if existing is not None and existing is not cls:
        raise DuplicateEventType(
            f"{cls.event_type} is already registered by {existing.__module__}.{existing.__qualname__}"
        )
    _REGISTRY[cls.event_type] = cls
    return cls


def registered_events() -> dict[str, type[Event]]:
    """Every registered event class by type, sorted by type (a copy: mutating it changes nothing)."""
    return dict(sorted(_REGISTRY.items()))


def is_registered(cls: type[Event]) -> bool:
    """Whether this exact class is the registered one for its type."""
    return _REGISTRY.get(getattr(cls, "event_type", "")) is cls


def event_class(event_type: str) -> type[Event]:
    """The registered class for a type; ``UnknownEventType`` if there is none."""
    try:
        return _REGISTRY[event_type]
    except KeyError:
        raise UnknownEventType(event_type) from None


def _unregister(event_type: str) -> None:
    """Test support only: forget a type so a test can register it again."""
    _REGISTRY.pop(event_type, None)


def _describe(cls: type[Event]) -> str:
    return (cls.__doc__ or "").strip()


def json_schemas() -> dict[str, dict[str, Any]]:
    """One standalone JSON Schema (draft 2020-12) per registered type, keyed by type.

    The schema describes ``data`` as producers write it (serialization mode), with ``$id`` equal to the
    envelope's ``dataschema``.
    """
    out: dict[str, dict[str, Any]] = {}
    for event_type, cls in registered_events().items():
        schema = cls.model_json_schema(mode="serialization")
        out[event_type] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": schema_uri(event_type),
            **schema,
            "x-baton-event-type": event_type,
            "x-baton-subject": cls.event_subject,
        }
    return out


_REQUIRED_HEADERS = (
    "ce-specversion",
    "ce-id",
    "ce-source",
    "ce-type",
    "ce-time",
    "ce-actor",
    "Content-Type",
    "Nats-Msg-Id",
)


def _header_schema(cls: type[Event]) -> dict[str, Any]:
    """CloudEvents binary-mode attributes as NATS headers (see ``shared.messaging.envelope``)."""
    string = {"type": "string"}
    return {
        "type": "object",
        "description": "CloudEvents 1.0 binary mode. ce-* values are percent-encoded where needed "
        "(non-ASCII, control characters, space, %).",
        "required": list(_REQUIRED_HEADERS),
        "properties": {
            "ce-specversion": {"const": "1.0"},
            "ce-id": {**string, "format": "uuid", "description": "Event id (UUIDv7); equals Nats-Msg-Id."},
            "ce-source": {**string, "description": "Producing service, e.g. /baton/projects."},
            "ce-type": {"const": cls.event_type},
            "ce-subject": {**string, "description": "Id of the resource the event is about."},
            "ce-time": {**string, "format": "date-time"},
            "ce-dataschema": {"const": schema_uri(cls.event_type)},
            "ce-tenant": {**string, "description": "Client (tenant) id; absent for platform-level events."},
            "ce-actor": {
                **string,
                "contentMediaType": "application/json",
                "description": 'Who caused it: {"subject": ..., "kind": "user|agent|service|system", "name": ...}',
            },
            "ce-sequence": {
                **string,
                "pattern": "^[1-9][0-9]*$",
                "description": "Gap-free per-producer sequence assigned by the outbox relay.",
            },
            "ce-requestid": {
                **string,
                "description": "Id of the API request that caused the event (its X-Request-ID), when one did.",
            },
            "traceparent": {**string, "description": "W3C trace context of the producing span."},
            "tracestate": string,
            "Content-Type": {"const": "application/json"},
            "Nats-Msg-Id": {
                **string,
                "description": "Event id; JetStream drops duplicates within its window.",
            },
        },
    }


def asyncapi_document(*, title: str = "Baton events", version: str = "1.0.0") -> dict[str, Any]:
    """An AsyncAPI 3.0 document: one channel per subject, one message per registered type (versions of an
    event share their channel), payloads from the pydantic models, CloudEvents headers."""
    events = registered_events()
    refs, defs = models_json_schema(
        [(cls, "serialization") for cls in events.values()],
        ref_template="#/components/schemas/{model}",
    )
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event_type, cls in events.items():
        subject = cls.event_subject
        channel = channels.setdefault(
            subject,
            {
                "address": subject,
                "title": subject,
                "description": f"Published by the {cls.event_service} service's outbox relay to the "
                f"BATON_{cls.event_service.upper()} stream.",
                "messages": {},
            },
        )
        channel["messages"][event_type] = {"$ref": f"#/components/messages/{event_type}"}
        operation = operations.setdefault(
            f"send.{subject}",
            {
                "action": "send",
                "channel": {"$ref": f"#/channels/{subject}"},
                "summary": f"{cls.event_service} publishes {subject}",
                "messages": [],
            },
        )
        operation["messages"].append({"$ref": f"#/channels/{subject}/messages/{event_type}"})
        message: dict[str, Any] = {
            "name": event_type,
            "title": cls.__name__,
            "contentType": "application/json",
            "headers": _header_schema(cls),
            "payload": refs[(cls, "serialization")],
            "correlationId": {"location": "$message.header#/ce-id"},
        }
        if description := _describe(cls):
            message["summary"] = description.splitlines()[0]
            message["description"] = description
        messages[event_type] = message
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Facts published by Baton services through their transactional outboxes. "
            "CloudEvents 1.0 in binary mode: attributes in ce-* headers, data as the JSON body.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": defs.get("$defs", {})},
    }
