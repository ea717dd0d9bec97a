"""Hostile tokens through the real gateway process over HTTP: every one is a 401 and never reaches an upstream."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable

import pytest

from shared.auth.testing import TokenFactory, b64url

PATH = "/v1/projects/0190f1d2-5a4b-7c3d-8e9f-0123456789ab"


def _unsigned(header: dict, claims: dict, signature: str = "") -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}.{signature}"


def _hs256_with_public_key(tokens: TokenFactory) -> str:
    public = tokens.key().as_dict(private=False)
    secret = base64.urlsafe_b64decode(public["x"] + "==")
    header = {"alg": "HS256", "typ": "at+jwt", "kid": tokens.current_kid}
    signing_input = (
        f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(tokens.claims('u1')).encode())}"
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def _hs256_with_public_jwk_json(tokens: TokenFactory) -> str:
    secret = json.dumps(tokens.key().as_dict(private=False)).encode()
    header = {"alg": "HS256", "typ": "at+jwt", "kid": tokens.current_kid}
    signing_input = (
        f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(tokens.claims('u1')).encode())}"
    )
    return f"{signing_input}.{b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def _foreign_key_under_our_kid(tokens: TokenFactory) -> str:
    other = TokenFactory(issuer=tokens.issuer, audience=tokens.audience)
    other.add_key("Ed25519", kid=tokens.current_kid)
    return other.issue("u1")


def _disallowed_algorithm(tokens: TokenFactory) -> str:
    # A real ES256 key published in the JWKS, but ES256 is not in the gateway's allow-list.
    return tokens.issue("u1", kid=tokens.add_key("ES256", current=False))


ATTACKS: dict[str, Callable[[TokenFactory], str]] = {
    "alg-none-empty-signature": lambda t: _unsigned(
        {"alg": "none", "typ": "at+jwt", "kid": t.current_kid}, t.claims("u1")
    ),
    "alg-none-with-signature": lambda t: _unsigned(
        {"alg": "none", "typ": "at+jwt", "kid": t.current_kid}, t.claims("u1"), "c2ln"
    ),
    "alg-None-capitalised": lambda t: _unsigned(
        {"alg": "None", "typ": "at+jwt", "kid": t.current_kid}, t.claims("u1"), "c2ln"
    ),
    "hs256-with-public-key-bytes": _hs256_with_public_key,
    "hs256-with-public-jwk-json": _hs256_with_public_jwk_json,
    "alg-outside-allow-list": _disallowed_algorithm,
    "header-alg-swapped-to-rs256": lambda t: _unsigned(
        {"alg": "RS256", "typ": "at+jwt", "kid": t.current_kid}, t.claims("u1"), "c2ln"
    ),
    "foreign-key-under-our-kid": _foreign_key_under_our_kid,
    "unknown-kid": lambda t: TokenFactory(issuer=t.issuer, audience=t.audience).issue("u1"),
    "no-kid": lambda t: t.issue("u1", headers={"kid": None}),
    "jku-header": lambda t: t.issue("u1", headers={"jku": "http://127.0.0.1:1/jwks.json"}),
    "x5u-header": lambda t: t.issue("u1", headers={"x5u": "http://127.0.0.1:1/cert.pem"}),
    "x5c-header": lambda t: t.issue("u1", headers={"x5c": ["MIIB"]}),
    "embedded-jwk-header": lambda t: t.issue("u1", headers={"jwk": t.key().as_dict(private=False)}),
    "unknown-crit": lambda t: t.issue("u1", headers={"crit": ["urn:evil"], "urn:evil": True}),
    "typ-jwt": lambda t: t.issue("u1", headers={"typ": "JWT"}),
    "typ-missing": lambda t: t.issue("u1", headers={"typ": None}),
    "typ-id-token": lambda t: t.issue("u1", headers={"typ": "id_token+jwt"}),
    "expired": lambda t: t.issue("u1", issued_at=int(time.time()) - 3600, ttl=600),
    "exp-missing": lambda t: t.issue("u1", extra_claims={"exp": None}),
    "exp-not-a-number": lambda t: t.issue("u1", extra_claims={"exp": "tomorrow"}),
    "nbf-in-future": lambda t: t.issue("u1", extra_claims={"nbf": int(time.time()) + 3600}),
    "iat-in-future": lambda t: t.issue("u1", issued_at=int(time.time()) + 3600),
    "iat-missing": lambda t: t.issue("u1", extra_claims={"iat": None}),
    "sub-missing": lambda t: t.issue("u1", extra_claims={"sub": None}),
    "jti-missing": lambda t: t.issue("u1", extra_claims={"jti": None}),
    "wrong-issuer-claim": lambda t: t.issue("u1", extra_claims={"iss": "https://evil.example"}),
    "wrong-audience": lambda t: t.issue("u1", extra_claims={"aud": "someone-else"}),
    "audience-missing": lambda t: t.issue("u1", extra_claims={"aud": None}),
    "kind-missing": lambda t: t.issue("u1", extra_claims={"kind": None}),
    "agent-without-client": lambda t: t.issue("a1", kind="agent"),
    "signature-stripped": lambda t: t.issue("u1").rsplit(".", 1)[0] + ".",
    "signature-tampered-claims": lambda t: (
        lambda parts: (
            f"{parts[0]}.{b64url(json.dumps({**t.claims('u1'), 'admin': True}).encode())}.{parts[2]}"
        )
    )(t.issue("u1").split(".")),
    "duplicate-header-members": lambda t: (
        b64url(b'{"alg":"Ed25519","alg":"none","typ":"at+jwt","kid":"' + t.current_kid.encode() + b'"}')
        + "."
        + t.issue("u1").split(".", 1)[1]
    ),
    "200kb-token": lambda t: t.issue("u1", extra_claims={"pad": "A" * 200_000}),
    "garbage": lambda t: "garbage",
    "garbage-three-segments": lambda t: "abc.def.ghi",
    "non-json-segments": lambda t: f"{b64url(b'not json')}.{b64url(b'also not')}.{b64url(b'sig')}",
    "refresh-token-looking-opaque": lambda t: secrets.token_urlsafe(48),
    "another-issuer-own-key": lambda t: TokenFactory(
        issuer="https://other-issuer.example", audience=t.audience
    ).issue("u1"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_hostile_token_is_refused_before_any_upstream(client, tokens, attack):
    token = ATTACKS[attack](tokens)
    response = await client.get(PATH, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert "x-upstream" not in response.headers
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["status"] == 401
    assert body["code"] in {"invalid_token", "token_expired", "token_not_yet_valid", "unauthorized"}
    assert body["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "authorization",
    ["Basic dXNlcjpwYXNz", "Bearer", "Token abc", "Bearer a b", "bearer", "Bearer\tabc"],
)
async def test_malformed_authorization_header_is_401(client, authorization):
    response = await client.get(PATH, headers={"Authorization": authorization})
    assert response.status_code == 401
    assert "x-upstream" not in response.headers


async def test_two_authorization_headers_are_refused(client, tokens):
    token = tokens.issue("u1")
    response = await client.get(
        PATH, headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    )
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_authorization_header"


async def test_valid_tokens_pass(client, tokens, rsa_kid):
    """The control: the same gateway forwards well-formed tokens of every accepted kind."""
    for token in (
        tokens.issue("u1"),
        tokens.issue("u1", kid=rsa_kid),
        tokens.issue("u1", headers={"typ": "application/at+jwt"}),
        tokens.issue("a1", kind="agent", client_id="c1", scopes=["projects:read"]),
    ):
        response = await client.get(PATH, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        assert response.headers["x-upstream"] == "projects"
