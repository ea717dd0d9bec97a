"""Ingestion on the real JetStream and Postgres: producer relays publish, the audit consumers record.

Producers are real ``shared.messaging.OutboxRelay`` instances on fresh schemas (outbox rows written as
``emit`` writes them), so replays go through the real request-reply protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

import pytest
from audit.chain.canonical import PLATFORM_CHAIN
from audit.chain.models import Entry, Producer
from audit.chain.verify import verify_chain
from audit.checkpoints.signing import Keyring, Signer
from audit.config import AuditSettings
from audit.ingest.consumer import consumer_name
from audit.ingest.healing import ProducerReport, reconcile_once
from audit.ingest.runner import AuditIngest
from sqlalchemy import func, insert, select

from shared.db import new_id, schema_metadata, utcnow
from shared.messaging import Actor, Envelope, OutboxRelay, add_messaging_tables, ensure_stream, to_nats
from shared.messaging.outbox import outbox

KEYRING = Keyring(Signer.derived("x").public)
FAST = {
    "discovery_interval_seconds": 0.2,
    "fetch_timeout_seconds": 0.2,
    "gap_grace_seconds": 0.5,
    "gap_check_interval_seconds": 0.2,
    "replay_retry_seconds": 1.0,
    "reconcile_interval_seconds": 0.5,
    "replay_timeout_seconds": 2.0,
}


async def _producer(fresh_schema):
    metadata = schema_metadata()
    add_messaging_tables(metadata)
    _, engine = await fresh_schema("producer", metadata)
    return engine


def _envelope(service: str, tenant: uuid.UUID | None, i: int) -> Envelope:
    return Envelope(
        id=str(new_id()),
        source=f"/baton/{service}",
        type=f"baton.{service}.thing.happened.v1",
        subject=f"thing-{i}",
        time=utcnow(),
        tenant=None if tenant is None else str(tenant),
        actor=Actor(subject=f"user-{i % 3}", kind="user", name="Ada"),
        traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01",
        data={"i": i, "service": service},
    )


async def _emit(engine, envelopes) -> None:
    """What ``shared.messaging.emit`` writes, for event types that are not in the catalog."""
    async with engine.begin() as conn:
        for e in envelopes:
            await conn.execute(
                insert(outbox).values(
                    id=uuid.UUID(e.id),
                    event_type=e.type,
                    subject=e.nats_subject,
                    tenant=e.tenant,
                    payload=e.model_dump(mode="json", exclude_none=True),
                )
            )


async def _until(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what} (last: {value!r})")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _running(*components):
    tasks = [asyncio.create_task(c.run()) for c in components]
    try:
        yield
    finally:
        for c in components:
            c.stop()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)


async def _count(factory, *where) -> int:
    async with factory() as session:
        return int(await session.scalar(select(func.count()).select_from(Entry).where(*where)) or 0)


async def _stream_count(js, stream: str) -> int:
    try:
        return (await js.stream_info(stream)).state.messages
    except Exception:
        return 0


async def test_two_streams_land_in_order_once_with_raw_messages_kept(
    clean_jetstream, nats_url, fresh_schema, factory, client_a, client_b
):
    js = clean_jetstream
    alpha, beta = await _producer(fresh_schema), await _producer(fresh_schema)
    alpha_events = [_envelope("alpha", client_a if i % 2 else client_b, i) for i in range(30)]
    beta_events = [_envelope("beta", client_a if i % 2 else None, i) for i in range(20)]
    relays = [
        OutboxRelay(alpha, nats_url, "alpha", poll_interval=0.1),
        OutboxRelay(beta, nats_url, "beta", poll_interval=0.1),
    ]
    ingest = AuditIngest(factory, nats_url, AuditSettings(**FAST))
    async with _running(*relays, ingest):
        await _emit(alpha, alpha_events[:15])
        await _emit(beta, beta_events[:10])
        await _emit(alpha, alpha_events[15:])
        await _emit(beta, beta_events[10:])
        await _until(lambda: _count(factory), what="first entries")
        # A duplicate delivery (a second publish JetStream did not dedupe) and an unreadable message.
        first = await js.get_msg("BATON_ALPHA", 1)
        headers = {**first.headers, "Nats-Msg-Id": "another-publish"}
        await js.publish(first.subject, first.data, headers=headers)
        await js.publish(
            "baton.beta.junk.arrived", b"\xff\x00 not json", headers={"ce-type": "baton.beta.junk.arrived.v1"}
        )
        await _until(lambda: _at_least(factory, 51), what="51 entries")
        await asyncio.sleep(0.5)  # let a wrongly duplicated entry show up, if it would

    assert await _count(factory) == 51
    assert await _count(factory, Entry.event_id == alpha_events[0].id) == 1
    async with factory() as session:
        rows = (await session.execute(select(Entry).order_by(Entry.chain_id, Entry.sequence))).scalars().all()
        producers = {p.producer: p for p in (await session.execute(select(Producer))).scalars()}
    by_id = {r.event_id: r for r in rows}
    # Every event once, on its tenant's chain (no tenant: the platform chain), with its metadata.
    for e in alpha_events + beta_events:
        entry = by_id[e.id]
        assert entry.chain_id == (e.tenant or PLATFORM_CHAIN)
        assert (entry.action, entry.actor_subject, entry.resource_id) == (e.type, e.actor.subject, e.subject)
        assert entry.resource_type == "thing"
        assert entry.trace_id == "ab" * 16
        assert entry.payload == e.data
        assert not entry.flagged
    # In order: within each chain, each producer's events follow its sequence.
    for chain in {r.chain_id for r in rows}:
        for producer in ("alpha", "beta"):
            seqs = [
                r.producer_sequence
                for r in rows
                if r.chain_id == chain and r.producer == producer and not r.flagged
            ]
            assert seqs == sorted(seqs)
        assert [r.sequence for r in rows if r.chain_id == chain] == list(
            range(1, 1 + sum(r.chain_id == chain for r in rows))
        )
    alpha_rows = sorted((r for r in rows if r.producer == "alpha"), key=lambda r: r.producer_sequence)
    assert [by_id[e.id].producer_sequence for e in alpha_events] == list(range(1, 31))
    assert [r.stream_sequence for r in alpha_rows] == list(range(1, 31))
    # The unreadable message is kept, flagged, on the platform chain.
    raw = [r for r in rows if r.flagged]
    assert len(raw) == 1
    assert raw[0].chain_id == PLATFORM_CHAIN
    assert raw[0].flag_reason.startswith("unparseable")
    assert raw[0].action == "baton.beta.junk.arrived.v1"
    assert "body_base64" in raw[0].payload
    assert (producers["alpha"].high_water, producers["beta"].high_water) == (30, 20)
    assert producers["alpha"].gaps == []
    assert producers["beta"].gaps == []
    async with factory() as session:
        for chain in (str(client_a), str(client_b), PLATFORM_CHAIN):
            assert (await verify_chain(session, chain, KEYRING)).ok


async def _at_least(factory, n: int) -> bool:
    return await _count(factory) >= n


async def test_an_event_the_log_keeps_refusing_is_stored_raw_after_the_delivery_limit(
    clean_jetstream, nats_url, superuser, factory, client_a
):
    js = clean_jetstream
    refused, fine = _envelope("kappa", client_a, 0), _envelope("kappa", client_a, 1)
    # Appending this one event fails every time (as a constraint it breaks would), nothing else does.
    await superuser.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation'; END $$"
    )
    await superuser.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON entry_keys FOR EACH ROW "
        f"WHEN (NEW.event_id = '{refused.id}') EXECUTE FUNCTION refuse()"
    )
    await ensure_stream(js, "kappa")
    for sequence, envelope in enumerate((refused, fine), start=1):
        subject, headers, body = to_nats(envelope)
        headers["ce-sequence"] = str(sequence)  # as the producer's relay numbers them
        await js.publish(subject, body, headers=headers)
    settings = AuditSettings(**{**FAST, "raw_fallback_after_deliveries": 2})
    ingest = AuditIngest(factory, nats_url, settings)
    async with _running(ingest):
        await _until(lambda: _at_least(factory, 2), timeout=30, what="the raw entry")
        consumer = ingest.consumers["BATON_KAPPA"]

        async def settled():
            info = await js.consumer_info("BATON_KAPPA", consumer.durable)
            return (info.num_ack_pending, info.num_pending) == (0, 0)

        await _until(settled, what="both messages acknowledged")  # nothing left to redeliver
    assert consumer.stats.naks == 2  # the two deliveries the limit allows, then the raw entry

    async with factory() as session:
        rows = {r.event_id: r for r in (await session.execute(select(Entry))).scalars()}
        state = await session.get(Producer, "kappa")
        for chain in (str(client_a), PLATFORM_CHAIN):
            assert (await verify_chain(session, chain, KEYRING)).ok
    # The raw entry holds the producer's sequence 1: the next event followed it and nothing counts as lost.
    report = ProducerReport.of(state)
    assert (report.contiguous_through, report.gaps_open, report.lost) == (2, 0, 0)
    assert set(rows) == {fine.id, "raw:BATON_KAPPA:1"}
    assert not rows[fine.id].flagged
    raw = rows["raw:BATON_KAPPA:1"]
    assert raw.flagged
    assert raw.flag_reason == "refused: not appended after 2 deliveries"  # readable, so not "unparseable"
    assert consumer.stats.raw == 1
    assert (raw.chain_id, raw.action, raw.source_stream, raw.stream_sequence) == (
        PLATFORM_CHAIN,
        refused.type,
        "BATON_KAPPA",
        1,
    )
    # What came is kept as it came: the event can be read back from the raw entry.
    assert raw.payload["headers"]["ce-id"] == refused.id
    assert json.loads(raw.payload["body_text"]) == refused.data


async def test_two_audit_replicas_keep_one_gap_free_chain(
    clean_jetstream, nats_url, fresh_schema, factory, client_a
):
    producer = await _producer(fresh_schema)
    events = [_envelope("delta", client_a, i) for i in range(200)]
    await _emit(producer, events)
    relay = OutboxRelay(producer, nats_url, "delta", poll_interval=0.1)
    assert await relay.relay_once() == 200  # the backlog is in the stream before both replicas start
    await relay.close()
    settings = AuditSettings(**{**FAST, "fetch_batch": 7})
    replicas = [AuditIngest(factory, nats_url, settings, name=f"audit-{i}") for i in range(2)]
    async with _running(*replicas):
        await _until(lambda: _at_least(factory, 200), timeout=40, what="200 entries")
        await asyncio.sleep(0.3)
    both_worked = [r.consumers["BATON_DELTA"].stats.appended for r in replicas]
    assert all(n > 0 for n in both_worked), both_worked  # both replicas appended to the same chain
    async with factory() as session:
        seqs = (
            (
                await session.execute(
                    select(Entry.sequence).where(Entry.chain_id == str(client_a)).order_by(Entry.sequence)
                )
            )
            .scalars()
            .all()
        )
        ids = (await session.execute(select(func.count(func.distinct(Entry.event_id))))).scalar()
        result = await verify_chain(session, str(client_a), KEYRING)
        order = (
            (
                await session.execute(
                    select(Entry.producer_sequence)
                    .where(Entry.chain_id == str(client_a))
                    .order_by(Entry.sequence)
                )
            )
            .scalars()
            .all()
        )
    assert seqs == list(range(1, 201))
    assert ids == 200
    assert result.ok
    assert result.entries_checked == 200
    # Two replicas fetching interleaved batches still append the producer's events in its order.
    assert order == list(range(1, 201))


async def test_gap_left_by_lost_messages_is_healed_by_replay(
    clean_jetstream, nats_url, fresh_schema, factory, client_a
):
    js = clean_jetstream
    producer = await _producer(fresh_schema)
    events = [_envelope("gamma", client_a, i) for i in range(8)]
    relay = OutboxRelay(producer, nats_url, "gamma", poll_interval=0.1)
    async with _running(relay):
        await _emit(producer, events)

        async def published():
            return await _stream_count(js, "BATON_GAMMA") == 8

        await _until(published, what="8 published")
        # JetStream "loses" acknowledged messages: one in the middle and the tail; the outbox keeps them.
        for seq in (3, 4, 8):
            assert await js.delete_msg("BATON_GAMMA", seq)
        ingest = AuditIngest(factory, nats_url, AuditSettings(**FAST))
        async with _running(ingest):
            await _until(lambda: _at_least(factory, 8), timeout=30, what="healed entries")
            reports = await reconcile_once(factory, ingest.nc, ingest.settings)
            metrics = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for fam in await ingest.metrics()
                for sample in fam.samples
            }

    async with factory() as session:
        rows = (await session.execute(select(Entry).order_by(Entry.sequence))).scalars().all()
        state = await session.get(Producer, "gamma")
        assert (await verify_chain(session, str(client_a), KEYRING)).ok
    # In the producer's order: 5..7 waited for the replayed 3 and 4.
    assert [r.producer_sequence for r in rows] == list(range(1, 9))
    healed = {r.producer_sequence for r in rows if r.stream_sequence is None}
    # The lost ones came from the replay; 5..7, delivered but held behind the hole, from either.
    assert {3, 4, 8} <= healed <= {3, 4, 5, 6, 7, 8}
    assert {r.event_id for r in rows} == {e.id for e in events}
    assert (state.high_water, state.gaps, state.reported_last) == (8, [], 8)
    assert state.replays_requested >= 2
    assert state.replayed_entries == len(healed)
    report = next(r for r in reports if r.producer == "gamma")
    assert (report.last_sequence_seen, report.gaps_open, report.producer_last_sequence) == (8, 0, 8)
    # What /metrics shows an operator: the producer complete, the replays it took, the stream drained.
    gamma = (("producer", "gamma"),)
    assert metrics["baton_audit_producer_contiguous_sequence", gamma] == 8
    assert metrics["baton_audit_producer_gaps_open", gamma] == 0
    assert metrics["baton_audit_producer_lost_events", gamma] == 0
    assert metrics["baton_audit_producer_replays_requested_total", gamma] == state.replays_requested
    stream = (("consumer", consumer_name("BATON_GAMMA")), ("stream", "BATON_GAMMA"))
    assert metrics["baton_consumer_pending_messages", stream] == 0


async def test_nothing_lost_or_doubled_across_broker_restart_and_a_killed_consumer(
    clean_jetstream, nats, nats_url, fresh_schema, factory, client_a, client_b
):
    nats.require_restart()
    producer = await _producer(fresh_schema)
    events = [_envelope("omega", client_a if i % 3 else client_b, i) for i in range(120)]
    relay = OutboxRelay(producer, nats_url, "omega", poll_interval=0.1)
    async with _running(relay):
        first = AuditIngest(factory, nats_url, AuditSettings(**FAST), name="audit-first")
        task = asyncio.create_task(first.run())
        await _emit(producer, events[:40])
        await _until(lambda: _at_least(factory, 20), what="some entries")
        task.cancel()  # killed mid-flight: no graceful stop, whatever it fetched is redelivered
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(Exception):
            await first.nc.close()
        await _emit(producer, events[40:80])
        nats.restart()
        second = AuditIngest(factory, nats_url, AuditSettings(**FAST), name="audit-second")
        async with _running(second):
            await _emit(producer, events[80:])
            await _until(lambda: _at_least(factory, 120), timeout=40, what="120 entries")
            await asyncio.sleep(0.5)
    assert await _count(factory) == 120
    async with factory() as session:
        ids = set((await session.execute(select(Entry.event_id))).scalars())
        state = await session.get(Producer, "omega")
        for chain in (str(client_a), str(client_b)):
            assert (await verify_chain(session, chain, KEYRING)).ok
    assert ids == {e.id for e in events}
    assert (state.high_water, state.gaps) == (120, [])
