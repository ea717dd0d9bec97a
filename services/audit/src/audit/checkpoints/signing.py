"""The audit service's Ed25519 signing key, its public JWK, and checkpoint signatures.

A checkpoint statement is the RFC 8785 canonical JSON of ``statement(...)``; anyone holding the public key
(``GET /v1/audit/public-key``) can check it without trusting the service or its database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.chain.canonical import canonical_bytes, format_time

__all__ = ["Keyring", "Signer", "b64url", "b64url_decode", "key_id_for", "public_jwk", "statement"]

_KEY_DERIVATION_LABEL = b"baton-audit-checkpoint-signing-key:v1:"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(value: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id_for(public: Ed25519PublicKey) -> str:
    """A stable id: ``audit-`` + the first 16 hex digits of SHA-256 of the raw public key."""
    return "audit-" + hashlib.sha256(_raw_public(public)).hexdigest()[:16]


def public_jwk(public: Ed25519PublicKey) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(_raw_public(public)),
        "kid": key_id_for(public),
        "alg": "Ed25519",
        "use": "sig",
    }


def statement(
    *, chain: str, client_id: str | None, sequence: int, hash_: str, created_at: datetime, key_id: str
) -> dict[str, Any]:
    """What a checkpoint signature covers."""
    return {
        "v": 1,
        "chain": chain,
        "client_id": client_id,
        "sequence": sequence,
        "hash": hash_,
        "created_at": format_time(created_at),
        "key_id": key_id,
    }


class Signer:
    """Holds the private key; ``from_seed`` takes the configured key, ``derived`` a key from the service
    secret (one secret to manage in small deployments; set a dedicated key in production)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id_for(self.public)

    @classmethod
    def from_seed(cls, seed_b64url: str) -> Signer:
        seed = b64url_decode(seed_b64url.strip())
        if len(seed) != 32:
            raise ValueError("the audit signing key must be 32 bytes (base64url)")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def derived(cls, secret: str) -> Signer:
        seed = hashlib.sha256(_KEY_DERIVATION_LABEL + secret.encode()).digest()
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, doc: dict[str, Any]) -> str:
        return b64url(self._private.sign(canonical_bytes(doc)))

    def jwk(self) -> dict[str, str]:
        return public_jwk(self.public)


class Keyring:
    """Public keys checkpoints may be signed with: the current one and retired ones."""

    def __init__(self, current: Ed25519PublicKey, previous: Iterable[str] = ()) -> None:
        keys = [current]
        for raw in previous:
            data = b64url_decode(raw.strip())
            if len(data) != 32:
                raise ValueError("a previous audit public key must be 32 bytes (base64url)")
            keys.append(Ed25519PublicKey.from_public_bytes(data))
        self._keys = {key_id_for(k): k for k in keys}

    def verify(self, key_id: str, doc: dict[str, Any], signature: str) -> bool:
        key = self._keys.get(key_id)
        if key is None:
            return False
        try:
            key.verify(b64url_decode(signature), canonical_bytes(doc))
        except (InvalidSignature, ValueError):
            return False
        return True

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [public_jwk(k) for k in self._keys.values()]}
