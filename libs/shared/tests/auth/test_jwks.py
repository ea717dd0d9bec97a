"""JWKSCache against a stand-in issuer (httpx.MockTransport): caching, rotation, flood control,
coalescing, stale serving and failing closed. Fetches are counted from the recorded requests."""

import asyncio

import httpx
import pytest

from shared.auth import InvalidToken, JWKSCache, KeySetUnavailable, TokenVerifier, parse_jwks
from shared.auth.testing import TokenFactory

UNKNOWN_KEY = "The token signing key is unknown"
HMAC_K = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"  # 33 bytes: no weak-key warning


async def test_first_use_fetches_once_then_serves_from_cache(
    tokens: TokenFactory, remote_verifier: TokenVerifier, issuer
) -> None:
    for _ in range(5):
        await remote_verifier.verify(tokens.issue())
    assert issuer.fetches == 1
    request = issuer.requests[0]
    assert request.method == "GET"
    assert "application/jwk-set+json" in request.headers["accept"]


async def test_expired_cache_is_refetched(
    tokens: TokenFactory, remote_verifier: TokenVerifier, issuer, clock
) -> None:
    await remote_verifier.verify(tokens.issue())
    clock.advance(299)
    await remote_verifier.verify(tokens.issue())
    assert issuer.fetches == 1
    clock.advance(2)
    await remote_verifier.verify(tokens.issue())
    assert issuer.fetches == 2


async def test_key_rotation_triggers_exactly_one_refetch(
    tokens: TokenFactory, remote_verifier: TokenVerifier, issuer, clock
) -> None:
    await remote_verifier.verify(tokens.issue())
    clock.advance(60)  # past the cooldown, well inside the cache lifetime
    tokens.add_key("Ed25519")  # identity rotates: a new kid signs from now on
    for _ in range(10):
        p = await remote_verifier.verify(tokens.issue("rotated"))
        assert p.subject == "rotated"
    assert issuer.fetches == 2


async def test_unknown_kid_within_cooldown_does_not_fetch(
    tokens: TokenFactory, remote_verifier: TokenVerifier, issuer, clock
) -> None:
    await remote_verifier.verify(tokens.issue())
    clock.advance(10)
    tokens.add_key("Ed25519")
    with pytest.raises(InvalidToken, match=UNKNOWN_KEY):
        await remote_verifier.verify(tokens.issue())
    assert issuer.fetches == 1


async def test_flood_of_unknown_kids_costs_at_most_one_fetch_per_cooldown(
    tokens: TokenFactory, remote_verifier: TokenVerifier, issuer, clock
) -> None:
    await remote_verifier.verify(tokens.issue())
    assert issuer.fetches == 1

    for i in range(100):  # within the cooldown of the first fetch: nothing
        with pytest.raises(InvalidToken, match=UNKNOWN_KEY):
            await remote_verifier.verify(tokens.issue(headers={"kid": f"bogus-{i}"}))
    assert issuer.fetches == 1

    clock.advance(31)
    issuer.delay = 0.01  # keep the one fetch in flight while the others queue up
    flood = [remote_verifier.verify(tokens.issue(headers={"kid": f"bogus2-{i}"})) for i in range(100)]
    results = await asyncio.gather(*flood, return_exceptions=True)
    assert all(isinstance(r, InvalidToken) for r in results)
    assert issuer.fetches == 2


async def test_concurrent_cold_start_coalesces_into_one_fetch(
    tokens: TokenFactory, remote_verifier: TokenVerifier, issuer
) -> None:
    issuer.delay = 0.02
    token = tokens.issue()
    principals = await asyncio.gather(*(remote_verifier.verify(token) for _ in range(50)))
    assert {p.subject for p in principals} == {"user-1"}
    assert issuer.fetches == 1


async def test_issuer_down_serves_stale_keys_until_bound_then_fails_closed(
    tokens: TokenFactory, remote_verifier: TokenVerifier, issuer, clock
) -> None:
    await remote_verifier.verify(tokens.issue())  # last success at t0
    issuer.down = True

    clock.advance(301)  # cache expired: one attempt fails, the stale set is served
    assert (await remote_verifier.verify(tokens.issue())).subject == "user-1"
    assert issuer.fetches == 2
    clock.advance(5)  # within the cooldown of the failed attempt: no new attempt
    await remote_verifier.verify(tokens.issue())
    assert issuer.fetches == 2

    clock.now += 3600 - 306  # exactly stale_max after the last success: still served
    await remote_verifier.verify(tokens.issue())
    assert issuer.fetches == 3

    clock.advance(31)  # beyond the bound: fail closed
    with pytest.raises(KeySetUnavailable) as info:
        await remote_verifier.verify(tokens.issue())
    assert info.value.status == 401
    assert info.value.instance_code == "jwks_unavailable"
    assert issuer.fetches == 4

    issuer.down = False
    clock.advance(31)
    assert (await remote_verifier.verify(tokens.issue())).subject == "user-1"
    assert issuer.fetches == 5


async def test_cold_start_with_issuer_down_fails_closed(
    tokens: TokenFactory, remote_verifier: TokenVerifier, issuer
) -> None:
    issuer.down = True
    with pytest.raises(KeySetUnavailable):
        await remote_verifier.verify(tokens.issue())
    with pytest.raises(KeySetUnavailable):  # and the retry waits for the cooldown
        await remote_verifier.verify(tokens.issue())
    assert issuer.fetches == 1


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(500, json={"keys": []}),
        httpx.Response(200, text="<html>maintenance</html>"),
        httpx.Response(200, json={"keys": []}),
        httpx.Response(200, json={"keys": [{"kty": "oct", "k": HMAC_K, "kid": "x"}]}),
        httpx.Response(200, json=["not", "a", "set"]),
        httpx.Response(200, content=b'{"keys": [' + b" " * 300_000 + b"]}"),
        httpx.Response(302, headers={"location": "http://evil.example/jwks.json"}),
    ],
)
async def test_bad_issuer_answer_keeps_previous_keys(
    tokens: TokenFactory, remote_verifier: TokenVerifier, issuer, clock, response: httpx.Response
) -> None:
    await remote_verifier.verify(tokens.issue())
    issuer.response = response
    clock.advance(301)
    assert (await remote_verifier.verify(tokens.issue())).subject == "user-1"
    assert issuer.fetches == 2
    assert all("evil.example" not in url for url in issuer.urls)


async def test_removed_key_stops_verifying_after_refresh(
    tokens: TokenFactory, remote_verifier: TokenVerifier, clock
) -> None:
    old = tokens.current_kid
    tokens.add_key("Ed25519")
    await remote_verifier.verify(tokens.issue(kid=old))
    tokens.remove_key(old)
    clock.advance(301)
    assert (await remote_verifier.verify(tokens.issue())).subject == "user-1"
    with pytest.raises(InvalidToken, match=UNKNOWN_KEY):
        await remote_verifier.verify(tokens.issue(kid=old))


async def test_refresh_ignores_cooldown(tokens: TokenFactory, jwks_cache: JWKSCache, issuer) -> None:
    assert await jwks_cache.refresh() is True
    assert await jwks_cache.refresh() is True
    assert issuer.fetches == 2
    assert jwks_cache.kids() == {tokens.current_kid}


async def test_from_settings_uses_settings(tokens: TokenFactory, issuer) -> None:
    from shared.settings import BaseServiceSettings

    settings = BaseServiceSettings(jwks_url="http://identity.test/.well-known/jwks.json")
    verifier = TokenVerifier.from_settings(settings, transport=issuer.transport())
    try:
        assert verifier.issuer == settings.jwt_issuer == tokens.issuer
        assert verifier.algorithms == ("Ed25519", "RS256")
        assert (await verifier.verify(tokens.issue())).subject == "user-1"
        assert issuer.fetches == 1
    finally:
        await verifier.aclose()


def test_jwks_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="URL"):
        JWKSCache("file:///etc/passwd")
    with pytest.raises(ValueError, match="URL"):
        JWKSCache("http://identity.test/jwks.json,file:///etc/passwd")


JWKS_URL = "http://identity.test/.well-known/jwks.json"  # where the stand-in issuer serves (conftest)


async def test_several_urls_are_tried_in_turn_from_the_one_that_answered_last(
    tokens: TokenFactory, issuer, clock
) -> None:
    down = "http://identity-2.test/.well-known/jwks.json"
    async with JWKSCache(
        f"{down}, {JWKS_URL}", refresh_cooldown_seconds=30, transport=issuer.transport(), clock=clock
    ) as cache:
        assert await cache.refresh() is True
        assert cache.kids() == {tokens.current_kid}
        assert cache.url == JWKS_URL
        assert [str(r.url) for r in issuer.requests] == [down, JWKS_URL]  # the stand-in answers 404 there
        assert await cache.refresh() is True
        assert [str(r.url) for r in issuer.requests][2:] == [JWKS_URL]  # starts where it succeeded
        issuer.down = True
        assert await cache.refresh() is False
        assert cache.kids() == {tokens.current_kid}  # the last good set stays
        assert [str(r.url) for r in issuer.requests][3:] == [JWKS_URL, down]


# --- parsing a key set -------------------------------------------------------------------------


def test_parse_jwks_keeps_only_public_signature_keys(tokens: TokenFactory) -> None:
    good = tokens.key().as_dict(private=False)
    private = TokenFactory().key().as_dict(private=True)
    enc = {**TokenFactory().key().as_dict(private=False), "kid": "enc", "use": "enc"}
    no_verify = {**TokenFactory().key().as_dict(private=False), "kid": "ops", "key_ops": ["sign"]}
    no_kid = {k: v for k, v in TokenFactory().key().as_dict(private=False).items() if k != "kid"}
    dup_a = {**TokenFactory().key().as_dict(private=False), "kid": "dup"}
    dup_b = {**TokenFactory().key().as_dict(private=False), "kid": "dup"}
    keys = parse_jwks(
        {
            "keys": [
                good,
                private,
                enc,
                no_verify,
                no_kid,
                dup_a,
                dup_b,
                {"kty": "oct", "k": HMAC_K, "kid": "hmac"},
                {"kty": "OKP", "crv": "Ed25519", "x": "!!", "kid": "broken"},
                {"kty": "PQ", "kid": "future"},
                "junk",
            ]
        }
    )
    assert set(keys) == {good["kid"], private["kid"]}
    assert not keys[private["kid"]].is_private


@pytest.mark.parametrize("document", [None, [], {}, {"keys": {}}, "keys"])
def test_parse_jwks_rejects_non_sets(document: object) -> None:
    with pytest.raises(ValueError, match="not a JWK set"):
        parse_jwks(document)


def test_static_set_without_usable_key_refused() -> None:
    with pytest.raises(ValueError, match="no usable"):
        JWKSCache.from_static({"keys": [{"kty": "oct", "k": HMAC_K, "kid": "hmac"}]})


async def test_static_cache_never_fetches_and_never_expires(tokens: TokenFactory) -> None:
    cache = JWKSCache.from_static(tokens.jwks())
    key = await cache.get_key(tokens.current_kid)
    assert key.kid == tokens.current_kid
    assert await cache.refresh() is True
    with pytest.raises(InvalidToken, match=UNKNOWN_KEY):
        await cache.get_key("other")
