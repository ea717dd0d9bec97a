"""Per-subject not-before times, mirrored in memory from the NATS KV bucket identity writes.

Format (identity writes, the gateway reads): bucket ``baton_not_before``; key = the token subject with
every character outside ``[A-Za-z0-9_-]`` replaced by ``_`` (a UUID subject is its own key); value = the
Unix time in ASCII decimal seconds (a fraction is rounded up). A token of that subject whose ``iat`` is
earlier is refused (``token_revoked``). A deleted or purged key lifts the restriction.

The gateway never creates the bucket (identity owns its configuration): until it exists there is
nothing to enforce, and the watcher keeps looking for it. If the connection drops, the last known values
stay in force and the watch is re-established (it replays every current value).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from typing import Any

__all__ = ["NotBeforeStore", "kv_key", "parse_value"]

log = logging.getLogger("gateway.notbefore")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_RETRY_SECONDS = 1.0


def kv_key(subject: str) -> str:
    return _UNSAFE.sub("_", subject)


def parse_value(raw: bytes) -> int | None:
    """Unix seconds from an entry's value; None when it is not a finite number."""
    try:
        value = float(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return math.ceil(value)


class NotBeforeStore:
    """``revokes(subject, iat)`` is checked by the proxy after ``TokenVerifier.verify`` (rather than as the
    verifier's ``NotBeforeLookup`` hook), so that a refusal still knows whose token it refused."""

    def __init__(self, bucket: str = "baton_not_before") -> None:
        self.bucket = bucket
        self._values: dict[str, int] = {}
        self.watching = False
        self.loaded = False
        self._task: asyncio.Task[None] | None = None
        self._restart = asyncio.Event()

    def lookup(self, subject: str) -> int | None:
        if not self._values:
            return None
        return self._values.get(kv_key(subject))

    def revokes(self, subject: str, issued_at: int) -> bool:
        """Whether a token of ``subject`` issued at ``issued_at`` is refused (``token_revoked``)."""
        not_before = self.lookup(subject)
        return not_before is not None and issued_at < not_before

    def __len__(self) -> int:
        return len(self._values)

    def start(self, nc: Any) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(nc), name="gateway-not-before")

    def restart(self) -> None:
        """Re-establish the watch (after a reconnect)."""
        self._restart.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self, nc: Any) -> None:
        while True:
            try:
                await self._watch(nc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("not-before watch on %s failed: %s; retrying", self.bucket, type(exc).__name__)
            finally:
                self.watching = False
            await asyncio.sleep(_RETRY_SECONDS)

    async def _watch(self, nc: Any) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.errors import BucketNotFoundError, NotFoundError

        js = nc.jetstream()
        while True:
            try:
                kv = await js.key_value(self.bucket)
                break
            except (BucketNotFoundError, NotFoundError):
                # No bucket yet means nobody has been revoked yet.
                self.loaded = True
                await asyncio.sleep(_RETRY_SECONDS)
        watcher = await kv.watchall()
        self._restart.clear()
        fresh: dict[str, int] = {}
        initial = True
        self.watching = True
        try:
            while not self._restart.is_set():
                try:
                    entry = await watcher.updates(timeout=_RETRY_SECONDS)
                except NatsTimeout:
                    continue
                if entry is None:
                    if initial:
                        self._values = fresh  # keys deleted while we were not watching disappear
                        initial = False
                        self.loaded = True
                    continue
                target = fresh if initial else self._values
                if entry.operation in ("DEL", "PURGE"):
                    target.pop(entry.key, None)
                    continue
                value = parse_value(entry.value or b"")
                if value is None:
                    log.warning("not-before entry %r has an unreadable value; ignored", entry.key)
                    continue
                target[entry.key] = value
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()
