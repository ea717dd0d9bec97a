"""Signing keys: generation, encryption at rest, rotation, the published JWKS and token signing.

Rotation announces the new key ``key_publish_ahead_seconds`` before it signs, so every JWKS cache has it
when the first token signed by it arrives; the old key keeps being published until the last token it
signed has expired (``retired_at`` + access-token lifetime + leeway + a minute).
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.jwk import JWKRegistry, Key, KeyParameters, OKPKey, RSAKey
from sqlalchemy.ext.asyncio import AsyncSession

from identity.config import Settings, SigningAlgorithm
from identity.keys.crypto import KeyCipher
from identity.keys.models import SigningKey
from identity.keys.repository import SigningKeyRepository
from identity.outbox import SERVICE_ACTOR, record
from shared.db import utcnow
from shared.errors import ServiceUnavailable
from shared.events.identity import SigningKeyRotated
from shared.messaging.envelope import Actor

__all__ = [
    "KeyRing",
    "NoSigningKey",
    "ensure_signing_key",
    "generate_private_key",
    "published_jwks",
    "purge_expired_keys",
    "rotate_if_due",
    "rotate_signing_key",
]


class NoSigningKey(ServiceUnavailable):
    code = "no_signing_key"


def generate_private_key(algorithm: SigningAlgorithm, kid: str) -> Key:
    params: KeyParameters = {"kid": kid, "alg": algorithm, "use": "sig"}
    if algorithm == "Ed25519":
        return OKPKey.generate_key("Ed25519", parameters=params)
    if algorithm == "RS256":
        return RSAKey.generate_key(3072, parameters=params)
    raise ValueError(f"unsupported signing algorithm {algorithm!r}")


class KeyRing:
    """Decrypts private keys on first use and keeps them in memory (per process)."""

    def __init__(self, cipher: KeyCipher) -> None:
        self._cipher = cipher
        self._cache: dict[str, Key] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        return cls(KeyCipher(settings.secret_key.get_secret_value()))

    def seal(self, key: Key) -> bytes:
        kid = key.kid or ""
        return self._cipher.encrypt(json.dumps(key.as_dict(private=True)).encode(), kid=kid)

    def private_key(self, row: SigningKey) -> Key:
        key = self._cache.get(row.kid)
        if key is None:
            raw = self._cipher.decrypt(row.private_key_encrypted, kid=row.kid)
            key = JWKRegistry.import_key(json.loads(raw))
            self._cache[row.kid] = key
        return key

    def sign(self, row: SigningKey, claims: dict[str, Any]) -> str:
        """A compact JWS with ``typ: at+jwt`` and the key's ``kid``."""
        header = {"alg": row.algorithm, "typ": "at+jwt", "kid": row.kid}
        return jwt.encode(header, claims, self.private_key(row), algorithms=[row.algorithm])


def _new_kid(now: datetime) -> str:
    return f"{now:%Y%m%d}-{secrets.token_hex(6)}"


async def _create(
    session: AsyncSession, ring: KeyRing, algorithm: SigningAlgorithm, signs_from: datetime
) -> SigningKey:
    kid = _new_kid(signs_from)
    key = generate_private_key(algorithm, kid)
    public = key.as_dict(private=False)
    row = SigningKey(
        kid=kid,
        algorithm=algorithm,
        public_jwk=public,
        private_key_encrypted=ring.seal(key),
        signs_from=signs_from,
    )
    return await SigningKeyRepository(session).add(row)


async def signing_key(session: AsyncSession) -> SigningKey:
    """The key that signs now; ``NoSigningKey`` (503) if none (startup creates one)."""
    row = await SigningKeyRepository(session).signing(utcnow())
    if row is None:
        raise NoSigningKey("No signing key is available")
    return row


async def ensure_signing_key(session: AsyncSession, ring: KeyRing, settings: Settings) -> SigningKey:
    """Create a first signing key when none can sign now (startup of any replica; concurrent-safe)."""
    repo = SigningKeyRepository(session)
    now = utcnow()
    current = await repo.signing(now)
    if current is not None:
        return current
    await repo.lock_rotation()
    current = await repo.signing(now)
    if current is not None:
        return current
    row = await _create(session, ring, settings.signing_algorithm, now)
    await _announce(session, row, previous=None, actor=SERVICE_ACTOR)
    return row


async def rotate_signing_key(
    session: AsyncSession,
    ring: KeyRing,
    settings: Settings,
    *,
    algorithm: SigningAlgorithm | None = None,
    publish_ahead_seconds: int | None = None,
    actor: Actor = SERVICE_ACTOR,
) -> SigningKey:
    """Introduce a new key and schedule the retirement of every older one."""
    repo = SigningKeyRepository(session)
    await repo.lock_rotation()
    now = utcnow()
    ahead = settings.key_publish_ahead_seconds if publish_ahead_seconds is None else publish_ahead_seconds
    previous = await repo.signing(now)
    signs_from = now + timedelta(seconds=ahead)
    row = await _create(session, ring, algorithm or settings.signing_algorithm, signs_from)
    tokens_live = timedelta(seconds=settings.access_token_ttl_seconds + settings.jwt_leeway_seconds + 60)
    for old in await repo.unretired():
        if old.kid == row.kid:
            continue
        old.retired_at = signs_from
        old.publish_until = signs_from + tokens_live
    await session.flush()
    await _announce(session, row, previous=previous, actor=actor)
    return row


async def rotate_if_due(session: AsyncSession, ring: KeyRing, settings: Settings) -> SigningKey | None:
    """Rotate when the newest key is older than ``key_rotation_days`` (0 disables); the worker calls it."""
    if settings.key_rotation_days <= 0:
        return None
    newest = await SigningKeyRepository(session).newest()
    if newest is not None and utcnow() - newest.signs_from < timedelta(days=settings.key_rotation_days):
        return None
    return await rotate_signing_key(session, ring, settings)


async def purge_expired_keys(session: AsyncSession) -> int:
    """Delete keys no longer published a day after: their private halves are never needed again."""
    repo = SigningKeyRepository(session)
    cutoff = utcnow() - timedelta(days=1)
    expired = await repo.unpublished_since(cutoff)
    for key in expired:
        await repo.delete(key)
    return len(expired)


async def published_jwks(session: AsyncSession) -> dict[str, Any]:
    rows = await SigningKeyRepository(session).published(utcnow())
    return {"keys": [dict(row.public_jwk) for row in rows]}


async def _announce(
    session: AsyncSession, row: SigningKey, *, previous: SigningKey | None, actor: Actor
) -> None:
    await record(
        session,
        SigningKeyRotated(
            kid=row.kid,
            algorithm=row.algorithm,
            signs_from=int(row.signs_from.timestamp()),
            previous_kid=previous.kid if previous else None,
        ),
        actor=actor,
        resource_id=row.kid,
    )
