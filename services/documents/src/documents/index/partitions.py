"""Per-client partitions of ``chunks`` and ``chunk_vectors``.

A client's partitions are created when the client appears (``client.created``, or lazily when one of its
projects or uploads is seen first) and dropped when it is deleted. Creating a partition locks the parent
table, so callers run ``ensure_client_partitions`` in its own short transaction, never inside a long one.

The service's role owns nothing and cannot run DDL: both go through the schema's SECURITY DEFINER
functions ``documents_ensure_client_partitions`` and ``documents_drop_client_partitions``
(``documents.index.models.partition_functions_sql``), which act as the schema's owner; the partitions
they create belong to it, and the service reaches them through ``chunks`` and ``chunk_vectors`` only.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from documents.projects.models import KnownClient
from shared.db import transaction

__all__ = [
    "PARTITIONED_TABLES",
    "drop_client_partitions",
    "ensure_client_partitions",
    "ensure_client_partitions_now",
    "partition_name",
]

PARTITIONED_TABLES = ("chunks", "chunk_vectors")


def partition_name(table: str, client_id: uuid.UUID) -> str:
    """``<table>_p_<32 hex>``: derived from a UUID, so always a safe identifier; the partition functions
    derive the same names."""
    if table not in PARTITIONED_TABLES:
        raise ValueError(table)
    return f"{table}_p_{uuid.UUID(str(client_id)).hex}"


async def ensure_client_partitions(session: AsyncSession, client_id: uuid.UUID) -> bool:
    """Create the client's partitions if missing (idempotent, safe under concurrency); False if the client
    is deleted (nothing is created for it again)."""
    client_id = uuid.UUID(str(client_id))
    row = await session.get(KnownClient, client_id)
    if row is not None and row.deleted_at is not None:
        return False
    if row is not None and row.partitioned:
        return True
    # The function takes the same lock again (advisory locks are re-entrant within a session).
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"documents-partition:{client_id}"}
    )
    await session.execute(
        text("SELECT documents_ensure_client_partitions(CAST(:c AS uuid))"), {"c": client_id}
    )
    await session.execute(
        pg_insert(KnownClient)
        .values(id=client_id, partitioned=True)
        .on_conflict_do_update(index_elements=[KnownClient.id], set_={"partitioned": True})
    )
    await session.flush()
    return True


async def ensure_client_partitions_now(
    factory: async_sessionmaker[AsyncSession], client_id: uuid.UUID
) -> bool:
    """``ensure_client_partitions`` in a transaction of its own, skipping it when already done."""
    async with factory() as session:
        done = await session.scalar(
            select(KnownClient.partitioned).where(
                KnownClient.id == client_id, KnownClient.deleted_at.is_(None)
            )
        )
    if done:
        return True
    async with transaction(factory) as session:
        return await ensure_client_partitions(session, client_id)


async def drop_client_partitions(session: AsyncSession, client_id: uuid.UUID) -> None:
    """Drop the client's chunks and vectors at once (a partition drop, not row-by-row deletes)."""
    client_id = uuid.UUID(str(client_id))
    await session.execute(text("SELECT documents_drop_client_partitions(CAST(:c AS uuid))"), {"c": client_id})
