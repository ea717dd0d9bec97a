"""Prometheus metrics, served on a port of their own (never on a public API port).

Workers serve ``/metrics`` beside their probes on ``BATON_WORKER_HEALTH_PORT``; API processes serve it on
``BATON_METRICS_PORT`` when set. What an operator watches is computed when Prometheus scrapes, from the
database and JetStream (``MetricsSource``): the age of the oldest unpublished outbox row, each consumer's
pending and redelivered messages and dead letters. Process metrics (memory, CPU, open files) and the HTTP
request counters and latencies of an API come from prometheus_client's own collectors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "Exposition",
    "HttpMetrics",
    "MetricsSource",
    "family",
    "route_template",
]

log = logging.getLogger(__name__)

Labels = Mapping[str, str]


@runtime_checkable
class MetricsSource(Protocol):
    """Anything that can say, when asked, how it is doing (a relay, a consumer runner, ...)."""

    async def metrics(self) -> Iterable[Metric]: ...


def family(
    kind: Literal["gauge", "counter"], name: str, documentation: str, samples: Iterable[tuple[Labels, float]]
) -> Metric:
    """One metric family; every sample carries the same label names (those of the first)."""
    rows = list(samples)
    names = list(rows[0][0]) if rows else []
    metric: GaugeMetricFamily | CounterMetricFamily
    if kind == "gauge":
        metric = GaugeMetricFamily(name, documentation, labels=names)
    else:
        metric = CounterMetricFamily(name, documentation, labels=names)
    for labels, value in rows:
        metric.add_metric([labels[n] for n in names], value)
    return metric


class _Snapshot:
    """A collector that hands the registry what the async sources said at this scrape."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def describe(self) -> list[Metric]:
        return []  # names vary with the sources; nothing to check up front

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class Exposition:
    """The text a scrape gets: process metrics, ``registry``'s collectors, then every source's families.

    A source that fails or takes longer than ``timeout`` is left out of that scrape and counted in
    ``baton_metrics_source_errors_total``, so one broken dependency never hides the other metrics.
    """

    def __init__(
        self,
        sources: Sequence[MetricsSource] = (),
        *,
        registry: CollectorRegistry | None = None,
        timeout: float = 3.0,
    ) -> None:
        self.sources = list(sources)
        self.timeout = timeout
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)  # type: ignore[arg-type]  # duck-typed collector
        self._errors = Counter(
            "baton_metrics_source_errors",
            "Scrapes where a metrics source failed or timed out",
            ["source"],
            registry=self.registry,
        )
        self._lock = asyncio.Lock()

    async def render(self) -> bytes:
        async with self._lock:  # one scrape at a time: the snapshot is shared
            families: list[Metric] = []
            for source in self.sources:
                try:
                    families.extend(await asyncio.wait_for(source.metrics(), self.timeout))
                except Exception as exc:
                    name = type(source).__name__
                    log.warning("metrics source %s failed: %r", name, exc)
                    self._errors.labels(name).inc()
            self._snapshot.families = families
            try:
                return generate_latest(self.registry)
            finally:
                self._snapshot.families = []


def route_template(scope: Scope) -> str:
    """The matched route's template (``/v1/projects/{project_id}``): ids would make unbounded labels."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else "unmatched"


class HttpMetrics:
    """ASGI middleware: requests counted by method, route template and status; durations by route."""

    def __init__(
        self,
        app: ASGIApp,
        registry: CollectorRegistry,
        *,
        route_of: Callable[[Scope], str] = route_template,
    ) -> None:
        self.app = app
        self.route_of = route_of
        self.requests = Counter(
            "baton_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "baton_http_request_duration_seconds",
            "Time to the start of the response, by method and route template",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before answering
        route: str | None = None  # known once routing is done: at the response's start

        async def record(message: Message) -> None:
            nonlocal status, route
            if message["type"] == "http.response.start":
                status = int(message["status"])
                route = self.route_of(scope)
                self.duration.labels(scope["method"], route).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self.requests.labels(scope["method"], route or self.route_of(scope), str(status)).inc()
