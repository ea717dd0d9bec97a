"""Encryption at rest for private signing keys: AES-256-GCM under a key derived from ``secret_key``.

The data key is HKDF-SHA256(secret_key, info="baton-identity/signing-keys/v1"). Each ciphertext is
``version byte || 96-bit nonce || ciphertext+tag``, authenticated together with the key id, so a row's
private key cannot be swapped into another row unnoticed. Changing ``BATON_SECRET_KEY`` makes stored
keys unreadable: rotate signing keys (new ones get written with the new secret) when you do.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["KeyCipher", "KeyDecryptionFailed"]

_VERSION = b"\x01"
_INFO = b"baton-identity/signing-keys/v1"


class KeyDecryptionFailed(Exception):
    """The stored private key does not decrypt with the configured secret (wrong secret or tampering)."""


class KeyCipher:
    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("an empty secret cannot protect signing keys")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: bytes, *, kid: str) -> bytes:
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, kid.encode())

    def decrypt(self, blob: bytes, *, kid: str) -> bytes:
        if len(blob) < 1 + 12 + 16 or blob[:1] != _VERSION:
            raise KeyDecryptionFailed(f"signing key {kid}: unknown format")
        try:
            return self._aead.decrypt(blob[1:13], blob[13:], kid.encode())
        except InvalidTag:
            raise KeyDecryptionFailed(
                f"signing key {kid}: cannot decrypt with the configured secret"
            ) from None
