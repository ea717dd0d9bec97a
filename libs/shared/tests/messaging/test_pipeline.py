"""The whole path in one process: emit → relay → JetStream → consumer, with tracing and run_worker."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from typing import ClassVar

import httpx
import pytest
from fastapi import APIRouter
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import insert

from shared.app import create_app
from shared.auth.testing import TokenFactory
from shared.db import transaction
from shared.events import Event, register
from shared.http import SessionDep
from shared.messaging import Actor, ConsumerRunner, OutboxRelay, emit, run_worker, stream_name, typed_handler
from shared.settings import BaseServiceSettings

SERVICE = "pipelinetest"
ACTOR = Actor(subject="u-9", kind="user")


@register
class ThingTraced(Event):
    """Something happened inside a traced request (test event)."""

    event_type: ClassVar[str] = "baton.pipelinetest.thing.traced.v1"
    n: int


@pytest.fixture
def exporter():
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # the processor stays on the global provider; a shut-down exporter drops spans


def components(db, nats_url, on_event, **consumer_kwargs):
    relay = OutboxRelay(db.sessions, nats_url, SERVICE, poll_interval=0.2, max_backoff=0.5)
    consumer = ConsumerRunner(
        db.sessions,
        nats_url,
        consumer="tests-pipeline",
        stream=stream_name(SERVICE),
        subjects=[f"baton.{SERVICE}.>"],
        handlers={ThingTraced.event_type: typed_handler(ThingTraced, on_event)},
        fetch_timeout=0.2,
        backoff=[0.2],
        **consumer_kwargs,
    )
    return relay, consumer


async def emit_thing(db, n: int) -> str:
    async with transaction(db.sessions) as session:
        env = await emit(session, ThingTraced(n=n), tenant=uuid.uuid4(), actor=ACTOR, resource_id=f"t-{n}")
    return env.id


async def test_one_trace_from_emit_through_publish_to_the_handler(
    db, nats_url, clean_jetstream, exporter, eventually
):
    seen: list[int] = []

    async def on_event(session, event: ThingTraced) -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)

    relay, consumer = components(db, nats_url, on_event)
    with trace.get_tracer("tests").start_as_current_span("POST /v1/things") as request_span:
        await emit_thing(db, 1)
    root = request_span.get_span_context()
    try:
        assert await relay.relay_once() == 1
        await eventually(lambda: _processed(consumer))
    finally:
        await relay.close()
        await consumer.close()

    spans = {s.name: s for s in exporter.get_finished_spans()}
    publish = spans["baton.pipelinetest.thing.traced publish"]
    process = spans["baton.pipelinetest.thing.traced process"]
    assert publish.kind == SpanKind.PRODUCER
    assert process.kind == SpanKind.CONSUMER
    assert publish.context.trace_id == process.context.trace_id == root.trace_id
    assert publish.parent.span_id == root.span_id
    assert process.parent.span_id == publish.context.span_id
    assert seen == [root.trace_id]  # the handler runs inside the consumer span


async def test_an_api_request_s_trace_and_request_id_reach_the_handler(
    db, nats_url, clean_jetstream, exporter, eventually
):
    """From an HTTP request through ``create_app``'s middleware: the caller's trace and request id are on
    the event, across the relay and JetStream, in the handler."""
    router = APIRouter()

    @router.post("/things", status_code=201)
    async def make_thing(session: SessionDep) -> dict[str, str]:
        env = await emit(session, ThingTraced(n=7), tenant=uuid.uuid4(), actor=ACTOR, resource_id="t-7")
        return {"event_id": env.id}

    settings = BaseServiceSettings(
        service_name=SERVICE, database_url="postgresql+asyncpg://unused/db", nats_url=nats_url, log_json=False
    )
    app = create_app(settings, [router], token_verifier=TokenFactory().verifier(), engine=db.engine)
    seen: list[tuple[int, str | None]] = []

    async def on_event(session, envelope) -> None:
        seen.append((trace.get_current_span().get_span_context().trace_id, envelope.requestid))

    relay, consumer = components(db, nats_url, None)
    consumer.handlers = {ThingTraced.event_type: on_event}
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.post(
                "/things",
                headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "x-request-id": "req-abc-42"},
            )
    assert r.status_code == 201, r.text
    try:
        assert await relay.relay_once() == 1
        await eventually(lambda: _processed(consumer))
    finally:
        await relay.close()
        await consumer.close()
    assert seen == [(int(trace_id, 16), "req-abc-42")]


async def _processed(consumer) -> bool:
    await consumer.process_batch(timeout=0.2)
    return consumer.stats.processed == 1


async def test_run_worker_runs_relay_and_consumer_until_sigterm(db, nats_url, clean_jetstream, eventually):
    async def on_event(session, event: ThingTraced) -> None:
        await session.execute(insert(db.effects).values(event_id=uuid.uuid4(), consumer=str(event.n)))

    relay, consumer = components(db, nats_url, on_event)
    worker = asyncio.create_task(run_worker(relay, consumer))
    for n in range(20):
        await emit_thing(db, n)
    await eventually(lambda: _effects_are(db, 20))

    os.kill(os.getpid(), signal.SIGTERM)  # run_worker's handler turns it into a graceful stop
    await asyncio.wait_for(worker, 10)
    assert relay.stats.published == 20
    assert consumer.stats.processed == 20
    assert not relay.is_leader


async def _effects_are(db, n: int) -> bool:
    return await db.effect_count() == n


async def test_run_worker_stops_everything_when_one_component_fails():
    class Fails:
        async def run(self) -> None:
            raise RuntimeError("boom")

        def stop(self) -> None:
            pass

    class Waits:
        stopped = False

        def __init__(self) -> None:
            self.event = asyncio.Event()

        async def run(self) -> None:
            await self.event.wait()

        def stop(self) -> None:
            self.stopped = True
            self.event.set()

    waits = Waits()
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(run_worker(Fails(), waits), 5)
    assert waits.stopped
