"""ConsumerRunner on real JetStream and Postgres: idempotence, retries, poison, crashes before the ack."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import ClassVar

import pytest
from sqlalchemy import insert, select

from shared.db import new_id
from shared.events import Event, register
from shared.messaging import (
    Actor,
    ConsumerRunner,
    Envelope,
    PoisonMessage,
    TransientError,
    ensure_stream,
    envelope_of,
    stream_name,
    typed_handler,
)
from shared.messaging.outbox import dead_letters
from shared.testing.jetstream import publish_envelope as publish

SERVICE = "consumertest"
STREAM = stream_name(SERVICE)
CONSUMER = "tests-effects"
ACTOR = Actor(subject="svc-projects", kind="service")


@register
class ThingMade(Event):
    """A thing was made (test event)."""

    event_type: ClassVar[str] = "baton.consumertest.thing.made.v1"
    n: int


@register
class ThingBroken(Event):
    """A thing broke (test event nobody handles)."""

    event_type: ClassVar[str] = "baton.consumertest.thing.broken.v1"
    why: str


def envelope(event: Event) -> Envelope:
    return envelope_of(event, tenant=uuid.uuid4(), actor=ACTOR, resource_id="thing-1")


class Recorder:
    """A handler that writes one effect row per call, optionally failing first."""

    def __init__(self, db, fail: list[BaseException] | None = None) -> None:
        self.effects = db.effects
        self.calls: list[float] = []
        self.fail = list(fail or [])

    async def __call__(self, session, env: Envelope) -> None:
        self.calls.append(time.monotonic())
        await session.execute(insert(self.effects).values(event_id=uuid.UUID(env.id), consumer=CONSUMER))
        if self.fail:
            raise self.fail.pop(0)


@pytest.fixture
async def js(clean_jetstream):
    await ensure_stream(clean_jetstream, SERVICE)
    return clean_jetstream


def runner_for(db, nats_url, handlers, cls=ConsumerRunner, **kwargs) -> ConsumerRunner:
    kwargs.setdefault("backoff", [0.5])
    kwargs.setdefault("ack_wait", 2.0)
    kwargs.setdefault("max_deliver", 5)
    kwargs.setdefault("fetch_timeout", 0.2)
    return cls(
        db.sessions,
        nats_url,
        consumer=CONSUMER,
        stream=STREAM,
        subjects=[f"baton.{SERVICE}.>"],
        handlers=handlers,
        max_reconnect_backoff=0.5,
        **kwargs,
    )


async def settled(js) -> bool:
    """Everything delivered to the consumer has been acked or terminated."""
    info = await js.consumer_info(STREAM, CONSUMER)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def dead_letter_rows(db) -> list:
    async with db.sessions() as session:
        return list((await session.execute(select(dead_letters).order_by(dead_letters.c.created_at))).all())


@pytest.mark.parametrize("isolated", [False, True], ids=["batch", "message-by-message"])
async def test_the_same_event_delivered_twice_has_one_effect(
    db, nats_url, js, background, eventually, isolated
):
    handler = Recorder(db)
    runner = runner_for(db, nats_url, {ThingMade.event_type: handler})
    env = envelope(ThingMade(n=1))
    await publish(js, env)
    if isolated:  # the copy arrives later, next to a message that forces the one-by-one path
        assert await runner.process_batch(timeout=2) == 1
        await js.publish("baton.consumertest.thing.made", b"garbage")
    await publish(js, env, msg_id="outside-the-dedupe-window")
    background(runner)
    await eventually(lambda: _stats(runner, processed=1, duplicates=1))
    await eventually(lambda: settled(js))
    assert await db.effect_count(uuid.UUID(env.id)) == 1
    assert len(handler.calls) == 1


async def _stats(runner, **expected) -> bool:
    return all(getattr(runner.stats, k) == v for k, v in expected.items())


async def test_transient_error_is_retried_after_the_backoff(db, nats_url, js, background, eventually):
    handler = Recorder(db, fail=[TransientError("search index is down")])
    runner = runner_for(db, nats_url, {ThingMade.event_subject: handler}, backoff=[0.6, 5])
    env = envelope(ThingMade(n=2))
    await publish(js, env)
    background(runner)
    await eventually(lambda: _stats(runner, processed=1))
    assert len(handler.calls) == 2  # delivered twice
    assert handler.calls[1] - handler.calls[0] >= 0.6 - 0.05
    assert runner.stats.retried == 1
    assert await db.effect_count() == 1  # the failed attempt's row was rolled back
    assert await dead_letter_rows(db) == []


async def test_unreadable_message_is_terminated_and_recorded(db, nats_url, js, background, eventually):
    handler = Recorder(db)
    runner = runner_for(db, nats_url, {"*": handler}, ack_wait=0.5)
    await js.publish(
        "baton.consumertest.thing.made",
        b"{not json",
        headers={"ce-id": str(new_id()), "ce-type": ThingMade.event_type},
    )
    background(runner)
    await eventually(lambda: _stats(runner, dead_lettered=1))
    await eventually(lambda: settled(js))
    await asyncio.sleep(1.5)  # three ack_waits: a message that was not terminated would be back by now
    assert runner.stats.dead_lettered == 1
    assert handler.calls == []
    info = await js.consumer_info(STREAM, CONSUMER)
    assert info.num_redelivered == 0
    assert info.ack_floor.stream_seq == 1
    [row] = await dead_letter_rows(db)
    assert row.consumer == CONSUMER
    assert row.body == b"{not json"
    assert row.deliveries == 1
    assert row.reason.startswith("unreadable")
    assert row.subject == "baton.consumertest.thing.made"


async def test_poison_from_the_handler_or_the_data_is_terminated_and_recorded(
    db, nats_url, js, background, eventually
):
    async def refuses(session, event: ThingMade) -> None:
        raise PoisonMessage("thing 3 can never be made")

    runner = runner_for(db, nats_url, {ThingMade.event_type: typed_handler(ThingMade, refuses)})
    bad_data = envelope(ThingMade(n=0)).model_copy(update={"data": {"n": "not a number"}})
    refused = envelope(ThingMade(n=3))
    await publish(js, bad_data)
    await publish(js, refused)
    background(runner)
    await eventually(lambda: _stats(runner, dead_lettered=2))
    await eventually(lambda: settled(js))
    rows = {str(r.event_id): r for r in await dead_letter_rows(db)}
    assert rows[bad_data.id].reason.startswith("poison: ValidationError")
    assert rows[bad_data.id].deliveries == 1  # not retried: it could never succeed
    assert rows[refused.id].deliveries == 1
    assert "can never be made" in rows[refused.id].reason
    assert rows[refused.id].event_type == ThingMade.event_type
    assert rows[refused.id].headers["ce-id"] == refused.id


async def test_one_failing_message_neither_blocks_nor_undoes_the_rest_of_its_batch(
    db, nats_url, js, background, eventually
):
    first, failing, last = (envelope(ThingMade(n=n)) for n in (10, 11, 12))
    attempts: dict[str, int] = {}

    async def handler(session, env: Envelope) -> None:
        attempts[env.id] = attempts.get(env.id, 0) + 1
        await session.execute(insert(db.effects).values(event_id=uuid.UUID(env.id), consumer=CONSUMER))
        if env.id == failing.id and attempts[env.id] == 1:
            raise TransientError("not yet")

    for env in (first, failing, last):
        await publish(js, env)
    runner = runner_for(db, nats_url, {ThingMade.event_type: handler}, backoff=[0.3])
    assert await runner.process_batch(timeout=2) == 3  # one fetch, one batch
    try:
        assert await db.effect_count(uuid.UUID(first.id)) == 1
        assert await db.effect_count(uuid.UUID(last.id)) == 1
        assert await db.effect_count(uuid.UUID(failing.id)) == 0  # its partial write was undone
        assert attempts[failing.id] == 1  # a failed handler is not run twice for one delivery
        assert runner.stats.processed == 2
        assert runner.stats.retried == 1
        await eventually(lambda: _batch_then(runner, processed=3))
    finally:
        await runner.close()
    assert await db.effect_count() == 3
    assert attempts[failing.id] == 2


async def _batch_then(runner, **expected) -> bool:
    await runner.process_batch(timeout=0.2)
    return await _stats(runner, **expected)


async def test_a_message_failing_every_delivery_is_dead_lettered_at_the_last(
    db, nats_url, js, background, eventually
):
    handler = Recorder(db, fail=[TransientError("down")] * 10)
    runner = runner_for(db, nats_url, {ThingMade.event_type: handler}, max_deliver=3, backoff=[0.1])
    env = envelope(ThingMade(n=4))
    await publish(js, env)
    background(runner)
    await eventually(lambda: _stats(runner, dead_lettered=1))
    await eventually(lambda: settled(js))
    assert len(handler.calls) == 3
    [row] = await dead_letter_rows(db)
    assert row.deliveries == 3
    assert str(row.event_id) == env.id
    assert "TransientError" in row.reason
    assert await db.effect_count() == 0


async def test_crash_between_commit_and_ack_still_has_one_effect(db, nats_url, js, background, eventually):
    class DiesBeforeAck(ConsumerRunner):
        async def _ack(self, msg):
            self.stop()  # committed, but the process is gone before the ack leaves

    handler = Recorder(db)
    env = envelope(ThingMade(n=5))
    await publish(js, env)
    crashing = runner_for(db, nats_url, {ThingMade.event_type: handler}, DiesBeforeAck, ack_wait=1.0)
    await asyncio.wait_for(crashing.run(), 10)
    assert crashing.stats.processed == 1
    assert await db.effect_count() == 1
    info = await js.consumer_info(STREAM, CONSUMER)
    assert info.num_ack_pending == 1  # the broker still waits for an ack

    restarted = runner_for(db, nats_url, {ThingMade.event_type: handler}, ack_wait=1.0)
    background(restarted)
    await eventually(lambda: _stats(restarted, duplicates=1))
    await eventually(lambda: settled(js))
    assert await db.effect_count(uuid.UUID(env.id)) == 1
    assert len(handler.calls) == 1


async def test_events_without_a_handler_are_acked(db, nats_url, js, background, eventually):
    handler = Recorder(db)
    runner = runner_for(db, nats_url, {ThingMade.event_type: handler})
    await publish(js, envelope(ThingBroken(why="gravity")))
    background(runner)
    await eventually(lambda: _stats(runner, unhandled=1))
    await eventually(lambda: settled(js))
    assert handler.calls == []
    assert await dead_letter_rows(db) == []


async def test_consumer_keeps_going_across_a_nats_restart(db, nats, nats_url, js, background, eventually):
    nats.require_restart()
    handler = Recorder(db)
    runner = runner_for(db, nats_url, {ThingMade.event_type: handler})
    background(runner)
    for n in range(5):
        await publish(js, envelope(ThingMade(n=n)))
    await eventually(lambda: _stats(runner, processed=5))

    await asyncio.to_thread(nats.restart, kill=True)
    await eventually(lambda: _connected(js), timeout=10)
    for n in range(5, 10):
        await publish(js, envelope(ThingMade(n=n)))
    await eventually(lambda: _stats(runner, processed=10), timeout=30)
    assert await db.effect_count() == 10


async def _connected(js) -> bool:
    return js._nc.is_connected


async def test_handler_lookup_prefers_the_most_specific_key(db, nats_url):
    exact, by_subject, anything = Recorder(db), Recorder(db), Recorder(db)
    runner = runner_for(
        db,
        nats_url,
        {ThingMade.event_type: exact, ThingMade.event_subject: by_subject, "*": anything},
    )
    assert runner._handler_for(envelope(ThingMade(n=1))) is exact
    assert runner._handler_for(envelope(ThingBroken(why="x"))) is anything
    del runner.handlers[ThingMade.event_type]
    assert runner._handler_for(envelope(ThingMade(n=1))) is by_subject


async def test_a_slow_handler_is_kept_in_progress_not_redelivered(db, nats_url, js, background, eventually):
    """A handler running three times ``ack_wait`` while a second replica waits for work: the message is
    never redelivered to that replica, because the first keeps it in progress."""

    class Slow(Recorder):
        async def __call__(self, session, env: Envelope) -> None:
            await super().__call__(session, env)
            await asyncio.sleep(3.0)

    slow = Slow(db)
    other = Recorder(db)
    first = runner_for(db, nats_url, {ThingMade.event_type: slow}, ack_wait=1.0)
    second = runner_for(db, nats_url, {ThingMade.event_type: other}, ack_wait=1.0)
    env = envelope(ThingMade(n=8))
    await publish(js, env)
    working = asyncio.create_task(first.process_batch(timeout=2))
    await eventually(lambda: _async(bool(slow.calls)))
    background(second)  # idle, pulling, while the first replica works for 3 s
    assert await working == 1
    await asyncio.sleep(1.5)  # a redelivery would have reached the idle replica by now
    await first.close()
    assert other.calls == []
    assert second.stats.duplicates == 0
    assert await db.effect_count(uuid.UUID(env.id)) == 1
    assert first.stats.kept_alive >= 2


async def _async(value: bool) -> bool:
    return value
