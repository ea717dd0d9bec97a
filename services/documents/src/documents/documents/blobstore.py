"""Where version content lives: a small interface, implemented on Postgres ``bytea``.

Keys are opaque strings chosen by the caller (the version id). Object storage (S3, GCS) can replace the
Postgres store without touching the rest of the service; ``put``/``delete`` take the caller's session so
content and metadata commit together here (an object store would need a cleanup sweep for orphans).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from documents.documents.models import Blob

__all__ = ["STREAM_CHUNK_BYTES", "BlobStore", "PostgresBlobStore"]

STREAM_CHUNK_BYTES = 1024 * 1024


class BlobStore(Protocol):
    async def put(self, session: AsyncSession, key: str, client_id: uuid.UUID, data: bytes) -> None: ...

    async def get(self, session: AsyncSession, key: str) -> bytes | None: ...

    def stream(self, key: str, size: int) -> AsyncIterator[bytes]: ...

    async def delete(self, session: AsyncSession, keys: Sequence[str]) -> None: ...

    async def delete_client(self, session: AsyncSession, client_id: uuid.UUID) -> None: ...


class PostgresBlobStore:
    """Content in the ``blobs`` table. ``stream`` reads slices in short transactions of its own, so a
    slow download holds no connection between slices and no request transaction at all."""

    def __init__(self, factory: async_sessionmaker[AsyncSession] | None = None) -> None:
        self.factory = factory

    async def put(self, session: AsyncSession, key: str, client_id: uuid.UUID, data: bytes) -> None:
        session.add(Blob(key=key, client_id=client_id, size_bytes=len(data), data=data))
        await session.flush()

    async def get(self, session: AsyncSession, key: str) -> bytes | None:
        value = await session.scalar(select(Blob.data).where(Blob.key == key))
        return None if value is None else bytes(value)

    async def stream(self, key: str, size: int) -> AsyncIterator[bytes]:
        if self.factory is None:
            raise RuntimeError("PostgresBlobStore.stream needs a session factory")
        offset = 0
        while offset < size:
            async with self.factory() as session:
                part = await session.scalar(
                    select(func.substring(Blob.data, offset + 1, STREAM_CHUNK_BYTES)).where(Blob.key == key)
                )
            if not part:
                return
            offset += len(part)
            yield bytes(part)

    async def delete(self, session: AsyncSession, keys: Sequence[str]) -> None:
        if keys:
            await session.execute(delete(Blob).where(Blob.key.in_(list(keys))))

    async def delete_client(self, session: AsyncSession, client_id: uuid.UUID) -> None:
        await session.execute(delete(Blob).where(Blob.client_id == client_id))
