"""Inbox pruning and the horizon a consumer created again starts at, on real Postgres and JetStream."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta
from typing import ClassVar

import pytest
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy import func, insert, select

from shared.events import Event, register
from shared.messaging import (
    Actor,
    ConsumerRunner,
    Envelope,
    InboxPruning,
    ensure_consumer,
    ensure_stream,
    envelope_of,
    inbox_horizon_of,
    prune_inbox,
    stream_name,
    to_nats,
)
from shared.messaging.outbox import inbox

SERVICE = "inboxtest"
STREAM = stream_name(SERVICE)
CONSUMER = "tests-inbox"
OTHER = "tests-other"
SUBJECTS = [f"baton.{SERVICE}.>"]
# Prunes everything applied so far, when the test says so (no periodic prune).
EVERYTHING = InboxPruning(retention=timedelta(microseconds=1), interval=0, margin=timedelta(0))


@register
class ThingCounted(Event):
    """A thing was counted (test event)."""

    event_type: ClassVar[str] = "baton.inboxtest.thing.counted.v1"
    n: int


def envelope(n: int) -> Envelope:
    return envelope_of(
        ThingCounted(n=n),
        tenant=uuid.uuid4(),
        actor=Actor(subject="svc-tests", kind="service"),
        resource_id="thing-1",
    )


async def publish(js, *envelopes: Envelope) -> None:
    for env in envelopes:
        subject, headers, body = to_nats(env)
        await js.publish(subject, body, headers=headers)


class Recorder:
    """A handler that writes one effect row per call."""

    def __init__(self, db) -> None:
        self.effects = db.effects
        self.calls: list[str] = []

    async def __call__(self, session, env: Envelope) -> None:
        self.calls.append(env.id)
        await session.execute(insert(self.effects).values(event_id=uuid.UUID(env.id), consumer=CONSUMER))


@pytest.fixture
async def js(clean_jetstream):
    await ensure_stream(clean_jetstream, SERVICE)
    return clean_jetstream


def runner_for(db, nats_url, handler, pruning: InboxPruning = EVERYTHING) -> ConsumerRunner:
    return ConsumerRunner(
        db.sessions,
        nats_url,
        consumer=CONSUMER,
        stream=STREAM,
        subjects=SUBJECTS,
        handlers={ThingCounted.event_type: handler},
        backoff=[0.5],
        ack_wait=2.0,
        fetch_timeout=0.2,
        max_reconnect_backoff=0.5,
        inbox_pruning=pruning,
    )


async def settled(js) -> bool:
    info = await js.consumer_info(STREAM, CONSUMER)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def db_now(db) -> datetime:
    return await db.scalar(select(func.now()))


async def add_rows(db, consumer: str, *ages: timedelta) -> list[uuid.UUID]:
    """Inbox rows for ``consumer`` processed ``age`` before the database's now, one per age."""
    ids = [uuid.uuid4() for _ in ages]
    async with db.sessions() as session:
        now = await session.scalar(select(func.now()))
        await session.execute(
            insert(inbox),
            [
                {"consumer": consumer, "event_id": i, "processed_at": now - age}
                for i, age in zip(ids, ages, strict=True)
            ],
        )
        await session.commit()
    return ids


async def kept(db, consumer: str) -> set[uuid.UUID]:
    async with db.sessions() as session:
        rows = await session.scalars(select(inbox.c.event_id).where(inbox.c.consumer == consumer))
        return set(rows)


# -- prune_inbox --------------------------------------------------------------------------------------


async def test_prune_deletes_only_rows_older_than_the_cutoff_minus_the_margin(db):
    day, margin, minute = timedelta(days=1), timedelta(minutes=10), timedelta(minutes=1)
    old, in_margin, recent, fresh = await add_rows(
        db, CONSUMER, day + margin + minute, day + margin - minute, day - minute, timedelta(0)
    )
    [others] = await add_rows(db, OTHER, timedelta(days=30))
    before = await db_now(db)

    result = await prune_inbox(db.sessions, CONSUMER, retention=day, margin=margin)

    assert result.deleted == 1
    assert await kept(db, CONSUMER) == {in_margin, recent, fresh}
    assert old not in await kept(db, CONSUMER)
    assert await kept(db, OTHER) == {others}  # another consumer's rows are its own business
    after = await db_now(db)
    assert before - day <= result.horizon <= after - day
    assert await inbox_horizon_of(db.sessions, CONSUMER) == result.horizon
    assert await inbox_horizon_of(db.sessions, OTHER) is None


async def test_the_horizon_never_moves_back(db):
    await add_rows(db, CONSUMER, timedelta(days=5), timedelta(days=2))
    first = await prune_inbox(db.sessions, CONSUMER, retention=timedelta(days=3), margin=timedelta(0))
    assert first.deleted == 1

    longer = await prune_inbox(db.sessions, CONSUMER, retention=timedelta(days=10), margin=timedelta(0))
    capped = await prune_inbox(
        db.sessions,
        CONSUMER,
        retention=timedelta(days=1),
        margin=timedelta(0),
        not_after=first.horizon - timedelta(days=4),
    )
    assert longer.horizon == capped.horizon == first.horizon
    assert longer.deleted == capped.deleted == 0  # the 2-day-old row is newer than either cutoff
    assert len(await kept(db, CONSUMER)) == 1

    shorter = await prune_inbox(db.sessions, CONSUMER, retention=timedelta(days=1), margin=timedelta(0))
    assert shorter.horizon > first.horizon + timedelta(days=1, hours=23)
    assert shorter.deleted == 1


async def test_not_after_caps_the_horizon_and_what_is_deleted(db):
    await add_rows(db, CONSUMER, timedelta(days=9), timedelta(days=6))
    now = await db_now(db)
    result = await prune_inbox(
        db.sessions,
        CONSUMER,
        retention=timedelta(days=1),
        margin=timedelta(0),
        not_after=now - timedelta(days=7),
    )
    assert result.horizon == now - timedelta(days=7)
    assert result.deleted == 1  # the 6-day-old row is after the capped horizon: kept


async def test_a_prune_called_off_after_the_horizon_deletes_nothing(db):
    await add_rows(db, CONSUMER, timedelta(days=20))

    async def changed() -> bool:
        return False

    result = await prune_inbox(db.sessions, CONSUMER, retention=timedelta(days=14), before_delete=changed)
    assert result.deleted == 0
    assert len(await kept(db, CONSUMER)) == 1
    assert await inbox_horizon_of(db.sessions, CONSUMER) == result.horizon


async def test_rows_stay_when_the_consumer_is_created_again_while_the_runner_prunes(db, nats_url, js):
    runner = runner_for(db, nats_url, Recorder(db))
    await add_rows(db, CONSUMER, timedelta(days=30))
    try:
        await runner.start()
        assert runner._js is not None
        read = runner._js.consumer_info
        calls = 0

        async def racing_info(stream: str, durable: str) -> object:
            nonlocal calls
            calls += 1
            info = await read(stream, durable)
            if calls == 1:  # an operator deletes it; another replica creates it again at the old horizon
                await js.delete_consumer(STREAM, CONSUMER)
                await ensure_consumer(js, STREAM, CONSUMER, SUBJECTS)
            return info

        runner._js.consumer_info = racing_info  # type: ignore[method-assign]
        result = await runner.prune_inbox()
    finally:
        await runner.close()
    assert result is not None
    assert result.deleted == 0
    assert len(await kept(db, CONSUMER)) == 1


async def test_more_rows_than_a_batch_are_deleted_batch_by_batch(db):
    await add_rows(db, CONSUMER, *[timedelta(days=20)] * 23, timedelta(days=1))
    result = await prune_inbox(db.sessions, CONSUMER, retention=timedelta(days=14), batch=5)
    assert result.deleted == 23
    assert len(await kept(db, CONSUMER)) == 1


async def test_concurrent_prunes_delete_each_row_once_and_agree_on_the_horizon(db):
    await add_rows(db, CONSUMER, *[timedelta(days=20, seconds=n) for n in range(300)])
    results = await asyncio.gather(
        *(prune_inbox(db.sessions, CONSUMER, retention=timedelta(days=14), batch=7) for _ in range(4))
    )
    assert sum(r.deleted for r in results) == 300
    assert await kept(db, CONSUMER) == set()
    horizon = await inbox_horizon_of(db.sessions, CONSUMER)
    assert horizon == max(r.horizon for r in results)


async def test_the_policy_refuses_what_would_prune_wrongly():
    with pytest.raises(ValueError, match="retention"):
        InboxPruning(retention=timedelta(0))
    with pytest.raises(ValueError, match="interval"):
        InboxPruning(interval=-1)
    with pytest.raises(ValueError, match="batch"):
        InboxPruning(batch=0)
    assert not InboxPruning(interval=0).enabled


# -- the runner ------------------------------------------------------------------------------------------


async def applied(runner: ConsumerRunner, processed: int, duplicates: int = 0) -> bool:
    return runner.stats.processed == processed and runner.stats.duplicates == duplicates


async def stop(runner: ConsumerRunner, task: asyncio.Task) -> None:
    runner.stop()
    await asyncio.wait_for(task, 15)


async def effects_in_order(db) -> list[uuid.UUID]:
    async with db.sessions() as session:
        return list(await session.scalars(select(db.effects.c.event_id).order_by(db.effects.c.n)))


async def test_a_consumer_created_again_starts_at_its_horizon(db, nats_url, js, eventually):
    """Applied, pruned, the durable deleted on the server: a new one gets only what came after."""
    first = runner_for(db, nats_url, Recorder(db))
    old = [envelope(n) for n in range(5)]
    await publish(js, *old)
    task = asyncio.create_task(first.run())
    try:
        await eventually(lambda: applied(first, processed=5))
        await eventually(lambda: settled(js))
        result = await first.prune_inbox()
    finally:
        await stop(first, task)
    assert result is not None
    assert result.deleted == 5
    assert first.stats.inbox_pruned == 5
    assert await kept(db, CONSUMER) == set()

    await js.delete_consumer(STREAM, CONSUMER)  # by an operator, or lost with a NATS store
    new = [envelope(n) for n in range(5, 8)]
    await publish(js, *new)
    handler = Recorder(db)
    second = runner_for(db, nats_url, handler)
    task = asyncio.create_task(second.run())
    try:
        await eventually(lambda: applied(second, processed=3))
        await eventually(lambda: settled(js))
        await asyncio.sleep(0.5)  # anything more would have been delivered by now
    finally:
        await stop(second, task)

    assert handler.calls == [e.id for e in new]
    assert second.stats.duplicates == 0
    assert await effects_in_order(db) == [uuid.UUID(e.id) for e in old + new]  # each applied once
    info = await js.consumer_info(STREAM, CONSUMER)
    assert info.config.deliver_policy == DeliverPolicy.BY_START_TIME
    assert info.config.opt_start_time == result.horizon


async def test_without_a_horizon_a_consumer_created_again_gets_everything(db, nats_url, js, eventually):
    never = InboxPruning(interval=0)
    first = runner_for(db, nats_url, Recorder(db), never)
    await publish(js, *(envelope(n) for n in range(4)))
    task = asyncio.create_task(first.run())
    try:
        await eventually(lambda: applied(first, processed=4))
        await eventually(lambda: settled(js))
    finally:
        await stop(first, task)
    assert await inbox_horizon_of(db.sessions, CONSUMER) is None

    await js.delete_consumer(STREAM, CONSUMER)
    await publish(js, *(envelope(n) for n in range(4, 6)))
    handler = Recorder(db)
    second = runner_for(db, nats_url, handler, never)
    task = asyncio.create_task(second.run())
    try:
        # The whole stream again; the four applied before are recognised by their inbox rows.
        await eventually(lambda: applied(second, processed=2, duplicates=4))
    finally:
        await stop(second, task)
    assert len(handler.calls) == 2
    assert await db.effect_count() == 6
    info = await js.consumer_info(STREAM, CONSUMER)
    assert info.config.deliver_policy == DeliverPolicy.ALL


async def test_the_horizon_stops_at_what_the_consumer_has_not_acknowledged(db, nats_url, js, eventually):
    """A consumer behind by more than the retention does not skip what it has not applied, even when it is
    created again after the prune."""
    handler = Recorder(db)
    behind = runner_for(db, nats_url, handler)
    await publish(js, envelope(1))
    try:
        assert await behind.process_batch(timeout=2) == 1
        await publish(js, envelope(2), envelope(3))
        oldest_pending = (await js.get_msg(STREAM, 2)).time
        result = await behind.prune_inbox()
    finally:
        await behind.close()
    assert result is not None
    assert result.horizon == oldest_pending
    assert result.deleted == 1  # the first event's row: it was applied before the horizon

    await js.delete_consumer(STREAM, CONSUMER)
    again = runner_for(db, nats_url, handler)
    task = asyncio.create_task(again.run())
    try:
        await eventually(lambda: applied(again, processed=2))
        await asyncio.sleep(0.5)  # the first event would have come back by now
    finally:
        await stop(again, task)
    assert again.stats.duplicates == 0
    assert len(handler.calls) == 3
    assert await db.effect_count() == 3


async def test_nothing_is_pruned_while_the_consumer_is_missing(db, nats_url, js):
    runner = runner_for(db, nats_url, Recorder(db))
    await add_rows(db, CONSUMER, timedelta(days=30))
    try:
        await runner.start()
        await js.delete_consumer(STREAM, CONSUMER)
        assert await runner.prune_inbox() is None
    finally:
        await runner.close()
    assert len(await kept(db, CONSUMER)) == 1
    assert await inbox_horizon_of(db.sessions, CONSUMER) is None


async def test_the_runner_prunes_periodically_while_it_runs(db, nats_url, js, eventually, background):
    often = InboxPruning(retention=timedelta(microseconds=1), interval=0.2, margin=timedelta(0))
    runner = runner_for(db, nats_url, Recorder(db), often)
    await publish(js, *(envelope(n) for n in range(3)))
    background(runner)
    await eventually(lambda: applied(runner, processed=3))

    async def all_pruned() -> bool:
        return runner.stats.inbox_pruned == 3

    await eventually(all_pruned)
    assert await kept(db, CONSUMER) == set()
    assert await inbox_horizon_of(db.sessions, CONSUMER) is not None


# -- ensure_consumer ---------------------------------------------------------------------------------------


async def test_an_existing_consumer_keeps_its_start_when_declared_again(js):
    start = datetime.fromisoformat("2026-03-01T12:00:00.123456+00:00")
    asked: list[float] = []

    async def horizon() -> datetime:
        asked.append(time.monotonic())
        return start

    created = await ensure_consumer(js, STREAM, CONSUMER, SUBJECTS, ack_wait=5, start_time=horizon)
    assert created.config.deliver_policy == DeliverPolicy.BY_START_TIME
    assert created.config.opt_start_time == start

    updated = await ensure_consumer(js, STREAM, CONSUMER, SUBJECTS, ack_wait=7, start_time=horizon)
    assert len(asked) == 1  # only asked to create it
    assert updated.config.ack_wait == 7
    assert updated.config.deliver_policy == DeliverPolicy.BY_START_TIME
    assert updated.config.opt_start_time == start

    plain = await ensure_consumer(js, STREAM, CONSUMER, SUBJECTS, ack_wait=9)
    assert plain.config.deliver_policy == DeliverPolicy.BY_START_TIME
    assert plain.config.ack_wait == 9


async def test_a_consumer_created_meanwhile_by_another_replica_is_updated_not_refused(js):
    async def another_replica_first() -> datetime:
        # Between this declaration's look and its create, another replica creates the consumer its way.
        await ensure_consumer(js, STREAM, CONSUMER, SUBJECTS, ack_wait=5)
        return datetime.fromisoformat("2026-03-01T12:00:00+00:00")

    declared = await ensure_consumer(
        js, STREAM, CONSUMER, SUBJECTS, ack_wait=8, start_time=another_replica_first
    )
    assert declared.config.deliver_policy == DeliverPolicy.ALL  # the one that won keeps its start
    assert declared.config.ack_wait == 8


async def test_a_missing_stream_is_reported_without_asking_for_a_start(clean_jetstream):
    async def horizon() -> datetime:
        raise AssertionError("asked for a start although the stream is missing")

    with pytest.raises(NotFoundError):
        await ensure_consumer(clean_jetstream, STREAM, CONSUMER, SUBJECTS, start_time=horizon)


async def test_a_consumer_deleted_under_a_running_runner_comes_back_at_its_horizon(
    db, nats_url, js, eventually
):
    runner = runner_for(db, nats_url, Recorder(db))
    await publish(js, *(envelope(n) for n in range(3)))
    task = asyncio.create_task(runner.run())
    try:
        await eventually(lambda: applied(runner, processed=3))
        await eventually(lambda: settled(js))
        assert (await runner.prune_inbox()).deleted == 3
        await js.delete_consumer(STREAM, CONSUMER)
        await publish(js, *(envelope(n) for n in range(3, 5)))
        await eventually(lambda: applied(runner, processed=5), timeout=30)
        await asyncio.sleep(0.5)
    finally:
        await stop(runner, task)
    assert runner.stats.duplicates == 0
    assert runner.stats.resubscribes >= 1
    assert await db.effect_count() == 5
