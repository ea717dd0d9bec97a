"""Authorization of users, memberships and agents, checked against identity's current rows."""

from __future__ import annotations

import uuid

from identity.tables import Agent
from sqlalchemy import select

from shared.messaging.outbox import outbox

from .conftest import ADMIN_EMAIL, PASSWORD, Identity


async def test_admins_manage_users_and_users_read_themselves(identity: Identity) -> None:
    alice = await identity.create_user("alice@example.org")
    bob = await identity.create_user("bob@example.org")
    as_alice = await identity.bearer("alice@example.org")

    create = await identity.client.post(
        "/v1/users",
        json={"email": "x@example.org", "password": PASSWORD, "display_name": "x"},
        headers=as_alice,
    )
    assert create.status_code == 403
    assert (await identity.client.get("/v1/users", headers=as_alice)).status_code == 403
    assert (await identity.client.get("/v1/users")).status_code == 401

    me = await identity.client.get("/v1/users/me", headers=as_alice)
    assert me.status_code == 200
    assert me.json()["id"] == alice["id"]
    assert me.json()["memberships"] == []
    assert (await identity.client.get(f"/v1/users/{alice['id']}", headers=as_alice)).status_code == 200
    other = await identity.client.get(f"/v1/users/{bob['id']}", headers=as_alice)
    missing = await identity.client.get(f"/v1/users/{uuid.uuid4()}", headers=as_alice)
    assert other.status_code == missing.status_code == 404
    assert other.json()["code"] == missing.json()["code"]

    admin = await identity.admin_headers()
    listed = await identity.client.get("/v1/users", params={"limit": 2}, headers=admin)
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == 2
    assert listed.json()["next_cursor"]
    rest = await identity.client.get(
        "/v1/users", params={"limit": 2, "cursor": listed.json()["next_cursor"]}, headers=admin
    )
    assert {u["email"] for u in listed.json()["items"] + rest.json()["items"]} == {
        ADMIN_EMAIL,
        "alice@example.org",
        "bob@example.org",
    }
    by_email = await identity.client.get("/v1/users", params={"email": "BOB@example.org"}, headers=admin)
    assert [u["id"] for u in by_email.json()["items"]] == [bob["id"]]


async def test_users_change_their_own_profile_but_not_their_rights(identity: Identity) -> None:
    alice = await identity.create_user("alice@example.org")
    as_alice = await identity.bearer("alice@example.org")
    url = f"/v1/users/{alice['id']}"
    renamed = await identity.client.patch(url, json={"display_name": "Alice A."}, headers=as_alice)
    assert renamed.status_code == 200
    assert renamed.json()["display_name"] == "Alice A."
    assert (await identity.client.patch(url, json={"is_admin": True}, headers=as_alice)).status_code == 403
    no_current = await identity.client.patch(
        url, json={"password": "another fine passphrase"}, headers=as_alice
    )
    assert no_current.status_code == 422
    changed = await identity.client.patch(
        url, json={"password": "another fine passphrase", "current_password": PASSWORD}, headers=as_alice
    )
    assert changed.status_code == 200
    assert (await identity.login("alice@example.org", "another fine passphrase")).status_code == 200
    stale = await identity.client.patch(
        url, json={"display_name": "Z"}, headers={**as_alice, "If-Match": '"1"'}
    )
    assert stale.status_code == 412


async def test_last_admin_cannot_be_disabled(identity: Identity) -> None:
    admin = await identity.admin_headers()
    me = (await identity.client.get("/v1/users/me", headers=admin)).json()
    refused = await identity.client.patch(f"/v1/users/{me['id']}", json={"status": "disabled"}, headers=admin)
    assert refused.status_code == 409
    assert refused.json()["code"] == "last_admin_violated"


async def test_product_owners_manage_members(identity: Identity) -> None:
    client_id = await identity.add_client()
    other_client = await identity.add_client()
    po = await identity.create_user("po@example.org")
    dev = await identity.create_user("dev@example.org")
    outsider = await identity.create_user("out@example.org")
    admin = await identity.admin_headers()
    assert (
        await identity.client.put(
            f"/v1/clients/{client_id}/members/{po['id']}", json={"role": "product_owner"}, headers=admin
        )
    ).status_code == 201
    as_po = await identity.bearer("po@example.org")

    granted = await identity.client.put(
        f"/v1/clients/{client_id}/members/{dev['id']}", json={"role": "member"}, headers=as_po
    )
    assert granted.status_code == 201
    assert granted.json()["role"] == "member"
    same = await identity.client.put(
        f"/v1/clients/{client_id}/members/{dev['id']}", json={"role": "member"}, headers=as_po
    )
    assert same.status_code == 200
    listed = await identity.client.get(f"/v1/clients/{client_id}/members", headers=as_po)
    assert {m["user_id"] for m in listed.json()["items"]} == {po["id"], dev["id"]}

    as_dev = await identity.bearer("dev@example.org")
    assert (await identity.client.get(f"/v1/clients/{client_id}/members", headers=as_dev)).status_code == 200
    forbidden = await identity.client.put(
        f"/v1/clients/{client_id}/members/{outsider['id']}", json={"role": "viewer"}, headers=as_dev
    )
    assert forbidden.status_code == 403
    as_out = await identity.bearer("out@example.org")
    hidden = await identity.client.get(f"/v1/clients/{client_id}/members", headers=as_out)
    assert hidden.status_code == 404
    # A product owner of one client is nobody in another.
    elsewhere = await identity.client.put(
        f"/v1/clients/{other_client}/members/{dev['id']}", json={"role": "viewer"}, headers=as_po
    )
    assert elsewhere.status_code == 404

    bad_role = await identity.client.put(
        f"/v1/clients/{client_id}/members/{dev['id']}", json={"role": "owner"}, headers=as_po
    )
    assert bad_role.status_code == 422
    last = await identity.client.delete(f"/v1/clients/{client_id}/members/{po['id']}", headers=as_po)
    assert last.status_code == 409
    assert last.json()["code"] == "last_product_owner_violated"
    removed = await identity.client.delete(f"/v1/clients/{client_id}/members/{dev['id']}", headers=as_po)
    assert removed.status_code == 204
    again = await identity.client.delete(f"/v1/clients/{client_id}/members/{dev['id']}", headers=as_po)
    assert again.status_code == 404


async def test_membership_for_unknown_client_is_404(identity: Identity) -> None:
    user = await identity.create_user("u@example.org")
    response = await identity.client.put(
        f"/v1/clients/{uuid.uuid4()}/members/{user['id']}",
        json={"role": "viewer"},
        headers=await identity.admin_headers(),
    )
    assert response.status_code == 404
    assert response.json()["code"] == "client_not_found"
    client_id = await identity.add_client()
    no_user = await identity.client.put(
        f"/v1/clients/{client_id}/members/{uuid.uuid4()}",
        json={"role": "viewer"},
        headers=await identity.admin_headers(),
    )
    assert no_user.status_code == 404
    assert no_user.json()["code"] == "user_not_found"


async def test_revoked_rights_are_refused_at_once_by_identity(identity: Identity) -> None:
    """A token issued before a membership change is refused here without waiting for the gateway."""
    client_id = await identity.add_client()
    po = await identity.create_user("po@example.org")
    second = await identity.create_user("po2@example.org")
    admin = await identity.admin_headers()
    for user in (po, second):
        await identity.client.put(
            f"/v1/clients/{client_id}/members/{user['id']}", json={"role": "product_owner"}, headers=admin
        )
    as_po = await identity.bearer("po@example.org")
    assert (await identity.client.get(f"/v1/clients/{client_id}/agents", headers=as_po)).status_code == 200
    demoted = await identity.client.put(
        f"/v1/clients/{client_id}/members/{po['id']}", json={"role": "viewer"}, headers=admin
    )
    assert demoted.status_code == 200
    assert demoted.json()["role"] == "viewer"
    stale = await identity.client.get(f"/v1/clients/{client_id}/agents", headers=as_po)
    assert stale.status_code == 401
    assert stale.json()["code"] == "token_revoked"
    # A new login carries the new role.
    fresh = await identity.bearer("po@example.org")
    assert (await identity.client.get(f"/v1/clients/{client_id}/agents", headers=fresh)).status_code == 403
    me = (await identity.client.get("/v1/users/me", headers=fresh)).json()
    assert me["memberships"] == [{"client_id": str(client_id), "role": "viewer"}]


async def test_agents_lifecycle(identity: Identity) -> None:
    client_id = await identity.add_client()
    po = await identity.create_user("po@example.org")
    await identity.client.put(
        f"/v1/clients/{client_id}/members/{po['id']}",
        json={"role": "product_owner"},
        headers=await identity.admin_headers(),
    )
    as_po = await identity.bearer("po@example.org")
    base = f"/v1/clients/{client_id}/agents"
    bad_scope = await identity.client.post(base, json={"name": "x", "scopes": ["root"]}, headers=as_po)
    assert bad_scope.status_code == 422
    bad_role = await identity.client.post(
        base, json={"name": "x", "scopes": ["search"], "bmad_roles": ["wizard"]}, headers=as_po
    )
    assert bad_role.status_code == 422
    created = await identity.client.post(
        base,
        json={"name": "pm-bot", "scopes": ["documents:write", "search"], "bmad_roles": ["pm"]},
        headers=as_po,
    )
    assert created.status_code == 201
    agent = created.json()
    assert created.headers["cache-control"] == "no-store"
    secret = agent["client_secret"]

    read = await identity.client.get(f"{base}/{agent['id']}", headers=as_po)
    assert read.status_code == 200
    assert "client_secret" not in read.json()
    listed = await identity.client.get(base, headers=as_po)
    assert [a["id"] for a in listed.json()["items"]] == [agent["id"]]
    async with identity.sessions() as session:
        row = await session.get(Agent, uuid.UUID(agent["id"]))
    assert row is not None
    assert secret.encode() not in row.secret_hash
    assert len(row.secret_hash) == 32

    async def grant(secret_value: str) -> int:
        response = await identity.client.post(
            "/v1/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": agent["id"],
                "client_secret": secret_value,
            },
        )
        return response.status_code

    assert await grant(secret) == 200
    rotated = await identity.client.post(f"{base}/{agent['id']}/rotate-secret", headers=as_po)
    assert rotated.status_code == 200
    new_secret = rotated.json()["client_secret"]
    assert new_secret != secret
    assert await grant(secret) == 401
    assert await grant(new_secret) == 200

    patched = await identity.client.patch(f"{base}/{agent['id']}", json={"status": "disabled"}, headers=as_po)
    assert patched.status_code == 200
    assert patched.json()["status"] == "disabled"
    assert await grant(new_secret) == 401
    await identity.client.patch(
        f"{base}/{agent['id']}", json={"status": "active", "project_ids": [str(uuid.uuid4())]}, headers=as_po
    )
    assert await grant(new_secret) == 200
    assert (await identity.client.delete(f"{base}/{agent['id']}", headers=as_po)).status_code == 204
    assert (await identity.client.get(f"{base}/{agent['id']}", headers=as_po)).status_code == 404
    assert await grant(new_secret) == 401

    # Members who are not product owners, and agents themselves, do not manage agents.
    dev = await identity.create_user("dev@example.org")
    await identity.client.put(
        f"/v1/clients/{client_id}/members/{dev['id']}", json={"role": "member"}, headers=as_po
    )
    as_dev = await identity.bearer("dev@example.org")
    assert (await identity.client.get(base, headers=as_dev)).status_code == 403

    async with identity.sessions() as session:
        types = [
            r[0] for r in (await session.execute(select(outbox.c.event_type).order_by(outbox.c.id))).all()
        ]
    for expected in (
        "baton.identity.agent.created.v1",
        "baton.identity.agent.secret_rotated.v1",
        "baton.identity.agent.disabled.v1",
        "baton.identity.agent.updated.v1",
    ):
        assert expected in types


async def test_stale_agent_token_is_refused_after_disable(identity: Identity) -> None:
    client_id = await identity.add_client()
    admin = await identity.admin_headers()
    agent = (
        await identity.client.post(
            f"/v1/clients/{client_id}/agents", json={"name": "bot", "scopes": ["search"]}, headers=admin
        )
    ).json()
    token = (
        await identity.client.post(
            "/v1/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": agent["id"],
                "client_secret": agent["client_secret"],
            },
        )
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    me = await identity.client.get("/v1/users/me", headers=headers)
    assert me.status_code == 404  # agents are not users
    await identity.client.patch(
        f"/v1/clients/{client_id}/agents/{agent['id']}", json={"status": "disabled"}, headers=admin
    )
    after = await identity.client.get("/v1/users/me", headers=headers)
    assert after.status_code == 401
    assert after.json()["code"] == "token_revoked"


async def test_openapi_document_lists_the_public_routes(identity: Identity) -> None:
    doc = (await identity.client.get("/openapi.json")).json()
    paths = set(doc["paths"])
    for path in (
        "/v1/auth/login",
        "/v1/auth/token",
        "/v1/auth/logout",
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/v1/users",
        "/v1/users/me",
        "/v1/users/{user_id}",
        "/v1/clients/{client_id}/agents",
        "/v1/clients/{client_id}/agents/{agent_id}",
        "/v1/clients/{client_id}/agents/{agent_id}/rotate-secret",
        "/v1/clients/{client_id}/members",
        "/v1/clients/{client_id}/members/{user_id}",
    ):
        assert path in paths, path
    assert (
        "application/x-www-form-urlencoded"
        in doc["paths"]["/v1/auth/token"]["post"]["requestBody"]["content"]
    )
