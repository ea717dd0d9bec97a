"""gateway.request_denied events reach JetStream (stream BATON_GATEWAY) without blocking requests."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import BucketNotFoundError

from shared.events.gateway import RequestDenied
from shared.messaging.envelope import from_nats


async def _collect(js, request_ids: set[str]) -> dict[str, list[object]]:
    """Every denied-request event in the stream for ``request_ids``, read once from the start."""
    found: dict[str, list[object]] = {}
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
                    found.setdefault(envelope.subject, []).append((envelope, msg.headers))
                await msg.ack()
    finally:
        await sub.unsubscribe()
    return found


async def _events_for(js, request_ids: set[str], timeout: float = 8.0) -> dict[str, object]:
    """The one event of each request id; fails if a request produced more than one."""
    deadline = time.monotonic() + timeout
    found = await _collect(js, request_ids)
    while time.monotonic() < deadline and set(found) != request_ids:
        await asyncio.sleep(0.2)
        found = await _collect(js, request_ids)
    # Events of one request are recorded together: one more read, a few flushes later, sees any twin.
    await asyncio.sleep(0.3)
    found = await _collect(js, request_ids)
    many = {rid: len(events) for rid, events in found.items() if len(events) > 1}
    assert not many, f"more than one event for a request: {many}"
    return {rid: events[0] for rid, events in found.items()}


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


async def test_upstream_refusals_are_recorded_with_the_principal(client, tokens, nats_client):
    subject = str(uuid.uuid4())
    bearer = {"Authorization": f"Bearer {tokens.issue(subject)}"}
    plain, problem, streamed, allowed = (f"deny-{uuid.uuid4().hex}" for _ in range(4))
    r1 = await client.get("/v1/tasks?echo_status=403", headers={**bearer, "X-Request-Id": plain})
    r2 = await client.get(
        "/v1/tasks?mode=problem&echo_status=401&code=membership_required",
        headers={**bearer, "X-Request-Id": problem},
    )
    r3 = await client.get(
        "/v1/tasks?mode=big&size=300000&echo_status=403", headers={**bearer, "X-Request-Id": streamed}
    )
    r4 = await client.get("/v1/tasks", headers={**bearer, "X-Request-Id": allowed})
    assert (r1.status_code, r2.status_code, r3.status_code, r4.status_code) == (403, 401, 403, 200)
    assert r1.json()["upstream"] == "workflows"  # the upstream's own answer, passed on unchanged
    assert r2.json()["code"] == "membership_required"
    assert r2.headers["content-type"] == "application/problem+json"
    assert len(r3.content) == 300000  # a streamed refusal still arrives whole

    js = nats_client.jetstream()
    found = await _events_for(js, {plain, problem, streamed})
    assert set(found) == {plain, problem, streamed}
    assert await _collect(js, {allowed}) == {}  # an answered request is no denial
    envelope, headers = found[plain]
    assert headers["Nats-Msg-Id"] == envelope.id
    assert envelope.actor.subject == subject
    assert envelope.actor.kind == "user"
    data = envelope.parse_data(RequestDenied)
    assert data.status == 403
    assert data.reason == "upstream_403"
    assert data.subject == subject
    assert data.principal_kind == "user"
    assert data.method == "GET"
    assert data.path == "/v1/tasks"
    assert data.route == "workflows:/v1/tasks*"
    assert data.request_id == plain
    coded = found[problem][0].parse_data(RequestDenied)
    assert (coded.status, coded.reason, coded.subject) == (401, "membership_required", subject)
    big = found[streamed][0].parse_data(RequestDenied)
    assert (big.status, big.reason, big.subject) == (403, "upstream_403", subject)


async def test_a_revoked_token_is_recorded_with_its_subject(client, tokens, nats_client):
    js = nats_client.jetstream()
    try:
        kv = await js.key_value("baton_not_before")
    except BucketNotFoundError:
        with contextlib.suppress(Exception):
            await js.create_key_value(bucket="baton_not_before", history=1)
        kv = await js.key_value("baton_not_before")
    subject = str(uuid.uuid4())
    now = int(time.time())
    bearer = {"Authorization": f"Bearer {tokens.issue(subject, issued_at=now - 60)}"}
    await kv.put(subject, str(now).encode())
    deadline = time.monotonic() + 6
    while True:
        rid = f"deny-{uuid.uuid4().hex}"
        response = await client.get("/v1/projects", headers={**bearer, "X-Request-Id": rid})
        if response.status_code == 401 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert response.status_code == 401
    assert response.json()["code"] == "token_revoked"
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert "x-upstream" not in response.headers

    envelope, _ = (await _events_for(js, {rid}))[rid]
    data = envelope.parse_data(RequestDenied)
    assert (data.status, data.reason) == (401, "token_revoked")
    assert data.subject == subject
    assert data.principal_kind == "user"
    assert data.route == "projects:/v1/projects"
    assert envelope.actor.subject == subject
    await kv.delete(subject)
