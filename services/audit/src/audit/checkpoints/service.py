"""Creating checkpoints: every ``every_entries`` entries or ``every_seconds`` seconds per chain.

Each due chain is handled in its own short transaction that locks its head (``SKIP LOCKED``: a chain busy
with an append, or taken by another replica, is simply looked at again on the next pass), signs
(chain, head sequence, head hash), stores the checkpoint, and writes ``baton.audit.checkpoint.created.v1``
to the outbox in the same transaction.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.chain.canonical import PLATFORM_CHAIN
from audit.chain.models import Chain, Checkpoint
from audit.checkpoints.signing import Signer, statement
from shared.db import new_id
from shared.events.audit import CheckpointCreated
from shared.messaging import Actor, emit

__all__ = ["SERVICE_ACTOR", "create_checkpoint", "create_due_checkpoints", "due_chains"]

log = logging.getLogger(__name__)

SERVICE_ACTOR = Actor(subject="audit", kind="service", name="Baton audit")


async def due_chains(session: AsyncSession, *, every_entries: int, every_seconds: float) -> list[str]:
    age = func.now() - func.coalesce(Chain.checkpoint_at, Chain.created_at)
    rows = await session.execute(
        select(Chain.chain_id)
        .where(
            Chain.head_sequence > Chain.checkpoint_sequence,
            or_(
                Chain.head_sequence - Chain.checkpoint_sequence >= every_entries,
                age >= timedelta(seconds=every_seconds),
            ),
        )
        .order_by(Chain.chain_id)
    )
    return list(rows.scalars())


async def create_checkpoint(session: AsyncSession, chain_id: str, signer: Signer) -> Checkpoint | None:
    """Checkpoint the chain's current head, unless it is locked or already checkpointed at its head."""
    head = (
        await session.execute(
            select(Chain).where(Chain.chain_id == chain_id).with_for_update(skip_locked=True)
        )
    ).scalar_one_or_none()
    if head is None or head.head_sequence <= head.checkpoint_sequence:
        return None
    created_at = (await session.execute(select(func.clock_timestamp()))).scalar_one()
    client_id = None if chain_id == PLATFORM_CHAIN else head.client_id
    doc = statement(
        chain=chain_id,
        client_id=None if client_id is None else str(client_id),
        sequence=head.head_sequence,
        hash_=head.head_hash,
        created_at=created_at,
        key_id=signer.key_id,
    )
    checkpoint = Checkpoint(
        id=new_id(),
        chain_id=chain_id,
        client_id=client_id,
        sequence=head.head_sequence,
        hash=head.head_hash,
        created_at=created_at,
        key_id=signer.key_id,
        signature=signer.sign(doc),
    )
    session.add(checkpoint)
    await session.execute(
        update(Chain)
        .where(Chain.chain_id == chain_id)
        .values(checkpoint_sequence=head.head_sequence, checkpoint_at=created_at)
    )
    await emit(
        session,
        CheckpointCreated(
            checkpoint_id=checkpoint.id,
            chain=chain_id,
            client_id=client_id,
            sequence=checkpoint.sequence,
            hash=checkpoint.hash,
            created_at=created_at,
            key_id=checkpoint.key_id,
            signature=checkpoint.signature,
        ),
        tenant=client_id,
        actor=SERVICE_ACTOR,
        resource_id=checkpoint.id,
        source_service="audit",
    )
    await session.flush()
    return checkpoint


async def create_due_checkpoints(
    factory: async_sessionmaker[AsyncSession], signer: Signer, *, every_entries: int, every_seconds: float
) -> int:
    """One pass over the chains; how many checkpoints were made."""
    async with factory() as session:
        chains = await due_chains(session, every_entries=every_entries, every_seconds=every_seconds)
    made = 0
    for chain_id in chains:
        async with factory() as session, session.begin():
            if await create_checkpoint(session, chain_id, signer) is not None:
                made += 1
    if made:
        log.info("created %d checkpoint(s)", made)
    return made
