"""Verifying a chain: recompute every hash, follow every link, check every checkpoint.

What each failure means (``reason`` of ``first_bad``, at the lowest broken ``sequence``):

- ``hash_mismatch``: the stored entry is not what was hashed (a field was changed);
- ``prev_hash_mismatch``: the entry does not follow its predecessor (reordered or replaced entries);
- ``missing_entry``: a sequence number is absent (a deleted entry);
- ``missing_prefix``: the chain starts after 1 and no retention entry accounts for what came before;
- ``truncated``: entries are missing at the tail (the head row or a signed checkpoint names a later one);
- ``head_mismatch``: the head row disagrees with the last entry;
- ``checkpoint_mismatch``: a signed checkpoint names another hash for an entry still present;
- ``bad_checkpoint_signature``: a checkpoint's signature does not verify with a trusted key.

Work is proportional to the chain's length and memory is constant (pages of ``page_size``).

Appends go on while a chain is verified (its pages are separate statements), so the chain is judged as of
its head row read before the first page: checkpoints and retention anchors are read before that head (none
can name a later entry), pages stop at its sequence (an entry appended meanwhile is not read), and entries
stored past the head are looked for at the end in one statement, which sees the head row and the entries
in the same snapshot. Nothing holds a snapshot across the pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from audit.chain.canonical import GENESIS_HASH
from audit.chain.models import Chain, Checkpoint, Entry
from audit.chain.records import RETENTION_ACTION, record_of
from audit.checkpoints.signing import Keyring, statement

__all__ = ["BadEntry", "VerifyResult", "verify_chain"]


@dataclass(frozen=True, slots=True)
class BadEntry:
    sequence: int
    reason: str
    detail: str


@dataclass
class VerifyResult:
    chain: str
    ok: bool = True
    entries_checked: int = 0
    checkpoints_checked: int = 0
    first_sequence: int | None = None
    last_sequence: int | None = None
    first_bad: BadEntry | None = None
    problems: list[BadEntry] = field(default_factory=list)

    def fail(self, sequence: int, reason: str, detail: str) -> None:
        self.problems.append(BadEntry(sequence, reason, detail))
        self.ok = False
        self.first_bad = min(self.problems, key=lambda p: p.sequence)


async def _retention_anchors(session: AsyncSession, chain_id: str) -> dict[int, str]:
    """removed_to_sequence → hash of that last removed entry, from the chain's retention entries."""
    rows = await session.execute(
        select(Entry.payload).where(Entry.chain_id == chain_id, Entry.action == RETENTION_ACTION)
    )
    anchors: dict[int, str] = {}
    for payload in rows.scalars():
        if isinstance(payload, dict):
            to_seq, last_hash = payload.get("removed_to_sequence"), payload.get("last_removed_hash")
            if isinstance(to_seq, int) and isinstance(last_hash, str):
                anchors[to_seq] = last_hash
    return anchors


async def _check_nothing_past_head(session: AsyncSession, chain_id: str, result: VerifyResult) -> None:
    """Entries stored beyond the head row (one statement: an append moves both in one transaction)."""
    stored = select(func.max(Entry.sequence)).where(Entry.chain_id == chain_id).scalar_subquery()
    row = (
        await session.execute(select(Chain.head_sequence, stored).where(Chain.chain_id == chain_id))
    ).one_or_none()
    if row is not None and row[1] is not None and row[1] > row[0]:
        result.fail(row[0] or 1, "head_mismatch", f"entries are stored up to sequence {row[1]}")


async def verify_chain(
    session: AsyncSession, chain_id: str, keyring: Keyring, *, page_size: int = 2000
) -> VerifyResult:
    result = VerifyResult(chain=chain_id)
    # Read before the head (see the module docstring): all they name is at or before it.
    checkpoints = list(
        (
            await session.execute(
                select(Checkpoint).where(Checkpoint.chain_id == chain_id).order_by(Checkpoint.sequence)
            )
        ).scalars()
    )
    by_sequence = {cp.sequence: cp for cp in checkpoints}
    anchors = await _retention_anchors(session, chain_id)
    head = (
        await session.execute(select(Chain.head_sequence, Chain.head_hash).where(Chain.chain_id == chain_id))
    ).one_or_none()

    expected_sequence: int | None = None
    prev_hash = GENESIS_HASH
    last_hash: str | None = None
    after = 0
    bound = () if head is None else (Entry.sequence <= head.head_sequence,)
    broken = False
    while not broken:
        rows = list(
            (
                await session.execute(
                    select(Entry)
                    .where(Entry.chain_id == chain_id, Entry.sequence > after, *bound)
                    .order_by(Entry.sequence)
                    .limit(page_size)
                )
            ).scalars()
        )
        if not rows:
            break
        for row in rows:
            after = row.sequence
            if expected_sequence is None:
                result.first_sequence = row.sequence
                if row.sequence != 1:
                    anchor = anchors.get(row.sequence - 1)
                    if anchor is None:
                        result.fail(row.sequence, "missing_prefix", "entries before it are gone unrecorded")
                        broken = True
                        break
                    prev_hash = anchor
            elif row.sequence != expected_sequence:
                result.fail(expected_sequence, "missing_entry", f"next stored entry is {row.sequence}")
                broken = True
                break
            if row.prev_hash != prev_hash:
                result.fail(row.sequence, "prev_hash_mismatch", "does not follow the previous entry")
                broken = True
                break
            if record_of(row).compute_hash() != row.hash:
                result.fail(row.sequence, "hash_mismatch", "content differs from what was hashed")
                broken = True
                break
            cp = by_sequence.get(row.sequence)
            if cp is not None and cp.hash != row.hash:
                result.fail(row.sequence, "checkpoint_mismatch", f"checkpoint {cp.id} signed another hash")
                broken = True
                break
            result.entries_checked += 1
            result.last_sequence = row.sequence
            prev_hash = last_hash = row.hash
            expected_sequence = row.sequence + 1
        session.expunge_all()  # constant memory: forget the page's objects

    last = result.last_sequence or 0
    if not broken and head is not None:
        if head.head_sequence > last:
            result.fail(last + 1, "truncated", f"the chain head names sequence {head.head_sequence}")
        elif last and head.head_hash != last_hash:
            result.fail(head.head_sequence, "head_mismatch", "the head row disagrees with the entries")
        else:
            await _check_nothing_past_head(session, chain_id, result)
    for cp in checkpoints:
        result.checkpoints_checked += 1
        doc: dict[str, Any] = statement(
            chain=cp.chain_id,
            client_id=None if cp.client_id is None else str(cp.client_id),
            sequence=cp.sequence,
            hash_=cp.hash,
            created_at=cp.created_at,
            key_id=cp.key_id,
        )
        if not keyring.verify(cp.key_id, doc, cp.signature):
            result.fail(cp.sequence, "bad_checkpoint_signature", f"checkpoint {cp.id}")
        elif not broken and cp.sequence > last:
            result.fail(last + 1, "truncated", f"checkpoint {cp.id} was signed at sequence {cp.sequence}")
    return result
