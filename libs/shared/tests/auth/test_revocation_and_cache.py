"""The per-subject not-before hook and the opt-in verified-token cache."""

import time

import pytest

from shared.auth import InvalidToken
from shared.auth.testing import TokenFactory


class WallClock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def revoked(exc: pytest.ExceptionInfo[InvalidToken]) -> bool:
    return exc.value.instance_code == "token_revoked" and exc.value.detail == "The token has been revoked"


async def test_not_before_rejects_tokens_issued_earlier() -> None:
    tokens = TokenFactory()
    now = int(time.time())
    cutoffs = {"alice": now - 50}
    verifier = tokens.verifier(not_before=cutoffs.get)

    with pytest.raises(InvalidToken) as info:
        await verifier.verify(tokens.issue("alice", issued_at=now - 100))
    assert revoked(info)
    assert (await verifier.verify(tokens.issue("alice", issued_at=now - 50))).subject == "alice"
    assert (await verifier.verify(tokens.issue("alice", issued_at=now))).subject == "alice"
    assert (await verifier.verify(tokens.issue("bob", issued_at=now - 100))).subject == "bob"


async def test_not_before_applies_to_cached_tokens() -> None:
    tokens = TokenFactory()
    cutoffs: dict[str, int] = {}
    verifier = tokens.verifier(not_before=cutoffs.get, cache_size=16)
    token = tokens.issue("alice", issued_at=int(time.time()) - 10)
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first  # served from the cache

    cutoffs["alice"] = int(time.time())
    with pytest.raises(InvalidToken) as info:
        await verifier.verify(token)
    assert revoked(info)


async def test_cache_is_opt_in() -> None:
    tokens = TokenFactory()
    verifier = tokens.verifier()
    token = tokens.issue()
    assert await verifier.verify(token) is not await verifier.verify(token)


async def test_cached_token_still_expires() -> None:
    clock = WallClock()
    tokens = TokenFactory(clock=clock)
    verifier = tokens.verifier(cache_size=16, leeway_seconds=0)
    token = tokens.issue(ttl=60)
    first = await verifier.verify(token)
    clock.now += 59
    assert await verifier.verify(token) is first
    clock.now += 1
    with pytest.raises(InvalidToken) as info:
        await verifier.verify(token)
    assert info.value.instance_code == "token_expired"


async def test_cache_is_bounded_least_recently_used_first() -> None:
    tokens = TokenFactory()
    verifier = tokens.verifier(cache_size=2)
    a, b, c = (tokens.issue(sub) for sub in ("a", "b", "c"))
    pa = await verifier.verify(a)
    pb = await verifier.verify(b)
    assert await verifier.verify(a) is pa  # a is now the most recently used
    await verifier.verify(c)  # evicts b
    assert await verifier.verify(a) is pa
    assert await verifier.verify(b) is not pb


async def test_cache_never_serves_a_different_token() -> None:
    tokens = TokenFactory()
    verifier = tokens.verifier(cache_size=16)
    good = tokens.issue()
    await verifier.verify(good)
    header, payload, signature = good.split(".")
    # Change a character in the middle: the last ones carry padding bits, and a
    # fixed replacement can equal what was there.
    middle = len(signature) // 2
    flipped = "B" if signature[middle] == "A" else "A"
    forged = f"{header}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"
    with pytest.raises(InvalidToken):
        await verifier.verify(forged)
