"""Password login: success, indistinguishable failures, backoff shared by replicas, password rules."""

from __future__ import annotations

import statistics
import time

from identity.tables import LoginFailure
from sqlalchemy import select, text

from shared.messaging.outbox import outbox

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, Identity, IdentityFactory


async def test_login_returns_rfc6749_token_response(identity: Identity) -> None:
    response = await identity.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert 0 < body["expires_in"] <= 900
    assert body["refresh_token"].startswith("brt_")


async def test_email_is_case_insensitive(identity: Identity) -> None:
    await identity.create_user("Mixed.Case@Example.org")
    assert (await identity.login("mixed.case@EXAMPLE.ORG", PASSWORD)).status_code == 200
    again = await identity.client.post(
        "/v1/users",
        json={"email": "MIXED.case@example.org", "password": PASSWORD, "display_name": "x"},
        headers=await identity.admin_headers(),
    )
    assert again.status_code == 409
    assert again.json()["code"] == "email_taken"


async def test_failures_are_indistinguishable(identity: Identity) -> None:
    user = await identity.create_user("victim@example.org")
    disabled = await identity.create_user("gone@example.org")
    patch = await identity.client.patch(
        f"/v1/users/{disabled['id']}", json={"status": "disabled"}, headers=await identity.admin_headers()
    )
    assert patch.status_code == 200
    rid = {"X-Request-Id": "fixed-request-id"}
    unknown = await identity.login("nobody@example.org", PASSWORD, **rid)
    wrong = await identity.login(user["email"], "not the right password", **rid)
    off = await identity.login(disabled["email"], PASSWORD, **rid)
    assert unknown.status_code == wrong.status_code == off.status_code == 401
    assert unknown.content == wrong.content == off.content
    assert unknown.json()["code"] == "invalid_credentials"
    assert unknown.headers["content-type"] == wrong.headers["content-type"]


async def test_unknown_account_costs_a_password_hash(identity_factory: IdentityFactory) -> None:
    """Timing: an unknown email verifies the dummy hash, so it is as slow as a wrong password. The
    hash is made expensive here so that it, not the request overhead, dominates the measurement."""
    identity = await identity_factory(argon2_memory_kib=65536, argon2_time_cost=2)
    await identity.create_user("timed@example.org")

    async def measure(email: str, ip: str) -> float:
        start = time.perf_counter()
        response = await identity.login(email, "wrong password here", **{"X-Forwarded-For": ip})
        assert response.status_code == 401
        return time.perf_counter() - start

    # Few attempts per account and per address, so that no backoff kicks in.
    unknown = [await measure(f"ghost{i}@example.org", f"10.1.0.{i}") for i in range(3)]
    wrong = [await measure("timed@example.org", f"10.2.0.{i}") for i in range(3)]
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.6 < ratio < 1.7, (unknown, wrong)


async def test_failed_login_event_has_no_password_material(identity: Identity) -> None:
    secret = "this-is-a-typed-password"
    await identity.login("someone@example.org", secret)
    async with identity.sessions() as session:
        rows = (
            await session.execute(select(outbox.c.payload).where(outbox.c.event_type.like("%login_failed%")))
        ).all()
    assert rows
    payload = str(rows[-1][0])
    assert secret not in payload
    assert "someone@example.org" not in payload
    assert rows[-1][0]["data"]["reason"] == "unknown_account"


async def test_account_backoff_returns_429_with_retry_after(identity: Identity) -> None:
    await identity.create_user("target@example.org")
    for i in range(3):  # free failures
        assert (await identity.login("target@example.org", f"wrong password {i}")).status_code == 401
    assert (await identity.login("target@example.org", "wrong password 4")).status_code == 401  # locks
    locked = await identity.login("target@example.org", PASSWORD)  # even the right password
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) >= 1
    assert locked.json()["code"] == "login_locked"
    # The same lock applies to an email that has no account (nothing about existence leaks).
    for i in range(4):
        await identity.login("no-such-user@example.org", f"wrong password {i}")
    assert (await identity.login("no-such-user@example.org", "x")).status_code == 429


async def test_backoff_is_shared_by_replicas_and_expires(identity_factory: IdentityFactory) -> None:
    first = await identity_factory()
    schema = first.settings.schema_name
    second = await identity_factory(engine=first.engine, schema=schema)
    await first.create_user("shared@example.org")
    for i in range(2):
        await first.login("shared@example.org", f"bad password {i}")
    for i in range(2):
        await second.login("shared@example.org", f"bad password {i + 2}")
    locked = await first.login("shared@example.org", PASSWORD)
    assert locked.status_code == 429
    async with first.sessions() as session:
        counters = (await session.execute(select(LoginFailure))).scalars().all()
    assert any(c.failures == 4 for c in counters)
    # When the lock has passed, the right password works and clears the account counter.
    async with first.sessions() as session:
        await session.execute(text("UPDATE login_failures SET locked_until = now() - interval '1 second'"))
        await session.commit()
    assert (await second.login("shared@example.org", PASSWORD)).status_code == 200


async def test_ip_backoff_spans_accounts(identity: Identity) -> None:
    ip = {"X-Forwarded-For": "203.0.113.7"}
    for i in range(7):  # 6 free failures for the IP, then a lock; each email stays under its own limit
        response = await identity.login(f"spray{i}@example.org", "wrong password", **ip)
        assert response.status_code == 401
    blocked = await identity.login(ADMIN_EMAIL, ADMIN_PASSWORD, **ip)
    assert blocked.status_code == 429
    assert "retry-after" in blocked.headers
    # Another address is not affected.
    assert (
        await identity.login(ADMIN_EMAIL, ADMIN_PASSWORD, **{"X-Forwarded-For": "198.51.100.1"})
    ).status_code == 200


async def test_password_rules(identity: Identity) -> None:
    headers = await identity.admin_headers()

    async def create(password: str, email: str) -> int:
        body = {"email": email, "password": password, "display_name": "P"}
        return (await identity.client.post("/v1/users", json=body, headers=headers)).status_code

    assert await create("a" * 11, "short@example.org") == 422
    assert await create("a" * 257, "long@example.org") == 422
    assert await create(" " * 20, "blank@example.org") == 422
    assert await create("a" * 12, "min@example.org") == 201
    assert await create("é" * 256, "max@example.org") == 201
    assert (await identity.login("max@example.org", "é" * 256)).status_code == 200
