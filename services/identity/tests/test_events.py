"""Identity's outbox: one event per fact, naming tenant, actor and aggregate, and no credential in any payload."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from shared.events.identity import MembershipGranted, TokenIssued, UserCreated, UserDisabled
from shared.messaging.outbox import outbox

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Identity


def jti_of(token: str) -> str:
    segment = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))["jti"])


def of_type(rows: Sequence[Any], event_type: str, **data: str) -> list[dict[str, Any]]:
    """Payloads of ``event_type`` whose ``data`` has the given values."""
    return [
        row.payload
        for row in rows
        if row.event_type == event_type and all(row.payload["data"].get(k) == v for k, v in data.items())
    ]


def only(rows: Sequence[Any], event_type: str, **data: str) -> dict[str, Any]:
    found = of_type(rows, event_type, **data)
    assert len(found) == 1, f"{len(found)} {event_type} events with {data}"
    return found[0]


async def test_lifecycle_events_name_tenant_actor_and_aggregate_and_carry_no_credentials(
    identity: Identity,
) -> None:
    c = identity.client
    admin_tokens = (await identity.login(ADMIN_EMAIL, ADMIN_PASSWORD)).json()
    admin = {"Authorization": f"Bearer {admin_tokens['access_token']}"}
    admin_id = (await c.get("/v1/users/me", headers=admin)).json()["id"]
    client_id = str(await identity.add_client())
    email = "eventful@example.org"
    password = f"a passphrase seen only here {uuid.uuid4().hex}"

    created = await c.post(
        "/v1/users", json={"email": email, "password": password, "display_name": "Eve"}, headers=admin
    )
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    granted = await c.put(
        f"/v1/clients/{client_id}/members/{user_id}", json={"role": "member"}, headers=admin
    )
    assert granted.status_code == 201, granted.text
    login = await identity.login(email, password)
    assert login.status_code == 200, login.text
    agent = await c.post(
        f"/v1/clients/{client_id}/agents", json={"name": "ci-bot", "scopes": ["projects:read"]}, headers=admin
    )
    assert agent.status_code == 201, agent.text
    agent_id, agent_secret = agent.json()["id"], agent.json()["client_secret"]
    machine = await c.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": agent_id, "client_secret": agent_secret},
    )
    assert machine.status_code == 200, machine.text
    refreshed = await c.post(
        "/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": login.json()["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    disabled = await c.patch(f"/v1/users/{user_id}", json={"status": "disabled"}, headers=admin)
    assert disabled.status_code == 200, disabled.text

    async with identity.sessions() as session:
        rows = (
            await session.execute(
                select(outbox.c.event_type, outbox.c.tenant, outbox.c.payload).order_by(outbox.c.created_at)
            )
        ).all()
    for row in rows:
        assert row.tenant == row.payload.get("tenant")
    by_admin = {"subject": admin_id, "kind": "user", "name": "Administrator"}

    user_created = only(rows, UserCreated.event_type, user_id=user_id)
    assert user_created["subject"] == user_id
    assert "tenant" not in user_created  # a user belongs to no client
    assert user_created["actor"] == by_admin
    assert user_created["data"]["email"] == email
    assert user_created["data"]["origin"] == "admin"

    membership = only(rows, MembershipGranted.event_type, user_id=user_id)
    assert membership["subject"] == user_id
    assert membership["tenant"] == client_id
    assert membership["actor"] == by_admin
    assert membership["data"]["client_id"] == client_id
    assert membership["data"]["role"] == "member"
    assert membership["data"].get("previous_role") is None

    issued = [login.json(), machine.json(), refreshed.json()]
    expected = [
        (user_id, "user", "password", None),
        (agent_id, "agent", "client_credentials", client_id),
        (user_id, "user", "refresh_token", None),
    ]
    for tokens, (subject, kind, grant, tenant) in zip(issued, expected, strict=True):
        event = only(rows, TokenIssued.event_type, jti=jti_of(tokens["access_token"]))
        assert event["subject"] == subject
        assert event.get("tenant") == tenant
        assert event["actor"]["subject"] == subject
        assert event["actor"]["kind"] == kind
        assert event["data"]["subject"] == subject
        assert event["data"]["kind"] == kind
        assert event["data"]["grant"] == grant
        assert event["data"].get("client_id") == tenant
    assert len(of_type(rows, TokenIssued.event_type, subject=user_id)) == 2
    assert len(of_type(rows, TokenIssued.event_type, subject=agent_id)) == 1

    user_disabled = only(rows, UserDisabled.event_type, user_id=user_id)
    assert user_disabled["subject"] == user_id
    assert "tenant" not in user_disabled
    assert user_disabled["actor"] == by_admin
    assert user_disabled["data"]["not_before"] > 0

    credentials = {
        "password": password,
        "admin password": ADMIN_PASSWORD,
        "agent secret": agent_secret,
        "admin access token": admin_tokens["access_token"],
        "admin refresh token": admin_tokens["refresh_token"],
        "user access token": login.json()["access_token"],
        "user refresh token": login.json()["refresh_token"],
        "refreshed access token": refreshed.json()["access_token"],
        "refreshed refresh token": refreshed.json()["refresh_token"],
        "agent access token": machine.json()["access_token"],
    }
    serialized = [json.dumps(row.payload) for row in rows]
    leaks = [
        (name, row.event_type)
        for name, value in credentials.items()
        for row, text in zip(rows, serialized, strict=True)
        if value in text
    ]
    assert leaks == []
