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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
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


async def verify_chain(
    session: AsyncSession, chain_id: str, keyring: Keyring, *, page_size: int = 2000
) -> VerifyResult:
    result = VerifyResult(chain=chain_id)
    head = await session.get(Chain, chain_id)
    checkpoints = list(
        (
            await session.execute(
                select(Checkpoint).where(Checkpoint.chain_id == chain_id).order_by(Checkpoint.sequence)
            )
        ).scalars()
    )
    by_sequence = {cp.sequence: cp for cp in checkpoints}
    anchors = await _retention_anchors(session, chain_id)

    expected_sequence: int | None = None
    prev_hash = GENESIS_HASH
    last_hash: str | None = None
    after = 0
    broken = False
    while not broken:
        rows = list(
            (
                await session.execute(
                    select(Entry)
                    .where(Entry.chain_id == chain_id, Entry.sequence > after)
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
        elif head.head_sequence < last or (last and head.head_hash != last_hash):
            result.fail(head.head_sequence or 1, "head_mismatch", "the head row disagrees with the entries")
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
