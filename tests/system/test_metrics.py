"""Prometheus metrics of the running platform: every worker replica answers ``/metrics`` on its probe port,
exactly one replica per service reports leading its outbox relay, the outboxes drain, no consumer keeps a
dead letter, and the APIs count the requests they answered by route template on their metrics ports.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.slow]

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Samples:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    out: Samples = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def workers(platform: Any) -> list[tuple[Any, int]]:
    stack = platform.stack
    return [
        (s, stack.side_port(s, "worker", i))
        for s in platform.services
        if s.module_exists("worker")
        for i in range(stack.replicas)
    ]


def test_workers_report_their_outbox_and_consumers(platform: Any, helpers: Any) -> None:
    admin = helpers.login(platform.gateway_url, platform.admin_email, platform.admin_password, "admin")
    admin.post("/v1/clients", 201, json={"name": "Metered", "slug": f"metered-{time.time_ns()}"})
    deadline = time.monotonic() + 60
    while True:
        leaders: dict[str, float] = {}
        unpublished = 0.0
        scrapes = [(service, scrape(port)) for service, port in workers(platform)]
        for service, samples in scrapes:
            for labels, value in samples["baton_relay_leader"]:
                assert labels["service"] == service.name
                leaders[service.name] = leaders.get(service.name, 0.0) + value
            unpublished += sum(v for _, v in samples["baton_outbox_unpublished_events"])
        # identity's worker consumes projects' client.created: once declared, JetStream's view of it shows.
        identity = [labels for service, samples in scrapes if service.name == "identity"
                    for labels, _ in samples.get("baton_consumer_pending_messages", [])]  # fmt: skip
        consuming = any(labels["stream"] == "BATON_PROJECTS" for labels in identity)
        if (unpublished == 0 and consuming) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert unpublished == 0
    assert leaders == {service.name: 1.0 for service, _ in scrapes}  # one leader per service
    for service, samples in scrapes:
        for labels, age in samples["baton_outbox_oldest_unpublished_age_seconds"]:
            assert age == 0, (service.name, labels)
        dead = {labels["consumer"]: value for labels, value in samples.get("baton_consumer_dead_letters", [])}
        assert all(value == 0 for value in dead.values()), (service.name, dead)
        assert "process_resident_memory_bytes" in samples
    assert consuming, identity


def test_apis_count_requests_by_route_template(platform: Any, helpers: Any) -> None:
    admin = helpers.login(platform.gateway_url, platform.admin_email, platform.admin_password, "admin")
    client = admin.post("/v1/clients", 201, json={"name": "Counted", "slug": f"counted-{time.time_ns()}"})
    stack = platform.stack
    projects = next(s for s in platform.services if s.name == "projects")

    def answered(samples: Samples) -> float:
        return sum(
            value
            for labels, value in samples.get("baton_http_requests_total", [])
            if labels["route"] == "/v1/clients/{client_id}" and labels["status"] == "200"
        )

    before = sum(answered(scrape(stack.side_port(projects, "api", i))) for i in range(stack.replicas))
    for _ in range(4):
        admin.get(f"/v1/clients/{client['id']}")
    after = sum(answered(scrape(stack.side_port(projects, "api", i))) for i in range(stack.replicas))
    assert after - before == 4
    gateways = [s for s in platform.services if s.name == "gateway"]
    routed = [
        labels["route"]
        for i in range(stack.replicas)
        for labels, _ in scrape(stack.side_port(gateways[0], "api", i)).get("baton_http_requests_total", [])
    ]
    assert "projects:/v1/clients*" in routed
    assert not [r for r in routed if client["id"] in r]
