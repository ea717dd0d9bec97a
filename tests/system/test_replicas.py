"""Two replicas of every service (two API and two worker processes each, two gateways) over one database
and one NATS: what must hold when work is shared.

- one outbox relay is active per service (the other replica stands by);
- both replicas of a consumer pull from the same durable consumer (the work is shared, not doubled);
- a task claimed at the same moment through both gateways, by two agents, goes to exactly one;
- the audit chains stay gap-free, each producer's events in its own order, and verify;
- once the gateways have seen an API replica killed with SIGKILL go (its connections closed), it costs
  no request, not even a POST: every gateway routes to both replicas and sends a request whose
  connection is refused to the other one. A request already sent to it when it died still fails.

The journey (test_journey.py) runs on the same replicated platform, its requests spread over both gateways.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

PASSWORD = "Replicas-passw0rd-1"
RACES = 4


@pytest.fixture(scope="module")
def replicated(platform: Any) -> Any:
    if platform.stack.replicas < 2:
        pytest.skip("the platform runs one replica (BATON_SYSTEM_REPLICAS=1)")
    return platform


async def test_one_relay_is_active_per_service(replicated: Any) -> None:
    conn = await replicated.db()
    try:
        schemas = [
            r["table_schema"]
            for r in await conn.fetch(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox' ORDER BY 1"
            )
        ]
        holders: dict[str, int] = {}
        for schema in schemas:
            # The relay's leader lock (shared.messaging.relay): an advisory lock on this key.
            holders[schema] = await conn.fetchval(
                """
                WITH k AS (SELECT hashtextextended('baton.outbox-relay:' || $1 || ':' || $1, 0) AS key)
                SELECT count(*) FROM pg_locks, k
                WHERE locktype = 'advisory' AND granted AND objsubid = 1
                  AND classid::bigint = ((k.key >> 32) & 4294967295)
                  AND objid::bigint = (k.key & 4294967295)
                """,
                schema,
            )
    finally:
        await conn.close()
    assert schemas, "no service has an outbox"
    assert holders == dict.fromkeys(schemas, 1), holders


async def test_both_replicas_pull_from_each_durable_consumer(replicated: Any) -> None:
    import nats as nats_py

    nc = await nats_py.connect(replicated.stack.nats_url())
    try:
        js = nc.jetstream()
        durables: dict[str, int] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for stream in await js.streams_info():
                if not stream.config.name.startswith("BATON_"):
                    continue
                for info in await js.consumers_info(stream.config.name):
                    key = f"{stream.config.name}/{info.name}"
                    # Pull requests waiting at the server: one per replica between its fetches.
                    durables[key] = max(durables.get(key, 0), info.num_waiting)
            if durables and all(n >= 2 for n in durables.values()):
                break
            time.sleep(0.2)
    finally:
        await nc.drain()
    assert durables, "no durable consumer found"
    single = {k: n for k, n in durables.items() if n < 2}
    assert not single, f"consumers pulled by fewer than two replicas: {single}"


def _setup(platform: Any, helpers: Any) -> tuple[Any, list[Any], str]:
    admin = helpers.login(platform.gateway_url, platform.admin_email, platform.admin_password, "admin")
    tag = uuid.uuid4().hex[:6]
    client = admin.post("/v1/clients", 201, json={"name": f"Twins {tag}", "slug": f"twins-{tag}"})
    email = f"po.twins.{tag}@example.org"
    user = admin.post("/v1/users", 201, json={"email": email, "password": PASSWORD, "display_name": "PO"})

    def until_known(method: str, path: str, body: dict[str, Any]) -> Any:
        deadline = time.monotonic() + 30
        while True:
            r = admin.request(method, path, json=body)
            if r.status_code != 404 or time.monotonic() > deadline:
                assert r.status_code in (200, 201), r.text
                return r.json()
            time.sleep(0.25)

    until_known("PUT", f"/v1/clients/{client['id']}/members/{user['id']}", {"role": "product_owner"})
    agents = []
    for n in range(2):
        agent = until_known(
            "POST",
            f"/v1/clients/{client['id']}/agents",
            {"name": f"twin-{n}", "scopes": ["projects:read", "workflows:read", "workflows:write"],
             "bmad_roles": ["analyst"]},
        )  # fmt: skip
        agents.append((agent["id"], agent["client_secret"]))
    admin.close()
    po = helpers.login(platform.gateway_url, email, PASSWORD, "po")
    return po, agents, client["id"]


def _token(gateway: str, agent_id: str, secret: str) -> str:
    r = httpx.post(
        f"{gateway}/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": agent_id, "client_secret": secret},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _race(gateways: list[str], tokens: list[str], task_id: str) -> list[httpx.Response]:
    """Both agents claim ``task_id`` at the same moment, each through its own gateway."""
    barrier = threading.Barrier(len(gateways))
    answers: list[httpx.Response] = []

    def claim(gateway: str, token: str) -> None:
        with httpx.Client(base_url=gateway, timeout=30) as c:
            barrier.wait()
            answers.append(
                c.post(
                    f"/v1/tasks/{task_id}/claim",
                    json={"lease_seconds": 300},
                    headers={"Authorization": f"Bearer {token}"},
                )
            )

    threads = [threading.Thread(target=claim, args=(g, t)) for g, t in zip(gateways, tokens, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return answers


def test_a_task_claimed_at_once_through_both_gateways_goes_to_one_agent(
    replicated: Any, helpers: Any
) -> None:
    po, agents, client_id = _setup(replicated, helpers)
    gateways = replicated.gateway_urls[:2]
    tokens = [_token(g, a, s) for g, (a, s) in zip(gateways, agents, strict=True)]
    outcomes: Counter[str] = Counter()
    for n in range(RACES):
        project = po.post(
            "/v1/projects",
            201,
            json={"client_id": client_id, "name": f"Race {n}", "kind": "greenfield", "type": "fullstack"},
        )

        def ready_task(project_id: str = project["id"]) -> Any:
            r = po.request("GET", f"/v1/projects/{project_id}/workflow")
            return r.status_code == 200 and r.json()["open_tasks"] and r.json()["open_tasks"][0]

        task = helpers.poll("the first task", ready_task, timeout=60, platform=replicated)
        answers = _race(gateways, tokens, task["id"])
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200, 409], [(r.status_code, r.text[:300]) for r in answers]
        winner = next(r for r in answers if r.status_code == 200).json()
        loser = next(r for r in answers if r.status_code == 409).json()
        assert loser["code"] == "task_already_claimed", loser
        assert winner["claimed_by"] in {a for a, _ in agents}
        settled = po.get(f"/v1/tasks/{task['id']}")
        assert settled["state"] == "claimed"
        assert settled["claimed_by"] == winner["claimed_by"]
        outcomes[winner["claimed_by"]] += 1
    assert sum(outcomes.values()) == RACES
    po.close()


def test_audit_chains_stay_gap_free_and_in_producer_order(replicated: Any, helpers: Any) -> None:
    if not replicated.has("audit"):
        pytest.skip("the audit service is not installed in this checkout")
    import asyncio

    async def chains() -> list[tuple[str, list[tuple[int, str | None, int | None]]]]:
        conn = await replicated.db()
        try:
            ids = [r["chain_id"] for r in await conn.fetch("SELECT chain_id FROM audit.chains ORDER BY 1")]
            out = []
            for chain in ids:
                rows = await conn.fetch(
                    "SELECT sequence, producer, producer_sequence FROM audit.entries "
                    "WHERE chain_id = $1 ORDER BY sequence",
                    chain,
                )
                out.append((chain, [(r["sequence"], r["producer"], r["producer_sequence"]) for r in rows]))
            return out
        finally:
            await conn.close()

    found = asyncio.run(chains())
    assert found, "no audit chain"
    admin = helpers.login(replicated.gateway_url, replicated.admin_email, replicated.admin_password, "admin")
    for chain, rows in found:
        assert [s for s, _, _ in rows] == list(range(1, len(rows) + 1)), f"chain {chain} has gaps"
        by_producer: dict[str, list[int]] = {}
        for _, producer, seq in rows:
            if producer is not None and seq is not None:
                by_producer.setdefault(producer, []).append(seq)
        for producer, seqs in by_producer.items():
            assert seqs == sorted(seqs), f"chain {chain}: {producer}'s events out of order"
        verify = admin.get("/v1/audit/verify", params={"client_id": chain})
        assert verify["ok"] is True, verify
    admin.close()


def test_a_killed_api_replica_costs_no_request(replicated: Any, helpers: Any) -> None:
    po, _, client_id = _setup(replicated, helpers)
    stack = replicated.stack
    key, url = "projects-api-2", stack.base_url("projects", 1)
    assert key in stack.processes
    stack.kill(key)
    try:
        time.sleep(1.0)  # the gateways see their idle connections to it closed
        created = [
            po.post(
                "/v1/projects",
                201,
                json={
                    "client_id": client_id,
                    "name": f"Failover {n}",
                    "kind": "greenfield",
                    "type": "service",
                },
            )
            for n in range(8)
        ]
        for project in created:
            assert po.get(f"/v1/projects/{project['id']}")["name"] == project["name"]
        aside = [
            httpx.get(f"{gateway}/readyz", timeout=10).json()["upstreams"]["projects"]["set_aside"]
            for gateway in replicated.gateway_urls
        ]
        assert any(url in urls for urls in aside), aside
    finally:
        stack.respawn(key)
        helpers.poll("the projects replica back", lambda: _ready(url), timeout=90, platform=replicated)
    po.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False
