"""The outbox relay against real Postgres and real JetStream, including broker, database and relay crashes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import ClassVar

import orjson
import pytest
from sqlalchemy import func, text, update

from shared.db import transaction
from shared.events import Event, register
from shared.messaging import Actor, OutboxRelay, emit, request_replay, stream_name
from shared.messaging.outbox import outbox
from shared.messaging.streams import replay_subject

SERVICE = "relaytest"
STREAM = stream_name(SERVICE)
ACTOR = Actor(subject="u-1", kind="user", name="Ada")


@register
class ItemCreated(Event):
    """An item was created (test event)."""

    event_type: ClassVar[str] = "baton.relaytest.item.created.v1"
    n: int


async def emit_items(db, count: int, *, start: int = 0, rollback: bool = False) -> list[str]:
    """Emit ``count`` events in one transaction; their ids (committed unless ``rollback``)."""

    class Rollback(Exception):
        pass

    ids: list[str] = []
    try:
        async with transaction(db.sessions) as session:
            for n in range(start, start + count):
                env = await emit(
                    session, ItemCreated(n=n), tenant=uuid.uuid4(), actor=ACTOR, resource_id=f"item-{n}"
                )
                ids.append(env.id)
            if rollback:
                raise Rollback
    except Rollback:
        pass
    return ids


def relay_for(db, nats_url: str, cls: type[OutboxRelay] = OutboxRelay, **kwargs) -> OutboxRelay:
    kwargs.setdefault("poll_interval", 0.2)
    kwargs.setdefault("publish_timeout", 2.0)
    kwargs.setdefault("max_backoff", 0.5)
    return cls(db.sessions, nats_url, SERVICE, **kwargs)


def assert_stream_matches_outbox(messages, rows) -> None:
    """Every committed row is in the stream exactly once, with the row's sequence; nothing else is."""
    stream_ids = [m.headers["Nats-Msg-Id"] for m in messages]
    assert len(stream_ids) == len(set(stream_ids)), "duplicate in the stream"
    assert sorted(stream_ids) == sorted(str(r.id) for r in rows)
    by_id = {str(r.id): r for r in rows}
    for m in messages:
        assert int(m.headers["ce-sequence"]) == by_id[m.headers["Nats-Msg-Id"]].sequence
    assert sorted(r.sequence for r in rows) == list(range(1, len(rows) + 1))


async def test_publishes_each_committed_event_once_in_id_order_with_gap_free_sequences(
    db, nats_url, clean_jetstream, stream_reader
):
    committed = await emit_items(db, 5)
    rolled_back = await emit_items(db, 3, start=5, rollback=True)
    committed += await emit_items(db, 5, start=8)

    relay = relay_for(db, nats_url)
    try:
        assert await relay.relay_once() == 10
        assert await relay.relay_once() == 0  # nothing is published twice
    finally:
        await relay.close()

    messages = await stream_reader(clean_jetstream, STREAM)
    assert [m.headers["ce-id"] for m in messages] == sorted(committed) == committed  # UUIDv7: id order
    assert not set(rolled_back) & {m.headers["ce-id"] for m in messages}
    assert [int(m.headers["ce-sequence"]) for m in messages] == list(range(1, 11))
    first = messages[0]
    assert first.subject == "baton.relaytest.item.created"
    assert first.headers["Nats-Msg-Id"] == first.headers["ce-id"]
    env = first.envelope
    assert env.type == ItemCreated.event_type
    assert env.source == "/baton/relaytest"
    assert env.actor == ACTOR
    assert env.subject == "item-0"
    assert env.sequence == 1
    assert env.parse_data(ItemCreated) == ItemCreated(n=0)
    assert await db.unsent() == 0
    assert_stream_matches_outbox(messages, await db.outbox_rows())


async def test_notify_wakes_the_relay_without_waiting_for_the_poll(
    db, nats_url, clean_jetstream, background, eventually
):
    relay = relay_for(db, nats_url, poll_interval=30.0)
    background(relay)
    await relay.wait_leader(10)
    await asyncio.sleep(0.3)  # the first poll has happened; the next one is 30 s away
    await emit_items(db, 3)
    await eventually(lambda: _unsent_is(db, 0), timeout=5)
    assert relay.stats.published == 3


async def _unsent_is(db, n: int) -> bool:
    return await db.unsent() == n


async def test_nats_killed_mid_batch_loses_and_duplicates_nothing(
    db, nats, nats_url, clean_jetstream, stream_reader, background, eventually
):
    nats.require_restart()

    class NatsDiesMidBatch(OutboxRelay):
        calls = 0
        restarted: asyncio.Task | None = None

        async def _publish(self, rows):
            self.calls += 1
            if self.calls == 2:
                # Half of this batch reaches the stream and is acknowledged; then the broker dies.
                await super()._publish(rows[: len(rows) // 2])
                await asyncio.to_thread(nats.stop, kill=True)
                self.restarted = asyncio.create_task(restart_later())
            return await super()._publish(rows)

    async def restart_later():
        await emit_items(db, 50, start=100)  # committed while the broker is down
        await asyncio.sleep(1.5)  # longer than publish_timeout: the relay must see the batch fail
        await asyncio.to_thread(nats.start)

    await emit_items(db, 100)
    relay = relay_for(db, nats_url, NatsDiesMidBatch, batch_size=20, publish_timeout=0.5)
    try:
        background(relay)
        await eventually(lambda: _restarted(relay), timeout=30)
        await relay.restarted
        await eventually(lambda: _unsent_is(db, 0), timeout=30)
    finally:
        if nats.embedded.process is None:
            await asyncio.to_thread(nats.start)

    assert relay.stats.publish_failures >= 1
    assert relay.stats.duplicates >= 10  # the acknowledged half was re-published and dropped by JetStream
    await eventually(lambda: _connected(clean_jetstream), timeout=10)
    messages = await stream_reader(clean_jetstream, STREAM)
    rows = await db.outbox_rows()
    assert len(rows) == 150
    assert_stream_matches_outbox(messages, rows)


async def _restarted(relay) -> bool:
    return relay.restarted is not None


async def _connected(js) -> bool:
    return js._nc.is_connected


async def test_crash_between_publish_and_mark_sent_republishes_without_duplicates(
    db, nats_url, clean_jetstream, stream_reader
):
    class Crash(BaseException):
        """Stands for the process dying: nothing after it runs, the transaction is never committed."""

    class CrashesAfterPublish(OutboxRelay):
        async def _after_publish(self, rows):
            raise Crash

    await emit_items(db, 10)
    crashing = relay_for(db, nats_url, CrashesAfterPublish)
    with pytest.raises(Crash):
        await crashing.relay_once()
    await crashing.close()

    published = await stream_reader(clean_jetstream, STREAM)
    assert len(published) == 10
    assert await db.unsent() == 10  # never marked sent...
    before = {str(r.id): r.sequence for r in await db.outbox_rows()}
    assert sorted(before.values()) == list(range(1, 11))  # ...but already numbered

    await emit_items(db, 5, start=10)
    relay = relay_for(db, nats_url)
    try:
        assert await relay.relay_once() == 15
    finally:
        await relay.close()
    assert relay.stats.duplicates == 10

    messages = await stream_reader(clean_jetstream, STREAM)
    rows = await db.outbox_rows()
    assert_stream_matches_outbox(messages, rows)
    assert {str(r.id): r.sequence for r in rows if str(r.id) in before} == before  # same sequences
    assert [int(m.headers["ce-sequence"]) for m in messages] == list(range(1, 16))


async def test_postgres_restart_while_relaying_loses_nothing(
    db, postgres, nats_url, clean_jetstream, stream_reader, background, eventually
):
    postgres.require_restart()
    relay = relay_for(db, nats_url)
    background(relay)
    await emit_items(db, 20)
    await eventually(lambda: _unsent_is(db, 0))

    await asyncio.to_thread(postgres.restart)
    await emit_items(db, 20, start=20)
    await eventually(lambda: _unsent_is(db, 0), timeout=30)

    assert relay.stats.db_failures >= 1  # it did go through the outage
    messages = await stream_reader(clean_jetstream, STREAM)
    assert_stream_matches_outbox(messages, await db.outbox_rows())
    assert len(messages) == 40


async def test_only_one_relay_publishes_and_a_standby_takes_over(
    db, nats_url, clean_jetstream, stream_reader, background, eventually
):
    first = relay_for(db, nats_url)
    first_task = background(first)
    await first.wait_leader(10)
    second = relay_for(db, nats_url)
    background(second)
    await asyncio.sleep(0.5)  # several lock attempts by the second relay

    await emit_items(db, 10)
    await eventually(lambda: _unsent_is(db, 0))
    assert (first.stats.published, second.stats.published) == (10, 0)
    assert first.is_leader
    assert not second.is_leader

    first_task.cancel()  # the leader dies; its connection (and the lock) goes with it
    await asyncio.gather(first_task, return_exceptions=True)
    await second.wait_leader(10)
    await emit_items(db, 10, start=10)
    await eventually(lambda: _unsent_is(db, 0))
    assert second.stats.published == 10

    messages = await stream_reader(clean_jetstream, STREAM)
    assert_stream_matches_outbox(messages, await db.outbox_rows())


async def test_leader_losing_its_connection_neither_duplicates_nor_skips(
    db, nats_url, clean_jetstream, stream_reader, background, eventually
):
    """The lock connection is killed under a live leader: whoever leads next, every event is published
    once and the sequences stay gap-free."""
    relays = [relay_for(db, nats_url), relay_for(db, nats_url)]
    background(relays[0])
    await relays[0].wait_leader(10)
    background(relays[1])
    await emit_items(db, 10)
    await eventually(lambda: _unsent_is(db, 0))

    async with db.engine.connect() as conn:
        killed = await conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND ((classid::bigint << 32) | objid::bigint) = "
                "hashtextextended('baton.outbox-relay:' || current_schema() || ':' || :service, 0)"
            ),
            {"service": SERVICE},
        )
    assert killed == 1
    for start in range(10, 40, 10):
        await emit_items(db, 10, start=start)
    await eventually(lambda: _unsent_is(db, 0), timeout=30)

    assert relays[0].stats.db_failures >= 1  # the old leader noticed
    assert relays[0].stats.published + relays[1].stats.published == 40
    messages = await stream_reader(clean_jetstream, STREAM)
    assert len(messages) == 40
    assert_stream_matches_outbox(messages, await db.outbox_rows())


async def test_replay_returns_the_requested_range_with_sequences(db, nats_url, nats_client, clean_jetstream):
    await emit_items(db, 30)
    relay = relay_for(db, nats_url, replay_limit=3)  # forces paging
    try:
        await relay.relay_once()
        await emit_items(db, 2, start=30)  # committed, not yet published: not replayable

        by_sequence = {r.sequence: str(r.id) for r in await db.outbox_rows() if r.sequence}
        replayed = await request_replay(nats_client, SERVICE, 5, 12)
        assert [e.sequence for e in replayed] == list(range(5, 13))
        assert [e.id for e in replayed] == [by_sequence[s] for s in range(5, 13)]
        assert replayed[0].parse_data(ItemCreated) == ItemCreated(n=4)

        tail = await request_replay(nats_client, SERVICE, 28, 40)
        assert [e.sequence for e in tail] == [28, 29, 30]

        raw = orjson.loads(
            (await nats_client.request(replay_subject(SERVICE), b'{"from": 1, "to": 100}', timeout=5)).data
        )
        assert len(raw["events"]) == 3
        assert raw["next"] == 4
        assert raw["oldest_retained"] == 1
        assert raw["last_sequence"] == 30
        bad = await nats_client.request(replay_subject(SERVICE), b'{"from": 10, "to": 5}', timeout=5)
        assert "error" in orjson.loads(bad.data)
        assert await request_replay(nats_client, SERVICE, 10, 5) == []
    finally:
        await relay.close()


async def test_sent_rows_are_deleted_after_retention(db, nats_url, clean_jetstream, background, eventually):
    await emit_items(db, 5)
    relay = relay_for(db, nats_url, retention=timedelta(0))
    background(relay)
    await eventually(lambda: _outbox_empty(db))
    assert relay.stats.published == 5
    assert relay.stats.pruned == 5


async def _outbox_empty(db) -> bool:
    return not await db.outbox_rows()


async def test_by_default_sent_rows_are_kept_seven_days_for_replays(
    db, nats_url, clean_jetstream, background, eventually
):
    ids = await emit_items(db, 3)
    relay = relay_for(db, nats_url)  # the default retention
    try:
        assert await relay.relay_once() == 3
    finally:
        await relay.close()
    async with transaction(db.sessions) as session:
        for event_id, age in zip(ids, ("6 days 23 hours", "7 days 1 hour", "30 days"), strict=True):
            await session.execute(
                update(outbox)
                .where(outbox.c.id == uuid.UUID(event_id))
                .values(sent_at=func.now() - text(f"interval '{age}'"))
            )
    running = relay_for(db, nats_url)
    background(running)
    await eventually(lambda: _pruned(running, 2))
    assert [str(r.id) for r in await db.outbox_rows()] == ids[:1]  # still there to answer a replay


async def _pruned(relay, count: int) -> bool:
    return relay.stats.pruned >= count
