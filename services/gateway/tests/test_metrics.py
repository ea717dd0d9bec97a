"""The gateway's request metrics: counted by the route table's pattern, served only on the metrics port."""

from __future__ import annotations

import random
import socket

import httpx
from prometheus_client.parser import text_string_to_metric_families

PROJECT = "0190f1d2-0000-7000-8000-0000000000a1"


def _port_outside_the_ephemeral_range() -> int:
    """A free port the kernel will not hand to the gateway's own socket (bound to port 0 after this)."""
    while True:
        port = random.randint(20000, 30000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _requests(text: str) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "baton_http_requests_total":
                out[(s.labels["method"], s.labels["route"], s.labels["status"])] = s.value
    return out


def test_requests_are_counted_by_route_pattern_never_by_raw_path(start_gateway, auth):
    port = _port_outside_the_ephemeral_range()
    gateway = start_gateway(metrics_port=port)
    with httpx.Client(base_url=gateway.url) as api:
        for _ in range(2):
            assert api.get(f"/v1/projects/{PROJECT}", headers=auth()).status_code == 200
        assert api.get(f"/v1/projects/{PROJECT}").status_code == 401
        assert api.get("/nowhere").status_code == 404
        assert api.get("/metrics").status_code == 404  # the public port never serves them
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    counted = _requests(text)
    assert counted[("GET", "projects:/v1/projects/{project_id}", "200")] == 2
    assert counted[("GET", "projects:/v1/projects/{project_id}", "401")] == 1
    assert counted[("GET", "unmatched", "404")] == 2  # /nowhere and /metrics
    assert not [route for _, route, _ in counted if PROJECT in route]
    assert "process_resident_memory_bytes" in text
