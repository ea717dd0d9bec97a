"""Tokens of a trusted external OIDC issuer exchanged (RFC 8693) for Baton tokens; memberships stay
identity's."""

from __future__ import annotations

import time
from typing import Any

import httpx

from shared.auth.testing import TokenFactory

from .conftest import PASSWORD, IdentityFactory

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
IDP = "https://idp.example.org/realms/acme"


def idp() -> tuple[TokenFactory, httpx.MockTransport]:
    factory = TokenFactory(issuer=IDP, audience="baton-web", algorithm="RS256")

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/certs"
        return httpx.Response(200, json=factory.jwks())

    return factory, httpx.MockTransport(handler)


def external_token(factory: TokenFactory, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": IDP, "aud": "baton-web", "sub": "kc-123", "iat": now, "exp": now + 300, **claims}
    return factory.sign(body, headers={"typ": "JWT"})


async def test_exchange_maps_by_verified_email_then_by_subject(identity_factory: IdentityFactory) -> None:
    factory, transport = idp()
    identity = await identity_factory(
        external_transport=transport,
        external_issuer=IDP,
        external_jwks_url="https://idp.example.org/certs",
        external_audience="baton-web",
    )
    user = await identity.create_user("carol@example.org")

    async def exchange(token: str) -> httpx.Response:
        return await identity.client.post(
            "/v1/auth/token",
            data={"grant_type": EXCHANGE, "subject_token": token, "subject_token_type": JWT_TYPE},
        )

    unverified = await exchange(external_token(factory, email="carol@example.org", email_verified=False))
    assert unverified.status_code == 400
    assert unverified.json()["error"] == "invalid_grant"

    linked = await exchange(external_token(factory, email="carol@example.org", email_verified=True))
    assert linked.status_code == 200, linked.text
    body = linked.json()
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    principal = await identity.app.state.token_verifier.verify(body["access_token"])
    assert principal.subject == user["id"]

    # Linked now: the subject alone is enough, whatever email the token carries.
    again = await exchange(external_token(factory, email="changed@example.org"))
    assert again.status_code == 200

    wrong_aud = await exchange(external_token(factory, aud="someone-else"))
    expired = await exchange(external_token(factory, exp=int(time.time()) - 3600))
    other_issuer = await exchange(
        TokenFactory(issuer=IDP, audience="baton-web").sign(
            {"iss": IDP, "aud": "baton-web", "sub": "kc-123", "exp": int(time.time()) + 60}
        )
    )
    for response in (wrong_aud, expired, other_issuer):
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_grant"
    # The external token is not accepted as a Baton access token.
    direct = await identity.client.get(
        "/v1/users/me", headers={"Authorization": f"Bearer {external_token(factory)}"}
    )
    assert direct.status_code == 401
    assert (await identity.login("carol@example.org", PASSWORD)).status_code == 200


async def test_exchange_without_configuration_is_unsupported(identity_factory: IdentityFactory) -> None:
    identity = await identity_factory()
    response = await identity.client.post(
        "/v1/auth/token",
        data={"grant_type": EXCHANGE, "subject_token": "a.b.c", "subject_token_type": JWT_TYPE},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


async def test_auto_create_on_first_sight(identity_factory: IdentityFactory) -> None:
    factory, transport = idp()
    identity = await identity_factory(
        external_transport=transport,
        external_issuer=IDP,
        external_jwks_url="https://idp.example.org/certs",
        external_audience="baton-web",
        external_auto_create=True,
    )
    response = await identity.client.post(
        "/v1/auth/token",
        data={
            "grant_type": EXCHANGE,
            "subject_token": external_token(
                factory, sub="kc-new", email="dave@example.org", email_verified=True, name="Dave"
            ),
            "subject_token_type": JWT_TYPE,
        },
    )
    assert response.status_code == 200, response.text
    principal = await identity.app.state.token_verifier.verify(response.json()["access_token"])
    assert principal.display_name == "Dave"
    assert principal.memberships == {}
    # No password was set: password login fails like any other failure.
    assert (await identity.login("dave@example.org", PASSWORD)).status_code == 401
