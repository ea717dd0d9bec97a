"""How fast is the event path, compared with what its parts can do alone?

Run: ``.venv/bin/python bench/events.py`` (about 60-90 s). Starts its own durable Postgres and a nats-server
(JetStream, file storage, default sync) in a temporary directory, then measures, in one run:

(a) raw JetStream: ``publish_async`` rate, and pull ``fetch`` + ``ack`` rate;
(b) raw Postgres: single-row insert + commit rate, one writer and ``WRITERS`` concurrent writers;
(c) the pipeline: ``WRITERS`` tasks ``emit`` events (one commit each) → ``OutboxRelay`` → JetStream →
    ``ConsumerRunner`` (inbox + one handler insert per event, one commit per fetched batch), first as
    fast as the writers can go (sustained throughput), then at half that rate for about 12 s
    (commit-to-consumed latency: from the producer's commit returning to the consumer's ack, which
    follows its commit);
(d) each stage's own capacity: a backlog drained by the relay alone, then by the consumer alone.

The writers run in a child process (a service's API process); the relay and the consumer share this
one (a service's worker process). On a shared 2-core machine the figures move with whatever else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import shutil
import statistics
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar

import nats
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError
from sqlalchemy import Column, Integer, MetaData, Table, Text, insert, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db import create_engine, create_session_factory, new_id, schema_metadata, transaction
from shared.embedded import EmbeddedNats, EmbeddedPostgres
from shared.events import Event, register
from shared.messaging import (
    Actor,
    ConsumerRunner,
    Envelope,
    OutboxRelay,
    add_messaging_tables,
    emit,
    ensure_stream,
    stream_name,
)

WRITERS = 8
VERBOSE = False
NOTIFY = True
PAYLOAD = "x" * 200
ACTOR = Actor(subject="bench", kind="service", name="bench")


@register
class BenchItemCreated(Event):
    """A benchmark event (about 400 bytes of envelope)."""

    event_type: ClassVar[str] = "baton.bench.item.created.v1"
    n: int
    payload: str


# -- (a) raw JetStream ----------------------------------------------------------------------------------


async def raw_jetstream(url: str, count: int) -> tuple[float, float]:
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=4000)
    await js.add_stream(StreamConfig(name="BENCH_RAW", subjects=["bench.raw.>"], storage=StorageType.FILE))
    body = orjson_body()
    start = time.perf_counter()
    pending: list[Any] = []
    for i in range(count):
        headers = {"ce-id": str(uuid.uuid4()), "ce-type": "bench.raw.v1", "Nats-Msg-Id": f"raw-{i}"}
        pending.append(await js.publish_async("bench.raw.item", body, headers=headers))
        if len(pending) >= 2000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    publish_rate = count / (time.perf_counter() - start)

    sub = await js.pull_subscribe("bench.raw.>", durable="bench-raw", stream="BENCH_RAW")
    start, got = time.perf_counter(), 0
    while got < count:
        for msg in await sub.fetch(500, timeout=2):
            await msg.ack()
            got += 1
    await nc.flush()
    consume_rate = count / (time.perf_counter() - start)
    await nc.close()
    return publish_rate, consume_rate


def orjson_body() -> bytes:
    import orjson

    return orjson.dumps({"n": 1, "payload": PAYLOAD})


# -- (b) raw Postgres -------------------------------------------------------------------------------------


async def raw_commits(engine: AsyncEngine, writers: int, seconds: float, *, notify: bool = False) -> float:
    table = Table(
        "raw_rows", MetaData(), Column("id", UUID(as_uuid=True), primary_key=True), Column("doc", JSONB)
    )
    factory = create_session_factory(engine)
    deadline = time.perf_counter() + seconds
    done = 0

    async def writer() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            async with transaction(factory) as session:
                await session.execute(insert(table).values(id=new_id(), doc={"n": done, "payload": PAYLOAD}))
                if notify:
                    await session.execute(text("SELECT pg_notify('bench', 'x')"))
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return done / (time.perf_counter() - start)


# -- (c) the pipeline -------------------------------------------------------------------------------------


class TimedConsumer(ConsumerRunner):
    """Records when each event's ack leaves (its transaction has committed by then)."""

    consumed: dict[str, float]

    async def _ack(self, msg: Any) -> None:
        await super()._ack(msg)
        self.consumed[msg.headers["ce-id"]] = time.perf_counter()


async def write_events(
    pg_url: str, count: int, rate: float | None, notify: bool = True
) -> tuple[dict[str, float], float]:
    """``WRITERS`` tasks emit ``count`` events, one commit each; commit times by event id, and the
    duration. Runs in its own process, like a service's API process next to its worker."""
    engine = create_engine(pg_url, schema="bench_producer", pool_size=WRITERS + 2)
    producer = create_session_factory(engine)
    committed: dict[str, float] = {}

    async def writer(index: int) -> None:
        per_writer = count // WRITERS
        interval = None if rate is None else WRITERS / rate
        begin = time.perf_counter() + index * (interval or 0) / WRITERS  # spread the writers evenly
        for k in range(per_writer):
            if interval is not None:
                await asyncio.sleep(max(0.0, begin + k * interval - time.perf_counter()))
            async with transaction(producer) as session:
                env = await emit(
                    session,
                    BenchItemCreated(n=index * per_writer + k, payload=PAYLOAD),
                    tenant=None,
                    actor=ACTOR,
                    resource_id=f"item-{k}",
                    notify=notify,
                )
            committed[env.id] = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes

    start = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(WRITERS)))
    duration = time.perf_counter() - start
    await engine.dispose()
    return committed, duration


def _writer_process(pg_url: str, count: int, rate: float | None, notify: bool, out: Connection) -> None:
    out.send(asyncio.run(write_events(pg_url, count, rate, notify)))
    out.close()


async def pipeline(
    pg_url: str,
    producer: async_sessionmaker[AsyncSession],
    consumer_sessions: async_sessionmaker[AsyncSession],
    effects: Table,
    nats_url: str,
    *,
    count: int,
    rate: float | None,
    label: str,
) -> dict[str, float]:
    """Emit ``count`` events from a writer process (``rate`` per second in total, or flat out) while this
    process runs the relay and the consumer; wait until all are consumed."""

    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        await session.execute(insert(effects).values(event_id=uuid.UUID(envelope.id), n=envelope.data["n"]))

    relay = OutboxRelay(producer, nats_url, "bench", poll_interval=0.5 if NOTIFY else 0.05)
    consumer = TimedConsumer(
        consumer_sessions,
        nats_url,
        consumer=f"bench-{label}",
        stream=stream_name("bench"),
        subjects=["baton.bench.>"],
        handlers={BenchItemCreated.event_type: handle},
        batch=500,
        fetch_timeout=0.5,
    )
    consumer.consumed = {}
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(stream_name("bench"))  # each phase starts from an empty stream
    await ensure_stream(js, "bench")
    await nc.close()
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]
    await relay.wait_leader(10)

    async def progress() -> None:
        while True:
            await asyncio.sleep(1)
            print(
                f"  {time.perf_counter() - start:5.1f}s published {relay.stats.published} "
                f"consumed {len(consumer.consumed)}",
                flush=True,
            )

    total = (count // WRITERS) * WRITERS
    receiver, sender = multiprocessing.get_context("spawn").Pipe(duplex=False)
    writer = multiprocessing.get_context("spawn").Process(
        target=_writer_process, args=(pg_url, count, rate, NOTIFY, sender), daemon=True
    )
    start = time.perf_counter()
    writer.start()
    monitor = asyncio.create_task(progress()) if VERBOSE else None
    committed, write_seconds = await asyncio.to_thread(receiver.recv)
    await asyncio.to_thread(writer.join)
    deadline = time.monotonic() + 120
    while len(consumer.consumed) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if monitor is not None:
        monitor.cancel()
        print(f"  {relay.stats}\n  {consumer.stats}", flush=True)
    relay.stop()
    consumer.stop()
    await asyncio.gather(*tasks)
    first_commit, last_consumed = min(committed.values()), max(consumer.consumed.values())
    latencies = sorted(
        (consumer.consumed[i] - t) * 1000 for i, t in committed.items() if i in consumer.consumed
    )
    return {
        "events": float(len(consumer.consumed)),
        "write_rate": total / write_seconds,
        "throughput": len(consumer.consumed) / (last_consumed - first_commit),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
    }


async def drain(
    producer: async_sessionmaker[AsyncSession],
    consumer_sessions: async_sessionmaker[AsyncSession],
    effects: Table,
    nats_url: str,
    count: int,
) -> tuple[float, float]:
    """Capacity of each stage alone: a backlog of ``count`` events (written 100 per transaction), drained
    first by the relay, then by the consumer; events/s for each."""
    for start in range(0, count, 100):
        async with transaction(producer) as session:
            for n in range(start, min(start + 100, count)):
                await emit(
                    session, BenchItemCreated(n=n, payload=PAYLOAD), tenant=None, actor=ACTOR, resource_id="x"
                )
    nc = await nats.connect(nats_url)
    with contextlib.suppress(NotFoundError):
        await nc.jetstream().delete_stream(stream_name("bench"))
    await nc.close()
    relay = OutboxRelay(producer, nats_url, "bench")
    began = time.perf_counter()
    published = await relay.relay_once()
    relay_rate = published / (time.perf_counter() - began)
    await relay.close()

    async def handle(session: AsyncSession, envelope: Envelope) -> None:
        await session.execute(insert(effects).values(event_id=uuid.UUID(envelope.id), n=envelope.data["n"]))

    consumer = ConsumerRunner(
        consumer_sessions,
        nats_url,
        consumer="bench-drain",
        stream=stream_name("bench"),
        subjects=["baton.bench.>"],
        handlers={BenchItemCreated.event_type: handle},
        batch=500,
    )
    await consumer.start()
    began = time.perf_counter()
    while consumer.stats.processed < published:
        await consumer.process_batch(timeout=1)
    consumer_rate = published / (time.perf_counter() - began)
    await consumer.close()
    return relay_rate, consumer_rate


async def prepare_schema(url: str, schema: str, metadata: MetaData) -> AsyncEngine:
    engine = create_engine(url, schema=schema, pool_size=WRITERS + 4)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.execute(text(f'SET LOCAL search_path TO "{schema}"'))
        await conn.run_sync(metadata.create_all)
    return engine


async def run(pg_url: str, nats_url: str, events: int) -> None:
    print("(a) raw JetStream ...", flush=True)
    publish_rate, consume_rate = await raw_jetstream(nats_url, 20_000)

    print("(b) raw Postgres commits ...", flush=True)
    raw_md = MetaData()
    Table("raw_rows", raw_md, Column("id", UUID(as_uuid=True), primary_key=True), Column("doc", JSONB))
    raw_engine = await prepare_schema(pg_url, "bench_raw", raw_md)
    commit_1 = await raw_commits(raw_engine, 1, 3.0)
    commit_n = await raw_commits(raw_engine, WRITERS, 3.0)
    commit_notify = await raw_commits(raw_engine, WRITERS, 3.0, notify=True)
    await raw_engine.dispose()

    producer_md = schema_metadata()
    add_messaging_tables(producer_md)
    consumer_md = schema_metadata()
    add_messaging_tables(consumer_md)
    effects = Table(
        "effects",
        consumer_md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", UUID(as_uuid=True), nullable=False),
        Column("n", Integer, nullable=False),
        Column("note", Text),
    )
    producer_engine = await prepare_schema(pg_url, "bench_producer", producer_md)
    consumer_engine = await prepare_schema(pg_url, "bench_consumer", consumer_md)
    producer, consumer = create_session_factory(producer_engine), create_session_factory(consumer_engine)

    print(f"(c) pipeline, {events} events flat out ...", flush=True)
    flat = await pipeline(
        pg_url, producer, consumer, effects, nats_url, count=events, rate=None, label="flat"
    )
    # Half the measured capacity, for about 12 s: latency without a standing queue.
    steady_rate = max(10.0, round(flat["throughput"] * 0.5, -1))
    steady_count = int(min(events // 2, max(steady_rate * 12, 10 * WRITERS)))
    print(f"(c) pipeline, {steady_count} events at {steady_rate:.0f}/s ...", flush=True)
    steady = await pipeline(
        pg_url, producer, consumer, effects, nats_url, count=steady_count, rate=steady_rate, label="steady"
    )
    print(f"(d) backlog of {events} events, drained by each stage alone ...", flush=True)
    relay_rate, consumer_rate = await drain(producer, consumer, effects, nats_url, events)
    await producer_engine.dispose()
    await consumer_engine.dispose()

    rows = [
        ("raw JetStream publish_async", f"{publish_rate:,.0f} msg/s", ""),
        ("raw JetStream fetch(500) + ack", f"{consume_rate:,.0f} msg/s", ""),
        ("raw Postgres commits, 1 writer", f"{commit_1:,.0f} /s", ""),
        (f"raw Postgres commits, {WRITERS} writers", f"{commit_n:,.0f} /s", ""),
        (
            "  same + pg_notify in each",
            f"{commit_notify:,.0f} /s",
            f"{commit_notify / commit_n:.2f} x (notifying commits serialize)",
        ),
        (
            f"emit, {WRITERS} writers (flat out)",
            f"{flat['write_rate']:,.0f} events/s",
            "with pg_notify" if NOTIFY else "notify=False, relay polls every 50 ms",
        ),
        (
            "pipeline throughput (flat out)",
            f"{flat['throughput']:,.0f} events/s",
            f"{flat['throughput'] / publish_rate:.3f} x publish, {flat['throughput'] / commit_n:.2f} x commits",
        ),
        ("  commit→consumed p50 / p99", f"{flat['p50_ms']:,.0f} / {flat['p99_ms']:,.0f} ms", "(queueing)"),
        (
            f"pipeline at {steady_rate:.0f}/s (steady)",
            f"{steady['throughput']:,.0f} events/s",
            f"{steady['events']:.0f} events",
        ),
        ("  commit→consumed p50 / p99", f"{steady['p50_ms']:,.1f} / {steady['p99_ms']:,.1f} ms", ""),
        (
            "relay alone, draining a backlog",
            f"{relay_rate:,.0f} events/s",
            f"{relay_rate / publish_rate:.2f} x publish",
        ),
        (
            "consumer alone, draining a backlog",
            f"{consumer_rate:,.0f} events/s",
            f"{consumer_rate / consume_rate:.2f} x fetch+ack",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>18}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--verbose", action="store_true", help="print progress every second")
    parser.add_argument(
        "--no-notify", action="store_true", help="emit(notify=False); the relay polls every 50 ms instead"
    )
    args = parser.parse_args()
    global VERBOSE, NOTIFY
    VERBOSE, NOTIFY = args.verbose, not args.no_notify
    root = Path(tempfile.mkdtemp(prefix="baton-bench-"))
    pg = EmbeddedPostgres(root / "postgres", durable=True)
    broker = EmbeddedNats(root / "nats")
    try:
        pg.start()
        broker.start()
        asyncio.run(run(pg.url(), broker.url, args.events))
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
