"""Prometheus metrics: a worker's ``/metrics`` tells an operator the outbox's backlog and age, each consumer's
pending messages and dead letters; an API's request counts and latencies are served on a port of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from typing import ClassVar

import httpx
import pytest
from fastapi import APIRouter
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from shared.app import create_app
from shared.auth.testing import TokenFactory
from shared.db import transaction
from shared.embedded import free_port
from shared.events import Event, register
from shared.messaging import (
    Actor,
    ConsumerRunner,
    OutboxRelay,
    PoisonMessage,
    emit,
    run_worker,
    stream_name,
    typed_handler,
)
from shared.metrics import Exposition, family
from shared.settings import BaseServiceSettings

SERVICE = "metricstest"
ACTOR = Actor(subject="svc-metricstest", kind="service")


@register
class GaugeRead(Event):
    """A gauge was read (test event)."""

    event_type: ClassVar[str] = "baton.metricstest.gauge.read.v1"
    n: int


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by name and labels."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scrape[(name, frozenset(labels.items()))]


async def emit_reads(db, count: int) -> None:
    async with transaction(db.sessions) as session:
        for n in range(count):
            await emit(session, GaugeRead(n=n), tenant=uuid.uuid4(), actor=ACTOR, resource_id=f"gauge-{n}")


async def test_a_worker_serves_the_outbox_and_consumer_metrics(db, nats_url, clean_jetstream, eventually):
    await emit_reads(db, 3)
    await asyncio.sleep(1.1)
    relay = OutboxRelay(db.sessions, nats_url, SERVICE, poll_interval=0.2)
    # Before the relay runs: three events wait, the oldest for over a second, and nobody leads.
    before = samples(_render(await relay.metrics()))
    this = {"service": SERVICE}
    assert value(before, "baton_outbox_unpublished_events", **this) == 3
    assert value(before, "baton_outbox_oldest_unpublished_age_seconds", **this) >= 1.0
    assert value(before, "baton_relay_leader", **this) == 0

    async def apply(session, event: GaugeRead) -> None:
        if event.n == 1:
            raise PoisonMessage("gauge 1 cannot be read")

    consumer = ConsumerRunner(
        db.sessions,
        nats_url,
        consumer="metricstest-reads",
        stream=stream_name(SERVICE),
        subjects=[f"baton.{SERVICE}.>"],
        handlers={GaugeRead.event_type: typed_handler(GaugeRead, apply)},
        fetch_timeout=0.2,
    )
    port = free_port()
    worker = asyncio.create_task(run_worker(relay, consumer, health_port=port))
    labels = {"stream": stream_name(SERVICE), "consumer": "metricstest-reads"}
    scrape: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def settled() -> bool:
                nonlocal scrape
                try:
                    r = await http.get("/metrics")
                except httpx.TransportError:
                    return False  # not listening yet
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/plain")
                scrape = samples(r.text)
                try:
                    # Settled as JetStream and the database see it too: acks, term and sent marks are in.
                    return (
                        value(scrape, "baton_consumer_dead_letters", **labels) == 1
                        and value(scrape, "baton_consumer_messages_total", outcome="processed", **labels) == 2
                        and value(scrape, "baton_consumer_ack_pending_messages", **labels) == 0
                        and value(scrape, "baton_outbox_unpublished_events", **this) == 0  # marked sent
                    )
                except KeyError:
                    return False

            await eventually(settled)
    finally:
        relay.stop()
        consumer.stop()
        await asyncio.wait_for(worker, 15)
    assert value(scrape, "baton_outbox_unpublished_events", **this) == 0
    assert value(scrape, "baton_outbox_oldest_unpublished_age_seconds", **this) == 0
    assert value(scrape, "baton_relay_leader", **this) == 1
    assert value(scrape, "baton_relay_published_events_total", **this) == 3
    assert value(scrape, "baton_consumer_pending_messages", **labels) == 0
    assert value(scrape, "baton_consumer_ack_pending_messages", **labels) == 0
    assert value(scrape, "baton_consumer_messages_total", outcome="dead_lettered", **labels) == 1
    assert value(scrape, "process_resident_memory_bytes") > 0


def _render(families: Iterable[Metric]) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    class Fixed:
        def collect(self) -> Iterable[Metric]:
            return families

    registry = CollectorRegistry()
    registry.register(Fixed())  # type: ignore[arg-type]
    return generate_latest(registry).decode()


class Fine:
    async def metrics(self) -> list[Metric]:
        return [family("gauge", "baton_fine", "A source that answers", [({"part": "a"}, 7.0)])]


class Broken:
    async def metrics(self) -> list[Metric]:
        raise ConnectionError("database away")


class Slow:
    async def metrics(self) -> list[Metric]:
        await asyncio.sleep(60)
        return []


async def test_a_failing_or_slow_source_costs_only_its_own_metrics():
    exposition = Exposition([Broken(), Slow(), Fine()], timeout=0.2)
    for scrapes in (1, 2):
        scrape = samples((await exposition.render()).decode())
        assert value(scrape, "baton_fine", part="a") == 7.0
        assert value(scrape, "baton_metrics_source_errors_total", source="Broken") == scrapes
        assert value(scrape, "baton_metrics_source_errors_total", source="Slow") == scrapes


router = APIRouter()


@router.get("/v1/gauges/{gauge_id}")
async def read_gauge(gauge_id: int) -> dict[str, int]:
    return {"id": gauge_id}


@pytest.mark.parametrize("configured", [True, False], ids=["metrics-port", "no-metrics-port"])
async def test_an_api_counts_requests_by_route_template_on_its_metrics_port(
    database_url, nats_url, configured
):
    port = free_port()
    settings = BaseServiceSettings(
        service_name="gauges",
        database_url=database_url,
        nats_url=nats_url,
        log_json=False,
        metrics_port=port if configured else None,
    )
    app = create_app(settings, [router], token_verifier=TokenFactory().verifier())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
            for gauge in (1, 2, 3):
                assert (await api.get(f"/v1/gauges/{gauge}")).status_code == 200
            assert (await api.get("/v1/gauges/not-a-number")).status_code == 422
            assert (await api.get("/metrics")).status_code == 404  # never on the API's own port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as side:
            if not configured:
                with pytest.raises(httpx.ConnectError):
                    await side.get("/metrics")
                return
            scrape = samples((await side.get("/metrics")).text)
            assert (await side.get("/readyz")).json()["checks"] == {"database": "ok", "nats": "ok"}
    route = "/v1/gauges/{gauge_id}"
    assert value(scrape, "baton_http_requests_total", method="GET", route=route, status="200") == 3
    assert value(scrape, "baton_http_requests_total", method="GET", route=route, status="422") == 1
    assert value(scrape, "baton_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert value(scrape, "baton_http_request_duration_seconds_count", method="GET", route=route) == 4
