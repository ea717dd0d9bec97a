"""The chain on the real Postgres: migrations, append-only enforcement, idempotency, concurrency,
tamper detection, checkpoints and retention."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from audit.chain.canonical import PLATFORM_CHAIN, canonical_bytes
from audit.chain.models import Chain, Checkpoint, Entry, EntryKey
from audit.chain.records import RETENTION_ACTION
from audit.chain.service import PartitionKeeper
from audit.chain.verify import verify_chain
from audit.checkpoints.service import create_due_checkpoints
from audit.checkpoints.signing import Keyring, Signer, b64url_decode
from audit.database import Base
from audit.retention.service import apply_retention, list_partitions
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select

from shared.messaging.outbox import outbox

from .conftest import append, drafts_for

SIGNER = Signer.derived("test secret")
KEYRING = Keyring(SIGNER.public)


async def _verify(factory, chain):
    async with factory() as session:
        return await verify_chain(session, chain, KEYRING, page_size=7)


async def _sequences(factory, chain):
    async with factory() as session:
        rows = await session.execute(
            select(Entry.sequence).where(Entry.chain_id == chain).order_by(Entry.sequence)
        )
        return list(rows.scalars())


async def test_migrations_match_models(audit_schema):
    _schema, engine = audit_schema

    def diff(sync_conn):
        ctx = MigrationContext.configure(sync_conn, opts={"include_schemas": False})
        return compare_metadata(ctx, Base.metadata)

    async with engine.connect() as conn:
        changes = await conn.run_sync(diff)
    # Partitions are created at run time; everything else must match.
    changes = [c for c in changes if not (c[0] == "remove_table" and c[1].name.startswith("entries_"))]
    assert changes == []


async def test_entries_are_append_only_at_the_database(audit_schema, factory, superuser, client_a):
    schema = audit_schema[0]
    await append(factory, drafts_for(client_a, 3))
    await create_due_checkpoints(factory, SIGNER, every_entries=1, every_seconds=3600)
    # Even the owner / a superuser is refused by the trigger.
    for statement in (
        "UPDATE entries SET payload = '{}'::jsonb",
        "DELETE FROM entries",
        "TRUNCATE entries",
        "UPDATE checkpoints SET hash = 'x'",
        "DELETE FROM entry_keys",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await superuser.execute(statement)
    # The runtime role has no UPDATE/DELETE privilege at all, but may read and append.
    role = f"baton_{schema}"
    async with superuser.transaction():
        await superuser.execute(f'SET LOCAL ROLE "{role}"')
        assert await superuser.fetchval("SELECT count(*) FROM entries") == 3
        for statement in (
            "UPDATE entries SET action = 'x'",
            "DELETE FROM entries",
            "DELETE FROM checkpoints",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                async with superuser.transaction():
                    await superuser.execute(statement)
        # Nor may it touch a partition directly.
        part = await superuser.fetchval(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'entries'::regclass LIMIT 1"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with superuser.transaction():
                await superuser.execute(f'DELETE FROM "{part}"')
        # Dropping the current month through the retention function is refused too.
        with pytest.raises(asyncpg.RaiseError, match="not entirely in the past"):
            async with superuser.transaction():
                await superuser.fetchval("SELECT audit_drop_partition($1)", part)
    assert await superuser.fetchval("SELECT count(*) FROM entries") == 3


async def test_chains_per_client_ordered_and_idempotent(factory, client_a, client_b):
    a, b, p = drafts_for(client_a, 5), drafts_for(client_b, 3), drafts_for(None, 2)
    mixed = [a[0], b[0], p[0], a[1], a[2], b[1], p[1], a[3], b[2], a[4]]
    outcome = await append(factory, [*mixed, a[0]])  # a duplicate inside the batch too
    assert len(outcome.appended) == 10
    assert outcome.duplicates == [a[0].event_id]
    again = await append(factory, [a[2], b[1], *drafts_for(client_a, 1)])
    assert sorted(again.duplicates) == sorted([a[2].event_id, b[1].event_id])
    assert [r.sequence for r in again.appended] == [6]

    async with factory() as session:
        rows = (
            (
                await session.execute(
                    select(Entry).where(Entry.chain_id == str(client_a)).order_by(Entry.sequence)
                )
            )
            .scalars()
            .all()
        )
    assert [r.sequence for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.event_id for r in rows[:5]] == [d.event_id for d in a]
    assert all(r.client_id == client_a for r in rows)
    assert [r.prev_hash for r in rows[1:]] == [r.hash for r in rows[:-1]]
    assert rows[0].prev_hash == "0" * 64
    for chain in (str(client_a), str(client_b), PLATFORM_CHAIN):
        result = await _verify(factory, chain)
        assert result.ok, result.first_bad
    assert (await _verify(factory, str(client_b))).entries_checked == 3
    async with factory() as session:
        assert await session.scalar(select(func.count()).select_from(EntryKey)) == 11


async def test_concurrent_appenders_keep_one_chain(factory, client_a):
    """Several appenders (as several replicas would) race on one chain, with overlapping event ids."""
    shared_drafts = drafts_for(client_a, 20)
    keeper = PartitionKeeper(factory)
    await keeper.ensure()

    async def appender(k: int) -> None:
        own = drafts_for(client_a, 30)
        for i in range(0, 30, 5):
            batch = own[i : i + 5] + shared_drafts[(k + i) % 20 : (k + i) % 20 + 2]
            for attempt in range(5):
                try:
                    await append(factory, batch)
                    break
                except Exception as exc:  # ConcurrentAppend: retried like the consumer does
                    if type(exc).__name__ != "ConcurrentAppend" or attempt == 4:
                        raise

    await asyncio.gather(*(appender(k) for k in range(4)))
    sequences = await _sequences(factory, str(client_a))
    async with factory() as session:
        distinct = await session.scalar(
            select(func.count(func.distinct(Entry.event_id))).where(Entry.chain_id == str(client_a))
        )
        head = await session.get(Chain, str(client_a))
    assert sequences == list(range(1, len(sequences) + 1))  # contiguous, no fork, no duplicate sequence
    assert distinct == len(sequences)  # one entry per event id
    assert head.head_sequence == len(sequences)
    assert 120 <= len(sequences) <= 140
    result = await _verify(factory, str(client_a))
    assert result.ok
    assert result.entries_checked == len(sequences)


async def _tamper(superuser, sql, *args):
    async with superuser.transaction():
        await superuser.execute("SET LOCAL session_replication_role = replica")  # triggers off (superuser)
        await superuser.execute(sql, *args)


async def test_verify_names_the_first_broken_sequence(factory, superuser):
    chains = {
        name: uuid.uuid4()
        for name in ("payload", "delete", "reorder", "truncate", "signature", "head", "past_head", "intact")
    }
    for client in chains.values():
        await append(factory, drafts_for(client, 10))
    await create_due_checkpoints(factory, SIGNER, every_entries=5, every_seconds=3600)  # at sequence 10
    async with factory() as session:
        assert await session.scalar(select(func.count()).select_from(Checkpoint)) == len(chains)

    c = {k: str(v) for k, v in chains.items()}
    await _tamper(
        superuser,
        "UPDATE entries SET payload = '{\"i\": 99}' WHERE chain_id = $1 AND sequence = 4",
        c["payload"],
    )
    await _tamper(superuser, "DELETE FROM entries WHERE chain_id = $1 AND sequence = 5", c["delete"])
    await _tamper(
        superuser,
        "UPDATE entries SET sequence = CASE sequence WHEN 3 THEN 4 ELSE 3 END WHERE chain_id = $1 AND sequence IN (3, 4)",
        c["reorder"],
    )
    await _tamper(superuser, "DELETE FROM entries WHERE chain_id = $1 AND sequence > 8", c["truncate"])
    await _tamper(
        superuser,
        "UPDATE chains SET head_sequence = 8, head_hash = (SELECT hash FROM entries WHERE chain_id = $1 AND sequence = 8) WHERE chain_id = $1",
        c["truncate"],
    )
    await _tamper(
        superuser, "UPDATE checkpoints SET hash = repeat('f', 64) WHERE chain_id = $1", c["signature"]
    )
    await _tamper(superuser, "UPDATE chains SET head_hash = repeat('e', 64) WHERE chain_id = $1", c["head"])
    # The head moved back over entries still stored (as if they had been slipped in after it).
    await _tamper(
        superuser,
        "UPDATE chains SET head_sequence = 8, head_hash = (SELECT hash FROM entries WHERE chain_id = $1 AND sequence = 8) WHERE chain_id = $1",
        c["past_head"],
    )

    expected = {
        "payload": (4, "hash_mismatch"),
        "delete": (5, "missing_entry"),
        "reorder": (3, "prev_hash_mismatch"),
        "truncate": (9, "truncated"),
        "signature": (10, "checkpoint_mismatch"),
        "head": (10, "head_mismatch"),
        "past_head": (8, "head_mismatch"),
    }
    for name, (sequence, reason) in expected.items():
        result = await _verify(factory, c[name])
        assert not result.ok, name
        assert (result.first_bad.sequence, result.first_bad.reason) == (sequence, reason), name
    assert any(
        p.reason == "bad_checkpoint_signature" for p in (await _verify(factory, c["signature"])).problems
    )
    intact = await _verify(factory, c["intact"])
    assert intact.ok
    assert intact.entries_checked == 10
    assert intact.checkpoints_checked == 1


class _Interrupted:
    """A session that runs ``then`` (once) right after the first statement whose SQL ``when`` matches."""

    def __init__(self, session, when, then):
        self._session, self._when, self._then, self.fired = session, when, then, False

    def __getattr__(self, name):
        return getattr(self._session, name)

    async def execute(self, statement, *args, **kwargs):
        result = await self._session.execute(statement, *args, **kwargs)  # buffered: safe to interleave
        if not self.fired and self._when(str(statement)):
            self.fired = True
            await self._then()
        return result

    async def get(self, entity, *args, **kwargs):
        row = await self._session.get(entity, *args, **kwargs)
        if not self.fired and self._when(f"SELECT FROM {entity.__tablename__}"):
            self.fired = True
            await self._then()
        return row


def _entry_page(sql: str) -> bool:
    return "FROM entries" in sql and "LIMIT" in sql


def _head_read(sql: str) -> bool:
    return "FROM chains" in sql


@pytest.mark.parametrize("when", [_entry_page, _head_read], ids=["between_pages", "after_the_head"])
async def test_verify_judges_the_chain_as_of_its_head_while_appends_commit(factory, client_a, when):
    """Appends (and a checkpoint of them) committed while verify pages through a healthy chain are not
    tampering: verify checks the chain up to the head it read and reports it intact."""
    chain = str(client_a)
    await append(factory, drafts_for(client_a, 10))
    await create_due_checkpoints(factory, SIGNER, every_entries=1, every_seconds=3600)

    async def append_and_checkpoint():
        await append(factory, drafts_for(client_a, 3))
        assert await create_due_checkpoints(factory, SIGNER, every_entries=1, every_seconds=3600) == 1

    async with factory() as session:
        scanning = _Interrupted(session, when, append_and_checkpoint)
        result = await verify_chain(scanning, chain, KEYRING, page_size=4)
    assert scanning.fired
    assert result.ok, result.problems
    assert (result.entries_checked, result.last_sequence, result.checkpoints_checked) == (10, 10, 1)
    after = await _verify(factory, chain)
    assert after.ok, after.problems
    assert (after.entries_checked, after.checkpoints_checked) == (13, 2)


async def test_checkpoints_are_signed_and_published(factory, client_a):
    await append(factory, drafts_for(client_a, 12))
    await append(factory, drafts_for(None, 2))
    made = await create_due_checkpoints(factory, SIGNER, every_entries=10, every_seconds=3600)
    assert made == 1  # the client chain reached 10 entries; the platform chain is neither big nor old
    made = await create_due_checkpoints(factory, SIGNER, every_entries=10, every_seconds=0.001)
    assert made == 1  # now the platform chain is old enough; the client chain is checkpointed at its head
    assert await create_due_checkpoints(factory, SIGNER, every_entries=1, every_seconds=0.001) == 0

    async with factory() as session:
        cps = (await session.execute(select(Checkpoint).order_by(Checkpoint.chain_id))).scalars().all()
        events = (
            await session.execute(select(outbox.c.tenant, outbox.c.payload).order_by(outbox.c.id))
        ).all()
        head = await session.get(Chain, str(client_a))
    by_chain = {cp.chain_id: cp for cp in cps}
    cp = by_chain[str(client_a)]
    assert (cp.sequence, cp.hash, cp.client_id) == (12, head.head_hash, client_a)
    # An outside party checks it with nothing but the published JWK and the event.
    jwk = SIGNER.jwk()
    public = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
    event = next(p for t, p in events if t == str(client_a))
    assert event["type"] == "baton.audit.checkpoint.created.v1"
    data = event["data"]
    signed = {k: data[k] for k in ("chain", "client_id", "sequence", "hash", "key_id")}
    signed |= {"v": 1, "created_at": cp.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    public.verify(b64url_decode(data["signature"]), canonical_bytes(signed))
    assert data["key_id"] == jwk["kid"]
    assert {t for t, _ in events} == {str(client_a), None}


async def test_retention_drops_a_whole_partition_and_records_itself(factory, superuser, client_a):
    old = datetime(2023, 5, 10, 8, 0, tzinfo=UTC)
    await append(factory, drafts_for(client_a, 4), at=old)
    await append(factory, drafts_for(None, 2), at=old)
    await append(factory, drafts_for(client_a, 3))
    await create_due_checkpoints(factory, SIGNER, every_entries=1, every_seconds=3600)
    async with factory() as session:
        names = [p.name for p in await list_partitions(session)]
        old_hashes = (
            (
                await session.execute(
                    select(Entry.hash)
                    .where(Entry.chain_id == str(client_a), Entry.sequence <= 4)
                    .order_by(Entry.sequence)
                )
            )
            .scalars()
            .all()
        )
    assert "entries_2023_05" in names

    dropped = await apply_retention(factory, PartitionKeeper(factory), keep_months=12)
    assert dropped == ["entries_2023_05"]
    async with factory() as session:
        names = [p.name for p in await list_partitions(session)]
        assert "entries_2023_05" not in names
        remaining = (
            (
                await session.execute(
                    select(Entry).where(Entry.chain_id == str(client_a)).order_by(Entry.sequence)
                )
            )
            .scalars()
            .all()
        )
        keys = await session.scalar(
            select(func.count()).select_from(EntryKey).where(EntryKey.chain_id == str(client_a))
        )
    assert [e.sequence for e in remaining] == [5, 6, 7, 8]
    assert keys == 4
    record = remaining[-1]
    assert record.action == RETENTION_ACTION
    import hashlib

    assert record.payload["removed_from_sequence"] == 1
    assert record.payload["removed_to_sequence"] == 4
    assert record.payload["removed_count"] == 4
    assert record.payload["last_removed_hash"] == old_hashes[-1]
    assert record.payload["removed_digest"] == hashlib.sha256("".join(old_hashes).encode()).hexdigest()
    for chain in (str(client_a), PLATFORM_CHAIN):
        result = await _verify(factory, chain)
        assert result.ok, (chain, result.first_bad)
    assert (await _verify(factory, str(client_a))).first_sequence == 5
    # Nothing else is deletable: the partition of the current month stays.
    assert await apply_retention(factory, PartitionKeeper(factory), keep_months=12) == []


async def test_the_worker_verifies_every_chain_and_exports_what_broke(factory, superuser, client_a, client_b):
    """``Housekeeping.verify`` walks every chain and its metrics name a broken one (chain and first bad
    sequence) for an alert; a healthy log exports no failing series. Running, the job repeats on its own."""
    from audit.config import AuditSettings
    from audit.housekeeping import Housekeeping

    from shared.metrics import Exposition

    await append(factory, drafts_for(client_a, 6))
    await append(factory, drafts_for(client_b, 4))
    housekeeping = Housekeeping(factory, SIGNER, AuditSettings(verify_interval_seconds=0.05), KEYRING)
    exposition = Exposition([housekeeping])
    assert "baton_audit_verify" not in (await exposition.render()).decode()  # nothing until a pass ends

    healthy = await housekeeping.verify()
    assert (healthy.chains, healthy.entries, healthy.failed) == (2, 10, {})
    text = (await exposition.render()).decode()
    assert "baton_audit_verify_entries 10.0" in text
    assert "baton_audit_verify_failed_chains{" not in text

    await _tamper(
        superuser,
        "UPDATE entries SET payload = '{\"i\": 99}' WHERE chain_id = $1 AND sequence = 3",
        str(client_b),
    )
    running = asyncio.create_task(housekeeping.run())
    try:
        for _ in range(200):
            last = housekeeping.last_verify
            if last is not None and last.failed:
                break
            await asyncio.sleep(0.05)
    finally:
        housekeeping.stop()
        await running
    assert set(housekeeping.last_verify.failed) == {str(client_b)}
    text = (await exposition.render()).decode()
    assert (
        f'baton_audit_verify_failed_chains{{chain="{client_b}",reason="hash_mismatch",sequence="3"}} 1.0'
        in text
    )
    assert f'chain="{client_a}"' not in text


async def test_retention_gives_way_to_a_long_read_and_drops_later(factory, superuser, client_a):
    """A reader holding ``entries`` (a verification, an export page) keeps the drop from its lock: after the
    lock timeout retention undoes its transaction (no retention entry left behind, nothing dropped) instead
    of queueing every append behind it; once the reader is gone, the next run drops the partition."""
    await append(factory, drafts_for(client_a, 3), at=datetime(2023, 5, 10, 8, 0, tzinfo=UTC))
    await append(factory, drafts_for(client_a, 1))
    keeper = PartitionKeeper(factory)
    async with superuser.transaction():  # another connection, reading: holds ACCESS SHARE on entries
        assert await superuser.fetchval("SELECT count(*) FROM entries") == 4
        busy = await apply_retention(factory, keeper, keep_months=12, lock_timeout_seconds=0.2)
    assert busy == []
    async with factory() as session:
        assert "entries_2023_05" in [p.name for p in await list_partitions(session)]
        actions = (
            await session.execute(select(Entry.action).where(Entry.chain_id == str(client_a)))
        ).scalars()
        assert RETENTION_ACTION not in list(actions)
    assert await apply_retention(factory, keeper, keep_months=12, lock_timeout_seconds=0.2) == [
        "entries_2023_05"
    ]
    assert (await _verify(factory, str(client_a))).ok


async def test_stopping_the_worker_abandons_a_long_verification(factory, client_a, monkeypatch):
    """A verification still walking a chain when the worker is asked to stop is given up at once (a long
    chain must not outlast the pod's grace period), and an unfinished pass reports nothing."""
    from audit import housekeeping as module
    from audit.config import AuditSettings

    await append(factory, drafts_for(client_a, 2))
    started = asyncio.Event()

    async def endless(*args, **kwargs):
        started.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(module, "verify_chain", endless)
    worker = module.Housekeeping(factory, SIGNER, AuditSettings(verify_interval_seconds=60), KEYRING)
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    worker.stop()
    await asyncio.wait_for(running, 10)  # returns although the chain's verification never would
    assert worker.last_verify is None
