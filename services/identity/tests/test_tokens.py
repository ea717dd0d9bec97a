"""Issued tokens: claim layout, verification by shared.auth against identity's JWKS, refresh rotation and
family revocation, logout, client credentials, signing-key rotation and encryption at rest."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from identity.housekeeping import Housekeeping
from identity.keys.crypto import KeyCipher, KeyDecryptionFailed
from identity.tables import SigningKey
from sqlalchemy import select, update

from shared.auth import JWKSCache, TokenVerifier
from shared.auth.exceptions import InvalidToken
from shared.db import utcnow

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, Identity


def verifier_for(identity: Identity) -> TokenVerifier:
    """shared.auth's verifier, fetching identity's JWKS over ASGI like the gateway does over HTTP."""
    jwks = JWKSCache(
        "http://identity.test/.well-known/jwks.json",
        refresh_cooldown_seconds=0,
        transport=httpx.ASGITransport(identity.app),
    )
    return TokenVerifier(
        jwks=jwks, issuer=identity.settings.jwt_issuer, audience=identity.settings.jwt_audience
    )


def header_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def claims_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


async def refresh(identity: Identity, token: str) -> httpx.Response:
    return await identity.client.post(
        "/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": token}
    )


async def make_agent(identity: Identity, client_id: uuid.UUID, **fields: Any) -> dict[str, Any]:
    body = {"name": "ci-bot", "scopes": ["projects:read", "documents:write"], **fields}
    response = await identity.client.post(
        f"/v1/clients/{client_id}/agents", json=body, headers=await identity.admin_headers()
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_user_token_layout_and_verification(identity: Identity) -> None:
    client_id = await identity.add_client()
    user = await identity.create_user("po@example.org")
    put = await identity.client.put(
        f"/v1/clients/{client_id}/members/{user['id']}",
        json={"role": "product_owner"},
        headers=await identity.admin_headers(),
    )
    assert put.status_code == 201
    token = await identity.token("po@example.org", PASSWORD)
    header = header_of(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "Ed25519"
    assert header["kid"]
    claims = claims_of(token)
    assert set(claims) == {
        "iss",
        "aud",
        "sub",
        "iat",
        "exp",
        "jti",
        "kind",
        "admin",
        "memberships",
        "scope",
        "name",
    }
    assert claims["iss"] == "https://baton.test"
    assert claims["aud"] == "baton"
    assert claims["exp"] - claims["iat"] <= 900
    assert claims["memberships"] == {str(client_id): "product_owner"}
    verifier = verifier_for(identity)
    principal = await verifier.verify(token)
    assert principal.subject == user["id"]
    assert principal.role_in(str(client_id)) == "product_owner"
    assert principal.is_admin is False
    await verifier.aclose()


async def test_shared_verifier_accepts_identity_tokens(identity: Identity) -> None:
    verifier = verifier_for(identity)
    token = await identity.token(ADMIN_EMAIL, ADMIN_PASSWORD)
    principal = await verifier.verify(token)
    assert principal.kind == "user"
    assert principal.is_admin is True
    assert principal.display_name == "Administrator"
    # A refresh token is not an access token.
    login = await identity.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    with pytest.raises(InvalidToken):
        await verifier.verify(login.json()["refresh_token"])
    # Another audience does not accept it.
    other = TokenVerifier(jwks=verifier.jwks, issuer="https://baton.test", audience="someone-else")
    with pytest.raises(InvalidToken):
        await other.verify(token)
    await verifier.aclose()


async def test_refresh_rotates_and_reuse_revokes_the_family(identity: Identity) -> None:
    first = (await identity.login(ADMIN_EMAIL, ADMIN_PASSWORD)).json()
    second = await refresh(identity, first["refresh_token"])
    assert second.status_code == 200, second.text
    assert second.headers["cache-control"] == "no-store"
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    third = await refresh(identity, rotated["refresh_token"])
    assert third.status_code == 200
    newest = third.json()["refresh_token"]

    reuse = await refresh(identity, first["refresh_token"])
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    # The whole family is gone, including the newest token the legitimate holder had.
    after = await refresh(identity, newest)
    assert after.status_code == 400
    assert after.json() == {"error": "invalid_grant", "error_description": after.json()["error_description"]}
    # Another login (another family) is unaffected.
    other = (await identity.login(ADMIN_EMAIL, ADMIN_PASSWORD)).json()
    assert (await refresh(identity, other["refresh_token"])).status_code == 200


async def test_logout_revokes_the_family(identity: Identity) -> None:
    tokens = (await identity.login(ADMIN_EMAIL, ADMIN_PASSWORD)).json()
    rotated = (await refresh(identity, tokens["refresh_token"])).json()
    out = await identity.client.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert out.status_code == 204
    assert (await refresh(identity, rotated["refresh_token"])).status_code == 400
    # Unknown tokens get the same answer.
    assert (
        await identity.client.post("/v1/auth/logout", json={"refresh_token": "brt_nope"})
    ).status_code == 204


async def test_token_endpoint_errors_follow_rfc6749(identity: Identity) -> None:
    c = identity.client
    missing = await c.post("/v1/auth/token", data={})
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    json_body = await c.post("/v1/auth/token", json={"grant_type": "client_credentials"})
    assert json_body.status_code == 400
    assert json_body.json()["error"] == "invalid_request"
    unsupported = await c.post(
        "/v1/auth/token", data={"grant_type": "password", "username": "a", "password": "b"}
    )
    assert unsupported.status_code == 400
    assert unsupported.json()["error"] == "unsupported_grant_type"
    bad = await refresh(identity, "brt_not-a-token")
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_grant"
    repeated = await c.post(
        "/v1/auth/token",
        content="grant_type=refresh_token&refresh_token=a&refresh_token=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert repeated.json()["error"] == "invalid_request"
    no_client = await c.post("/v1/auth/token", data={"grant_type": "client_credentials"})
    assert no_client.status_code == 401
    assert no_client.json()["error"] == "invalid_client"
    assert no_client.headers["www-authenticate"].startswith("Basic")


async def test_client_credentials(identity: Identity) -> None:
    client_id = await identity.add_client()
    project = uuid.uuid4()
    agent = await make_agent(identity, client_id, project_ids=[str(project)], bmad_roles=["dev", "qa"])
    secret = agent["client_secret"]
    assert secret.startswith("bsk_")

    posted = await identity.client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": agent["id"], "client_secret": secret},
    )
    assert posted.status_code == 200, posted.text
    body = posted.json()
    assert "refresh_token" not in body
    assert body["scope"] == "documents:write projects:read"
    claims = claims_of(body["access_token"])
    assert set(claims) == {
        "iss", "aud", "sub", "iat", "exp", "jti", "kind", "admin", "memberships", "scope",
        "client_id", "project_ids", "bmad_roles", "name",
    }  # fmt: skip
    principal = await verifier_for(identity).verify(body["access_token"])
    assert principal.kind == "agent"
    assert principal.client_id == str(client_id)
    assert principal.project_ids == frozenset({str(project)})
    assert principal.bmad_roles == frozenset({"dev", "qa"})
    assert principal.scopes == frozenset({"projects:read", "documents:write"})

    basic = base64.b64encode(f"{agent['id']}:{secret}".encode()).decode()
    narrowed = await identity.client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials", "scope": "projects:read"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert narrowed.status_code == 200
    assert claims_of(narrowed.json()["access_token"])["scope"] == "projects:read"

    too_wide = await identity.client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials", "scope": "audit:read"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert too_wide.status_code == 400
    assert too_wide.json()["error"] == "invalid_scope"

    wrong = await identity.client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": agent["id"], "client_secret": secret + "x"},
    )
    unknown = await identity.client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": str(uuid.uuid4()), "client_secret": secret},
    )
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {"error": "invalid_client", "error_description": "Client authentication failed"}
    )


async def test_key_rotation_keeps_old_tokens_valid(identity: Identity) -> None:
    verifier = verifier_for(identity)
    old_token = await identity.token(ADMIN_EMAIL, ADMIN_PASSWORD)
    old_kid = header_of(old_token)["kid"]
    assert (await verifier.verify(old_token)).is_admin

    rotated = await identity.client.post(
        "/v1/auth/keys/rotate", json={"publish_ahead_seconds": 0}, headers=await identity.admin_headers()
    )
    assert rotated.status_code == 201, rotated.text
    new_kid = rotated.json()["kid"]
    new_token = await identity.token(ADMIN_EMAIL, ADMIN_PASSWORD)
    assert header_of(new_token)["kid"] == new_kid != old_kid

    jwks = (await identity.client.get("/.well-known/jwks.json")).json()
    assert {k["kid"] for k in jwks["keys"]} == {old_kid, new_kid}
    assert all("d" not in k for k in jwks["keys"])
    # A verifier that has only seen the old key learns the new one on the unknown kid; both verify.
    assert (await verifier.verify(new_token)).subject == (await verifier.verify(old_token)).subject
    fresh = verifier_for(identity)
    await fresh.verify(old_token)
    await fresh.verify(new_token)

    # Once every token the old key signed has expired, its public key leaves the JWKS.
    async with identity.sessions() as session:
        row = await session.get(SigningKey, old_kid)
        assert row is not None
        assert row.retired_at is not None
        assert row.publish_until is not None
        assert row.publish_until > utcnow()
        await session.execute(
            update(SigningKey).where(SigningKey.kid == old_kid).values(publish_until=utcnow())
        )
        await session.commit()
    jwks = (await identity.client.get("/.well-known/jwks.json")).json()
    assert {k["kid"] for k in jwks["keys"]} == {new_kid}
    await verifier.aclose()
    await fresh.aclose()


async def test_announced_key_is_published_before_it_signs(identity: Identity) -> None:
    current = header_of(await identity.token(ADMIN_EMAIL, ADMIN_PASSWORD))["kid"]
    rotated = await identity.client.post(
        "/v1/auth/keys/rotate", json={"publish_ahead_seconds": 600}, headers=await identity.admin_headers()
    )
    announced = rotated.json()["kid"]
    kids = {k["kid"] for k in (await identity.client.get("/.well-known/jwks.json")).json()["keys"]}
    assert {current, announced} <= kids
    assert header_of(await identity.token(ADMIN_EMAIL, ADMIN_PASSWORD))["kid"] == current


async def test_rs256_keys_are_supported(identity: Identity) -> None:
    rotated = await identity.client.post(
        "/v1/auth/keys/rotate",
        json={"algorithm": "RS256", "publish_ahead_seconds": 0},
        headers=await identity.admin_headers(),
    )
    assert rotated.status_code == 201
    token = await identity.token(ADMIN_EMAIL, ADMIN_PASSWORD)
    assert header_of(token)["alg"] == "RS256"
    verifier = verifier_for(identity)
    assert (await verifier.verify(token)).is_admin
    await verifier.aclose()


async def test_private_keys_are_encrypted_at_rest(identity: Identity) -> None:
    async with identity.sessions() as session:
        row = (await session.execute(select(SigningKey))).scalars().first()
    assert row is not None
    private = identity.ctx.keyring.private_key(row).as_dict(private=True)
    assert private["d"].encode() not in row.private_key_encrypted
    assert b'"d"' not in row.private_key_encrypted
    with pytest.raises(KeyDecryptionFailed):
        KeyCipher("another-secret-entirely").decrypt(row.private_key_encrypted, kid=row.kid)
    with pytest.raises(KeyDecryptionFailed):  # bound to its kid: cannot be moved to another row
        KeyCipher(identity.settings.secret_key.get_secret_value()).decrypt(
            row.private_key_encrypted, kid="other"
        )


async def test_discovery_document(identity: Identity) -> None:
    doc = (await identity.client.get("/.well-known/openid-configuration")).json()
    assert doc["issuer"] == "https://baton.test"
    assert doc["jwks_uri"] == "https://baton.test/.well-known/jwks.json"
    assert doc["token_endpoint"] == "https://baton.test/v1/auth/token"
    assert "client_credentials" in doc["grant_types_supported"]


async def test_housekeeping_rotates_an_old_key(identity: Identity) -> None:
    old_kid = header_of(await identity.token(ADMIN_EMAIL, ADMIN_PASSWORD))["kid"]
    keeper = Housekeeping(identity.sessions, identity.ctx.keyring, identity.settings)
    await keeper.run_once()  # the key is young: nothing happens
    assert header_of(await identity.token(ADMIN_EMAIL, ADMIN_PASSWORD))["kid"] == old_kid
    async with identity.sessions() as session:
        await session.execute(
            update(SigningKey).values(
                signs_from=utcnow() - timedelta(days=identity.settings.key_rotation_days + 1)
            )
        )
        await session.commit()
    await keeper.run_once()
    new_kid = header_of(await identity.token(ADMIN_EMAIL, ADMIN_PASSWORD))["kid"]
    assert new_kid != old_kid
    kids = {k["kid"] for k in (await identity.client.get("/.well-known/jwks.json")).json()["keys"]}
    assert kids == {old_kid, new_kid}


async def test_key_rotation_takes_a_json_number_of_seconds(identity: Identity) -> None:
    headers = await identity.admin_headers()
    for coerced in (False, "0"):
        r = await identity.client.post(
            "/v1/auth/keys/rotate", json={"publish_ahead_seconds": coerced}, headers=headers
        )
        assert r.status_code == 422, r.text
    # 600.0 is an integer to JSON Schema, as the document says.
    r = await identity.client.post(
        "/v1/auth/keys/rotate", json={"publish_ahead_seconds": 600.0}, headers=headers
    )
    assert r.status_code == 201, r.text
