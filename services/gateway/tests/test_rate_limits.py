"""Token buckets per principal and per IP, in a gateway with small limits."""

from __future__ import annotations

import httpx


async def test_principal_rate_limit_is_429_with_retry_after(start_gateway, auth):
    server = start_gateway(rate_per_principal=0.2, burst_per_principal=3, rate_per_ip=1000, burst_per_ip=1000)
    async with httpx.AsyncClient(base_url=server.url) as c:
        alice = auth("alice")
        statuses = [(await c.get("/v1/tasks", headers=alice)).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = await c.get("/v1/tasks", headers=alice)
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        assert limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 5
        assert "x-upstream" not in limited.headers
        # A new token of the same subject shares the bucket; another subject has its own.
        assert (await c.get("/v1/tasks", headers=auth("alice"))).status_code == 429
        assert (await c.get("/v1/tasks", headers=auth("bob"))).status_code == 200


async def test_ip_rate_limit_applies_to_anonymous_and_public_routes(start_gateway):
    server = start_gateway(rate_per_ip=0.2, burst_per_ip=2)
    async with httpx.AsyncClient(base_url=server.url) as c:
        first = [(await c.post("/v1/auth/login", json={})).status_code for _ in range(2)]
        assert first == [200, 200]
        limited = await c.post("/v1/auth/login", json={})
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        # The gateway's own probes are never limited.
        assert (await c.get("/healthz")).status_code == 200
