"""TokenVerifier: each rejection is asserted by its own detail, so removing a check fails its test
even where joserfc would have caught the token later."""

import base64
import hashlib
import hmac
import json
import time

import pytest

from shared.auth import InvalidToken, Principal, TokenVerifier
from shared.auth.testing import TokenFactory, b64url
from shared.errors import Unauthorized

ALG_REFUSED = "The token algorithm is not accepted"
BAD_SIGNATURE = "The token signature is invalid"
TYPE_REFUSED = "The token type is not accepted"
NOT_COMPACT = "The token is not a compact JWS"


async def rejected(verifier: TokenVerifier, token: str, detail: str, code: str = "invalid_token") -> None:
    with pytest.raises(InvalidToken) as info:
        await verifier.verify(token)
    err = info.value
    assert isinstance(err, Unauthorized)
    assert err.status == 401
    assert err.instance_code == code
    assert err.detail == detail
    assert err.headers == {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def hand_made(header: dict, claims: dict, signature: bytes) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}.{b64url(signature)}"


# --- the happy path ---------------------------------------------------------------------------


async def test_valid_agent_token_yields_principal(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    token = tokens.issue(
        "agent-7",
        kind="agent",
        memberships={},
        scopes=["documents:write", "projects:read"],
        client_id="client-1",
        project_ids=["p1", "p2"],
        bmad_roles=["pm", "architect"],
        name="PRD bot",
    )
    p = await verifier.verify(token)
    assert isinstance(p, Principal)
    assert p.subject == "agent-7"
    assert p.kind == "agent"
    assert p.is_admin is False
    assert p.scopes == frozenset({"documents:write", "projects:read"})
    assert p.client_id == "client-1"
    assert p.project_ids == frozenset({"p1", "p2"})
    assert p.bmad_roles == frozenset({"pm", "architect"})
    assert p.display_name == "PRD bot"
    assert p.raw_token == token
    assert p.expires_at - p.issued_at == 300
    assert p.token_id


async def test_valid_user_token_yields_memberships(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    p = await verifier.verify(tokens.issue("u1", admin=True, memberships={"c1": "viewer", "c2": "auditor"}))
    assert (p.kind, p.is_admin, p.memberships) == ("user", True, {"c1": "viewer", "c2": "auditor"})
    assert p.scopes == frozenset()
    assert p.project_ids is None


async def test_rs256_token_accepted(tokens: TokenFactory) -> None:
    tokens.add_key("RS256")
    p = await tokens.verifier().verify(tokens.issue("u2"))
    assert p.subject == "u2"


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
async def test_accepted_typ_spellings(tokens: TokenFactory, verifier: TokenVerifier, typ: str) -> None:
    assert (await verifier.verify(tokens.issue(headers={"typ": typ}))).subject == "user-1"


async def test_audience_list_containing_ours_accepted(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    token = tokens.issue(extra_claims={"aud": ["other", "baton"]})
    assert (await verifier.verify(token)).subject == "user-1"


# --- algorithms and keys ----------------------------------------------------------------------


async def test_alg_none_rejected(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    header = {"alg": "none", "typ": "at+jwt", "kid": tokens.current_kid}
    await rejected(verifier, hand_made(header, tokens.claims(), b"sig"), ALG_REFUSED)


async def test_unsecured_token_with_empty_signature_rejected(
    tokens: TokenFactory, verifier: TokenVerifier
) -> None:
    header = {"alg": "none", "typ": "at+jwt", "kid": tokens.current_kid}
    await rejected(verifier, hand_made(header, tokens.claims(), b""), NOT_COMPACT)


async def test_hs256_signed_with_ed25519_public_key_rejected(
    tokens: TokenFactory, verifier: TokenVerifier
) -> None:
    public_x = tokens.key().as_dict(private=False)["x"]
    secret = base64.urlsafe_b64decode(public_x + "=" * (-len(public_x) % 4))
    await _key_confusion(tokens, verifier, secret)


async def test_hs256_signed_with_rsa_public_pem_rejected(tokens: TokenFactory) -> None:
    tokens.add_key("RS256")
    await _key_confusion(tokens, tokens.verifier(), tokens.key().as_pem(private=False))


async def _key_confusion(tokens: TokenFactory, verifier: TokenVerifier, secret: bytes) -> None:
    header = {"alg": "HS256", "typ": "at+jwt", "kid": tokens.current_kid}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(tokens.claims()).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    await rejected(verifier, f"{signing_input}.{b64url(mac)}", ALG_REFUSED)


@pytest.mark.parametrize("algorithms", [["HS256"], ["Ed25519", "HS512"], ["none"], []])
def test_verifier_refuses_symmetric_or_empty_allow_list(tokens: TokenFactory, algorithms: list[str]) -> None:
    with pytest.raises(ValueError, match="algorithms"):
        TokenVerifier(issuer="i", audience="a", jwks=tokens.jwks_cache(), algorithms=algorithms)


async def test_es256_key_under_known_kid_rejected_by_allow_list(tokens: TokenFactory) -> None:
    kid = tokens.add_key("ES256")
    await rejected(tokens.verifier(), tokens.issue(kid=kid), ALG_REFUSED)


async def test_rs384_signed_by_our_rsa_key_rejected_by_allow_list(tokens: TokenFactory) -> None:
    kid = tokens.add_key("RS256")
    await rejected(tokens.verifier(), tokens.issue(kid=kid, headers={"alg": "RS384"}), ALG_REFUSED)


async def test_allowed_algorithm_not_bound_to_the_key_rejected(tokens: TokenFactory) -> None:
    kid = tokens.add_key("RS256")  # published with "alg": "RS256"
    verifier = tokens.verifier(algorithms=["RS256", "PS256"])
    token = tokens.issue(kid=kid, headers={"alg": "PS256"})
    await rejected(verifier, token, "The token algorithm does not match its key")


async def test_foreign_key_signing_under_our_kid_rejected(
    tokens: TokenFactory, verifier: TokenVerifier
) -> None:
    attacker = TokenFactory()
    attacker.add_key("Ed25519", kid=tokens.current_kid)
    await rejected(verifier, attacker.issue(), BAD_SIGNATURE)


async def test_tampered_claims_rejected(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    header, _, signature = tokens.issue().split(".")
    forged = b64url(json.dumps(tokens.claims(admin=True)).encode())
    await rejected(verifier, f"{header}.{forged}.{signature}", BAD_SIGNATURE)


async def test_eddsa_header_rejected_unless_allowed(tokens: TokenFactory) -> None:
    kid = tokens.add_key("EdDSA")  # an Ed25519 key published as "alg": "EdDSA"
    token = tokens.issue(kid=kid)
    await rejected(tokens.verifier(), token, ALG_REFUSED)
    lenient = tokens.verifier(algorithms=["Ed25519", "EdDSA"])
    assert (await lenient.verify(token)).subject == "user-1"  # and no SecurityWarning (warnings are errors)


async def test_eddsa_header_on_key_published_as_ed25519_rejected(tokens: TokenFactory) -> None:
    lenient = tokens.verifier(algorithms=["Ed25519", "EdDSA"])
    token = tokens.issue(headers={"alg": "EdDSA"})
    await rejected(lenient, token, "The token algorithm does not match its key")


async def test_unknown_kid_rejected(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    await rejected(verifier, tokens.issue(headers={"kid": "nope"}), "The token signing key is unknown")


@pytest.mark.parametrize("kid", [None, "", 7, "k" * 300])
async def test_missing_or_invalid_kid_rejected(
    tokens: TokenFactory, verifier: TokenVerifier, kid: object
) -> None:
    headers = {"kid": kid} if kid is not None else {"kid": None}
    await rejected(verifier, tokens.issue(headers=headers), "The token has no valid key id")


# --- header parameters that point at keys, and crit -------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://evil.example/jwks.json"),
        ("x5u", "https://evil.example/cert.pem"),
        ("x5c", ["MIIBfake"]),
    ],
)
async def test_key_url_headers_rejected_and_never_fetched(
    tokens: TokenFactory, remote_verifier: TokenVerifier, issuer, name: str, value: object
) -> None:
    token = tokens.issue(headers={name: value})
    await rejected(remote_verifier, token, f"The token header parameter '{name}' is not accepted")
    assert all("evil.example" not in url for url in issuer.urls)
    assert issuer.fetches == 0


async def test_embedded_jwk_header_rejected(
    tokens: TokenFactory, remote_verifier: TokenVerifier, issuer
) -> None:
    attacker = TokenFactory()
    embedded = attacker.key().as_dict(private=False)
    token = attacker.issue(headers={"jwk": embedded, "kid": tokens.current_kid})
    await rejected(remote_verifier, token, "The token header parameter 'jwk' is not accepted")
    assert issuer.fetches == 0


async def test_crit_header_rejected(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    token = tokens.issue(headers={"crit": ["exp"], "exp": 1})
    await rejected(verifier, token, "The token header parameter 'crit' is not accepted")


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "at+jwt2", "application/jwt", "at+JWT; x", 1])
async def test_wrong_or_missing_typ_rejected(
    tokens: TokenFactory, verifier: TokenVerifier, typ: object
) -> None:
    await rejected(verifier, tokens.issue(headers={"typ": typ}), TYPE_REFUSED)


async def test_duplicate_header_member_rejected(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    raw_header = f'{{"alg":"HS256","typ":"at+jwt","kid":"{tokens.current_kid}","alg":"Ed25519"}}'
    _, payload, signature = tokens.issue().split(".")
    token = f"{b64url(raw_header.encode())}.{payload}.{signature}"
    await rejected(verifier, token, "The token header is malformed")


# --- claims ------------------------------------------------------------------------------------


async def test_expired_token_rejected(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    token = tokens.issue(issued_at=int(time.time()) - 1000, ttl=300)
    await rejected(verifier, token, "The token has expired", code="token_expired")


async def test_leeway_applies_to_expiry(tokens: TokenFactory) -> None:
    token = tokens.issue(issued_at=int(time.time()) - 310, ttl=300)  # expired 10 s ago
    assert (await tokens.verifier(leeway_seconds=30).verify(token)).subject == "user-1"
    await rejected(tokens.verifier(leeway_seconds=0), token, "The token has expired", code="token_expired")


def test_leeway_above_30_seconds_refused(tokens: TokenFactory) -> None:
    with pytest.raises(ValueError, match="leeway"):
        tokens.verifier(leeway_seconds=31)


async def test_nbf_in_future_rejected(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    token = tokens.issue(extra_claims={"nbf": int(time.time()) + 120})
    await rejected(verifier, token, "The token is not valid yet", code="token_not_yet_valid")


async def test_iat_far_in_future_rejected(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    token = tokens.issue(issued_at=int(time.time()) + 3600)
    await rejected(verifier, token, "The token is not valid yet", code="token_not_yet_valid")


@pytest.mark.parametrize("claim", ["exp", "sub", "iat", "jti", "iss", "aud"])
async def test_missing_required_claim_rejected(
    tokens: TokenFactory, verifier: TokenVerifier, claim: str
) -> None:
    token = tokens.issue(extra_claims={claim: None})
    await rejected(verifier, token, f"The token lacks required claims: {claim}")


@pytest.mark.parametrize(
    "iss",
    [
        "http://127.0.0.1:8000/",
        "http://127.0.0.1:800",
        "https://127.0.0.1:8000",
        "http://127.0.0.1:8000.evil.example",
        "xhttp://127.0.0.1:8000",
        "HTTP://127.0.0.1:8000",
    ],
)
async def test_wrong_issuer_rejected(tokens: TokenFactory, verifier: TokenVerifier, iss: str) -> None:
    token = tokens.issue(extra_claims={"iss": iss})
    await rejected(verifier, token, "The token issuer is not accepted")


async def test_issuer_as_list_rejected(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    token = tokens.issue(extra_claims={"iss": [tokens.issuer]})
    await rejected(verifier, token, "The token issuer is not accepted")


@pytest.mark.parametrize("aud", ["baton-admin", "bato", "Baton", ["other"], ["batons"]])
async def test_wrong_audience_rejected(tokens: TokenFactory, verifier: TokenVerifier, aud: object) -> None:
    token = tokens.issue(extra_claims={"aud": aud})
    await rejected(verifier, token, "The token audience is not accepted")


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"kind": None}, "The token claim 'kind' is malformed"),
        ({"kind": "robot"}, "The token claim 'kind' is malformed"),
        ({"admin": "true"}, "The token claim 'admin' is malformed"),
        ({"memberships": ["c1"]}, "The token claim 'memberships' is malformed"),
        ({"scope": ["a", "b"]}, "The token claim 'scope' is malformed"),
        ({"project_ids": "p1"}, "The token claim 'project_ids' is malformed"),
        ({"exp": "tomorrow"}, "The token claim 'exp' is malformed"),
        ({"sub": 42}, "The token claim 'sub' is malformed"),
    ],
)
async def test_malformed_claims_rejected(
    tokens: TokenFactory, verifier: TokenVerifier, claims: dict, detail: str
) -> None:
    await rejected(verifier, tokens.issue(extra_claims=claims), detail)


async def test_agent_without_client_rejected(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    token = tokens.issue("a1", kind="agent", scopes=["projects:read"])
    await rejected(verifier, token, "The token claim 'client_id' is malformed")


# --- size and garbage --------------------------------------------------------------------------


async def test_200kb_token_rejected_before_parsing(remote_verifier: TokenVerifier, issuer) -> None:
    header = b64url(b'{"alg":"Ed25519","typ":"at+jwt","kid":"k"}')
    token = f"{header}.{'A' * 200_000}.{'B' * 86}"
    await rejected(remote_verifier, token, "The token is too large")
    assert issuer.fetches == 0


async def test_size_cap_applies_to_validly_signed_tokens(tokens: TokenFactory) -> None:
    token = tokens.issue(extra_claims={"padding": "x" * 9000})
    await rejected(tokens.verifier(), token, "The token is too large")
    assert (await tokens.verifier(max_token_bytes=64 * 1024).verify(token)).subject == "user-1"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "..", "a..c", "a.b.", "é.é.é", "a b.c.d", "a+b.c/d.e=", "a.b.c\n"],
)
async def test_garbage_not_compact(verifier: TokenVerifier, token: str) -> None:
    await rejected(verifier, token, NOT_COMPACT)


@pytest.mark.parametrize(
    "header",
    [b"not json", b"[1,2,3]", b'"alg"', b"\xff\xfe", b"[" * 2500 + b"]" * 2500],
)
async def test_garbage_header_rejected(verifier: TokenVerifier, header: bytes) -> None:
    token = f"{b64url(header)}.eyJzdWIiOiJ4In0.c2ln"
    await rejected(verifier, token, "The token header is malformed")


async def test_header_segment_with_bad_base64_length_rejected(verifier: TokenVerifier) -> None:
    await rejected(verifier, "abcde.eyJzdWIiOiJ4In0.c2ln", "The token header is malformed")


async def test_signed_non_json_payload_rejected(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    await rejected(verifier, tokens.sign(b"not json"), "The token is malformed")


async def test_signed_array_payload_rejected(tokens: TokenFactory, verifier: TokenVerifier) -> None:
    await rejected(verifier, tokens.sign(b"[1]"), "The token is malformed")
