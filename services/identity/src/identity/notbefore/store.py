"""The per-subject not-before bucket the gateway reads: NATS KV ``baton_not_before``.

Key: the subject id exactly as in the token's ``sub`` (a UUID string, e.g.
``0193b2c4-5d6e-7f80-9a1b-2c3d4e5f6a7b``). Value: ASCII decimal epoch seconds (e.g. ``b"1732456789"``).
A token of that subject with ``iat`` < value must be refused. Values only ever grow: writes are
compare-and-set, so concurrent or reordered writers cannot lower a stamp. Entries expire after
``not_before_ttl_seconds`` (by then every token issued before the stamp has expired anyway).
"""

from __future__ import annotations

import contextlib
import logging

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

__all__ = ["NotBeforeStore", "parse_stamp"]

log = logging.getLogger(__name__)
_CAS_ATTEMPTS = 20


def parse_stamp(raw: bytes | None) -> int | None:
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


class NotBeforeStore:
    """Owns a NATS connection and the bucket handle; declares the bucket on first use."""

    def __init__(self, nats_url: str, *, bucket: str, ttl_seconds: int, replicas: int = 1) -> None:
        self.nats_url = nats_url
        self.bucket = bucket
        self.ttl_seconds = ttl_seconds
        self.replicas = replicas
        self._nc: NATS | None = None
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is not None and self._nc is not None and self._nc.is_connected:
            return self._kv
        if self._nc is None or self._nc.is_closed:
            self._nc = await nats.connect(
                self.nats_url, name="identity-not-before", max_reconnect_attempts=-1, connect_timeout=2
            )
        js = self._nc.jetstream()
        try:
            self._kv = await js.key_value(self.bucket)
        except (NotFoundError, nats.js.errors.BucketNotFoundError):
            config = KeyValueConfig(
                bucket=self.bucket,
                description="Per-subject not-before (epoch seconds) for access tokens",
                history=1,
                ttl=float(self.ttl_seconds),
                storage=StorageType.FILE,
                replicas=self.replicas,
            )
            try:
                self._kv = await js.create_key_value(config)
            except BadRequestError:  # another writer created it first
                self._kv = await js.key_value(self.bucket)
        return self._kv

    async def ensure_bucket(self) -> None:
        """Declare the bucket now (the worker does at start, so readers find it before any revocation)."""
        await self._bucket()

    async def get(self, subject: str) -> int | None:
        kv = await self._bucket()
        try:
            entry = await kv.get(subject)
        except KeyNotFoundError:
            return None
        return parse_stamp(entry.value)

    async def raise_to(self, subject: str, stamp: int) -> int:
        """Make the stored stamp at least ``stamp``; returns the stored value."""
        kv = await self._bucket()
        value = str(stamp).encode()
        for _ in range(_CAS_ATTEMPTS):
            try:
                entry = await kv.get(subject)
            except KeyNotFoundError:
                try:
                    await kv.create(subject, value)
                    return stamp
                except KeyWrongLastSequenceError:
                    continue
            current = parse_stamp(entry.value)
            if current is not None and current >= stamp:
                return current
            try:
                await kv.update(subject, value, last=entry.revision)
                return stamp
            except KeyWrongLastSequenceError:
                continue
        raise RuntimeError(f"not-before for {subject}: too many concurrent writers")

    async def close(self) -> None:
        nc, self._nc, self._kv = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.drain()
