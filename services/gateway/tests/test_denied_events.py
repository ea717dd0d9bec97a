"""gateway.request_denied events reach JetStream (stream BATON_GATEWAY) without blocking requests."""

from __future__ import annotations

import asyncio
import time
import uuid

from nats.js.api import ConsumerConfig, DeliverPolicy

from shared.events.gateway import RequestDenied
from shared.messaging.envelope import from_nats


async def _events_for(js, request_ids: set[str], timeout: float = 8.0) -> dict[str, object]:
    found = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and set(found) != request_ids:
        sub = await js.pull_subscribe(
            "baton.gateway.request.denied",
            durable=None,
            stream="BATON_GATEWAY",
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        try:
            while True:
                try:
                    messages = await sub.fetch(500, timeout=0.5)
                except Exception:
                    break
                for msg in messages:
                    envelope = from_nats(msg)
                    if envelope.subject in request_ids:
                        found[envelope.subject] = (envelope, msg.headers)
                    await msg.ack()
        finally:
            await sub.unsubscribe()
        if set(found) != request_ids:
            await asyncio.sleep(0.2)
    return found


async def test_denied_requests_are_published(client, tokens, nats_client):
    missing_id = f"deny-{uuid.uuid4().hex}"
    invalid_id = f"deny-{uuid.uuid4().hex}"
    r1 = await client.get("/v1/tasks?secret=1", headers={"X-Request-Id": missing_id})
    r2 = await client.get(
        "/v1/clients/abc/members",
        headers={
            "X-Request-Id": invalid_id,
            "Authorization": f"Bearer {tokens.issue('u', extra_claims={'aud': 'x'})}",
        },
    )
    assert (r1.status_code, r2.status_code) == (401, 401)

    found = await _events_for(nats_client.jetstream(), {missing_id, invalid_id})
    assert set(found) == {missing_id, invalid_id}
    envelope, headers = found[missing_id]
    assert envelope.type == "baton.gateway.request.denied.v1"
    assert envelope.source == "/baton/gateway"
    assert headers["Nats-Msg-Id"] == envelope.id
    data = envelope.parse_data(RequestDenied)
    assert data.status == 401
    assert data.reason == "unauthorized"
    assert data.method == "GET"
    assert data.path == "/v1/tasks"  # never the query string
    assert data.route == "workflows:/v1/tasks*"
    assert data.request_id == missing_id
    assert data.subject is None
    assert data.client_ip == "127.0.0.1"
    other = found[invalid_id][0].parse_data(RequestDenied)
    assert other.reason == "invalid_token"
    assert other.route == "identity:/v1/clients/{client_id}/members*"
