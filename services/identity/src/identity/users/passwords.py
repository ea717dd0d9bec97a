"""Password rules and Argon2id hashing.

Hashing and verifying are deliberately slow (tens of milliseconds, tens of MiB), so they run in a worker
thread and never block the event loop. ``verify_dummy`` spends the same effort when there is no account,
so that a login for an unknown email takes as long as one with a wrong password.
"""

from __future__ import annotations

import asyncio
import secrets
import unicodedata

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from identity.config import Settings

__all__ = ["MAX_PASSWORD_LENGTH", "MIN_PASSWORD_LENGTH", "PasswordHasher", "check_password_rules"]

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256


def check_password_rules(password: str) -> str:
    """Length 12-256 characters (after Unicode NFKC normalization) and not only whitespace.

    Raises ``ValueError`` (pydantic turns it into a 422) with a message that says the rule.
    """
    normalized = unicodedata.normalize("NFKC", password)
    if len(normalized) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(normalized) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"the password must be at most {MAX_PASSWORD_LENGTH} characters long")
    if not normalized.strip():
        raise ValueError("the password must not be only whitespace")
    return password


def _prepare(password: str) -> bytes:
    return unicodedata.normalize("NFKC", password).encode()


class PasswordHasher:
    """Argon2id with the costs from settings."""

    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._argon2 = _Argon2(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        self._dummy_hash = self._argon2.hash(secrets.token_bytes(32))

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordHasher:
        return cls(
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, _prepare(password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._argon2.hash, _prepare(password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; with no hash (no account, no password) the dummy is checked."""
        if password_hash is None:
            await asyncio.to_thread(self._verify_sync, self._dummy_hash, password)
            return False
        return await asyncio.to_thread(self._verify_sync, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True
