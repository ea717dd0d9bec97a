"""The event catalog, the envelope's wire format and emit's refusals (no broker involved)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import ClassVar

import pytest
from sqlalchemy import MetaData

from shared.db import transaction
from shared.events import (
    DuplicateEventType,
    Event,
    UnknownEventType,
    asyncapi_document,
    event_class,
    json_schemas,
    register,
    registered_events,
    schema_uri,
)
from shared.events.catalog import _unregister
from shared.messaging import (
    Actor,
    Envelope,
    PoisonMessage,
    UnregisteredEvent,
    add_messaging_tables,
    emit,
    from_nats,
    messaging_tables_ddl,
    to_nats,
)


@register
class WidgetShipped(Event):
    """A widget left the warehouse."""

    event_type: ClassVar[str] = "baton.catalogtest.widget.shipped.v1"
    widget_id: uuid.UUID
    carrier: str


@register
class WidgetShippedV2(Event):
    """A widget left the warehouse, with a tracking number."""

    event_type: ClassVar[str] = "baton.catalogtest.widget.shipped.v2"
    widget_id: uuid.UUID
    tracking: str


class NotInTheCatalog(Event):
    event_type: ClassVar[str] = "baton.catalogtest.widget.lost.v1"


def test_derived_names():
    assert WidgetShipped.event_subject == "baton.catalogtest.widget.shipped"
    assert (WidgetShipped.event_service, WidgetShipped.event_version) == ("catalogtest", 1)
    assert event_class("baton.catalogtest.widget.shipped.v2") is WidgetShippedV2
    with pytest.raises(UnknownEventType):
        event_class("baton.catalogtest.widget.melted.v1")


@pytest.mark.parametrize(
    "bad",
    [
        "projects.project.created.v1",
        "baton.projects.created.v1",
        "baton.projects.project.created",
        "baton.P.x.y.v1",
    ],
)
def test_malformed_types_fail_where_they_are_declared(bad):
    with pytest.raises(ValueError, match="must read"):

        class Bad(Event):
            event_type: ClassVar[str] = bad


def test_registering_a_second_class_for_a_type_fails():
    class Impostor(Event):
        event_type: ClassVar[str] = WidgetShipped.event_type

    with pytest.raises(DuplicateEventType, match="already registered"):
        register(Impostor)
    assert register(WidgetShipped) is WidgetShipped  # the same class again is harmless
    assert event_class(WidgetShipped.event_type) is WidgetShipped


def test_registration_can_be_undone_for_tests_only():
    class Temporary(Event):
        event_type: ClassVar[str] = "baton.catalogtest.widget.temporary.v1"

    register(Temporary)
    _unregister(Temporary.event_type)
    assert Temporary.event_type not in registered_events()


def test_asyncapi_document_has_a_channel_per_subject_and_a_message_per_type():
    doc = asyncapi_document()
    assert doc["asyncapi"] == "3.0.0"
    for event_type, cls in registered_events().items():
        channel = doc["channels"][cls.event_subject]
        assert channel["address"] == cls.event_subject
        assert channel["messages"][event_type] == {"$ref": f"#/components/messages/{event_type}"}
        message = doc["components"]["messages"][event_type]
        assert message["headers"]["properties"]["ce-type"] == {"const": event_type}
        ref = message["payload"]["$ref"]
        assert ref.startswith("#/components/schemas/")
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"]
    shipped = doc["channels"]["baton.catalogtest.widget.shipped"]["messages"]
    assert set(shipped) == {WidgetShipped.event_type, WidgetShippedV2.event_type}  # versions share a channel
    op = doc["operations"]["send.baton.catalogtest.widget.shipped"]
    assert op["action"] == "send"
    assert len(op["messages"]) == 2
    assert "widget.lost" not in str(doc)


def test_json_schemas_describe_each_registered_type():
    schemas = json_schemas()
    assert set(schemas) == set(registered_events())
    schema = schemas[WidgetShipped.event_type]
    assert schema["$id"] == schema_uri(WidgetShipped.event_type)
    assert schema["properties"]["widget_id"]["format"] == "uuid"
    assert set(schema["required"]) == {"widget_id", "carrier"}
    assert schema["description"] == "A widget left the warehouse."


def test_envelope_round_trips_through_nats_headers():
    env = Envelope(
        id=str(uuid.uuid4()),
        source="/baton/catalogtest",
        type=WidgetShipped.event_type,
        subject=' w-1 50% naïve"x" ',
        time=datetime(2025, 1, 2, 3, 4, 5, 600000, tzinfo=UTC),
        dataschema=schema_uri(WidgetShipped.event_type),
        tenant="c-1",
        actor=Actor(subject="agent-7", kind="agent", name="Zoë bot"),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        sequence=42,
        requestid="req 7/ü",
        data={"widget_id": str(uuid.uuid4()), "carrier": "ups"},
    )
    subject, headers, body = to_nats(env)
    assert subject == "baton.catalogtest.widget.shipped"
    assert headers["Nats-Msg-Id"] == headers["ce-id"] == env.id
    assert headers["ce-time"] == "2025-01-02T03:04:05.600000Z"
    assert headers["ce-sequence"] == "42"
    assert headers["Content-Type"] == "application/json"
    assert all(v.isascii() for v in headers.values())

    class Msg:
        def __init__(self, subject, headers, data):
            self.subject, self.headers, self.data = subject, headers, data

    back = from_nats(Msg(subject, {k.upper(): v for k, v in headers.items()}, body))
    assert back == env
    assert back.parse_data(WidgetShipped).carrier == "ups"
    with pytest.raises(PoisonMessage):
        back.parse_data(WidgetShippedV2)
    for broken in ({**headers, "ce-actor": "{"}, {k: v for k, v in headers.items() if k != "ce-type"}):
        with pytest.raises(PoisonMessage):
            from_nats(Msg(subject, broken, body))
    with pytest.raises(PoisonMessage):
        from_nats(Msg(subject, headers, b"[1, 2]"))


def test_ddl_and_metadata_helpers():
    ddl = "\n".join(messaging_tables_ddl())
    for table in ("outbox", "outbox_state", "inbox", "dead_letters"):
        assert f"CREATE TABLE {table} (" in ddl
    assert "WHERE sent_at IS NULL" in ddl
    md = MetaData(schema="svc")
    first = add_messaging_tables(md)
    assert add_messaging_tables(md) == first
    assert first.outbox.schema == "svc"


async def test_emit_refuses_unregistered_events_and_foreign_services(db):
    actor = Actor(subject="u", kind="user")
    async with transaction(db.sessions) as session:
        with pytest.raises(UnregisteredEvent, match="not registered"):
            await emit(session, NotInTheCatalog(), tenant=None, actor=actor, resource_id="x")
        with pytest.raises(ValueError, match="belongs to catalogtest"):
            await emit(
                session,
                WidgetShipped(widget_id=uuid.uuid4(), carrier="dhl"),
                tenant=None,
                actor=actor,
                resource_id="x",
                source_service="projects",
            )
        env = await emit(
            session,
            WidgetShipped(widget_id=uuid.uuid4(), carrier="dhl"),
            tenant=None,
            actor=actor,
            resource_id=uuid.UUID(int=7),
        )
    [row] = await db.outbox_rows()
    assert str(row.id) == env.id
    assert row.subject == "baton.catalogtest.widget.shipped"
    assert row.payload["subject"] == str(uuid.UUID(int=7))
    assert "tenant" not in row.payload
    assert row.sent_at is None
    assert row.sequence is None
