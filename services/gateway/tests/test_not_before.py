"""Per-subject not-before through the real NATS KV bucket and the real gateway process."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from nats.js.errors import BucketNotFoundError

BUCKET = "baton_not_before"
PATH = "/v1/projects"


async def _bucket(nats_client):
    js = nats_client.jetstream()
    try:
        return await js.key_value(BUCKET)
    except BucketNotFoundError:
        with contextlib.suppress(Exception):
            return await js.create_key_value(bucket=BUCKET, history=1)
        return await js.key_value(BUCKET)


async def _status_within(client, headers, status, seconds=6.0):
    deadline = time.monotonic() + seconds
    while True:
        response = await client.get(PATH, headers=headers)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.1)


async def test_not_before_revokes_older_tokens_within_seconds(client, tokens, nats_client):
    kv = await _bucket(nats_client)
    subject = str(uuid.uuid4())
    now = int(time.time())
    old = {"Authorization": f"Bearer {tokens.issue(subject, issued_at=now - 60)}"}
    other = {"Authorization": f"Bearer {tokens.issue(str(uuid.uuid4()), issued_at=now - 60)}"}
    assert (await client.get(PATH, headers=old)).status_code == 200  # cached as verified from now on

    started = time.monotonic()
    await kv.put(subject, str(now).encode())
    response = await _status_within(client, old, 401)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "token_revoked"
    assert time.monotonic() - started < 5
    assert "x-upstream" not in response.headers

    # Tokens issued at or after the not-before, and other subjects' tokens, still pass.
    fresh = {"Authorization": f"Bearer {tokens.issue(subject, issued_at=now)}"}
    assert (await client.get(PATH, headers=fresh)).status_code == 200
    assert (await client.get(PATH, headers=other)).status_code == 200

    # Deleting the entry lifts the restriction.
    await kv.delete(subject)
    assert (await _status_within(client, old, 200)).status_code == 200


async def test_subject_with_unsafe_characters_uses_the_sanitised_key(client, tokens, nats_client):
    kv = await _bucket(nats_client)
    subject = f"auth0|{uuid.uuid4().hex}@example.com"
    key = subject.replace("|", "_").replace("@", "_").replace(".", "_")
    now = int(time.time())
    old = {"Authorization": f"Bearer {tokens.issue(subject, issued_at=now - 60)}"}
    await kv.put(key, f"{now}.25".encode())
    response = await _status_within(client, old, 401)
    assert response.json()["code"] == "token_revoked"
    fresh = {"Authorization": f"Bearer {tokens.issue(subject, issued_at=now + 1)}"}
    assert (await client.get(PATH, headers=fresh)).status_code == 200
