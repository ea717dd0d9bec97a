"""Login backoff per account and per client IP, counted in Postgres so every replica agrees.

Within ``login_failure_window_seconds``, the first ``*_free_failures`` failures of a key cost nothing;
each further one locks the key for ``base * 2^(n - free)`` seconds (capped at ``login_backoff_max``).
While a key is locked every attempt, right or wrong, is answered 429 with ``Retry-After`` before any
password is checked. Account keys use the normalized email whether or not the account exists, so a lock
reveals nothing about existence. A success clears the account's counter, never the IP's.
"""

from __future__ import annotations

import hashlib
import math
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from identity.config import Settings
from identity.tokens.repository import LoginFailureRepository
from identity.users.repository import email_key
from shared.db import utcnow
from shared.errors import RateLimited

__all__ = ["LoginLocked", "LoginThrottle", "account_key", "ip_key"]


class LoginLocked(RateLimited):
    code = "login_locked"


def account_key(email: str) -> str:
    # Hashed: the table then never holds typed identifiers (which are sometimes passwords).
    return "account:" + hashlib.sha256(email_key(email).encode()).hexdigest()


def ip_key(ip: str) -> str:
    return "ip:" + ip[:64]


class LoginThrottle:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self._repo = LoginFailureRepository(session)
        self._settings = settings

    async def check(self, keys: list[str]) -> None:
        """``LoginLocked`` (429 + Retry-After) when any key is locked."""
        now = utcnow()
        until = await self._repo.locked_until(keys, now)
        if until is not None:
            wait = math.ceil((until - now).total_seconds())
            raise LoginLocked("Too many failed logins; try again later", retry_after=max(1, wait))

    async def failed(self, account: str, ip: str | None) -> None:
        s = self._settings
        now = utcnow()
        window = timedelta(seconds=s.login_failure_window_seconds)
        limits = [(account, s.login_account_free_failures)]
        if ip is not None:
            limits.append((ip, s.login_ip_free_failures))
        for key, free in limits:
            failures = await self._repo.count_failure(key, now, window)
            if failures > free:
                seconds = min(
                    s.login_backoff_base_seconds * 2 ** min(failures - free - 1, 30),
                    s.login_backoff_max_seconds,
                )
                await self._repo.lock(key, now + timedelta(seconds=seconds))

    async def succeeded(self, account: str) -> None:
        await self._repo.clear(account)
