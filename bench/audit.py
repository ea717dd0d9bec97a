"""How fast does the audit log append and verify, compared with the raw Postgres commit rate?

Run: ``.venv/bin/python bench/audit.py [--events 20000]`` (about 1-2 min). Starts its own durable Postgres and
nats-server (JetStream, file storage) in a temporary directory, applies the audit migrations, then
measures in one run:

(a) raw Postgres: single-row insert + commit rate (one writer);
(b) direct appends: ``append_entries`` in batches of 200, one chain and 20 chains;
(c) backlog drain: ``--events`` envelopes already in a producer stream, then ``AuditIngest`` started;
    entries per second until all are recorded;
(d) steady load: events published at ``--rate`` per second for ``--seconds``; entries per second and the
    p50 / p99 publish-to-recorded lag;
(e) ``verify`` speed on the largest chain (entries per second).
"""

# ruff: noqa: E402  (the path fix below must run before the imports)
from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the service's package: keep its directory from shadowing ``audit``.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid

import nats
from audit.chain.canonical import EntryDraft
from audit.chain.models import Entry
from audit.chain.service import PartitionKeeper, append_entries
from audit.chain.verify import verify_chain
from audit.checkpoints.signing import Keyring, Signer
from audit.config import Settings
from audit.ingest.runner import AuditIngest
from sqlalchemy import Column, MetaData, Table, func, insert, select, text
from sqlalchemy.dialects.postgresql import JSONB, UUID

from shared.db import create_engine, create_session_factory, new_id, utcnow
from shared.embedded import EmbeddedNats, EmbeddedPostgres
from shared.messaging import Actor, Envelope, ensure_stream, to_nats
from shared.migrations import upgrade

MIGRATIONS = Path(__file__).resolve().parents[1] / "services" / "audit" / "migrations"
ACTOR = Actor(subject="bench", kind="service", name="bench")
PAYLOAD = {"title": "x" * 150, "n": 0, "tags": ["a", "b"]}


async def raw_commits(url: str, seconds: float = 4.0) -> float:
    engine = create_engine(url, schema="public", pool_size=2)
    table = Table(
        "bench_raw", MetaData(), Column("id", UUID(as_uuid=True), primary_key=True), Column("doc", JSONB)
    )
    async with engine.begin() as conn:
        await conn.run_sync(table.create, checkfirst=True)
    done, deadline, start = 0, time.perf_counter() + seconds, time.perf_counter()
    while time.perf_counter() < deadline:
        async with engine.begin() as conn:
            await conn.execute(insert(table).values(id=new_id(), doc=PAYLOAD))
        done += 1
    rate = done / (time.perf_counter() - start)
    await engine.dispose()
    return rate


def drafts(n: int, clients: list[uuid.UUID]) -> list[EntryDraft]:
    return [
        EntryDraft(
            event_id=str(new_id()),
            action="baton.bench.item.created.v1",
            client_id=clients[i % len(clients)],
            payload={**PAYLOAD, "n": i},
            actor_subject="bench",
            actor_kind="service",
            resource_type="item",
            resource_id=str(i),
        )
        for i in range(n)
    ]


async def direct_appends(factory, n: int, clients: list[uuid.UUID], batch: int = 200) -> float:
    await PartitionKeeper(factory).ensure()
    items = drafts(n, clients)
    start = time.perf_counter()
    for i in range(0, n, batch):
        async with factory() as session, session.begin():
            await append_entries(session, items[i : i + batch])
    return n / (time.perf_counter() - start)


def envelope(service: str, tenant: uuid.UUID, n: int, sequence: int) -> Envelope:
    return Envelope(
        id=str(new_id()),
        source=f"/baton/{service}",
        type=f"baton.{service}.item.created.v1",
        subject=str(n),
        time=utcnow(),
        tenant=str(tenant),
        actor=ACTOR,
        sequence=sequence,
        data={**PAYLOAD, "n": n},
    )


async def publish(
    js, service: str, tenants: list[uuid.UUID], first: int, count: int, rate: float | None
) -> None:
    start = time.perf_counter()
    pending = []
    for i in range(count):
        seq = first + i
        subject, headers, body = to_nats(envelope(service, tenants[seq % len(tenants)], seq, seq))
        pending.append(await js.publish_async(subject, body, headers=headers))
        if rate is not None:
            delay = start + (i + 1) / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        if len(pending) >= 2000:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)


async def count_entries(factory, producer: str) -> int:
    async with factory() as session:
        return int(
            await session.scalar(select(func.count()).select_from(Entry).where(Entry.producer == producer))
            or 0
        )


async def wait_for(factory, producer: str, n: int, timeout: float = 600) -> float:
    start = time.perf_counter()
    while await count_entries(factory, producer) < n:
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{producer}: fewer than {n} entries after {timeout}s")
        await asyncio.sleep(0.05)
    return time.perf_counter() - start


async def run(url: str, nats_url: str, events: int, rate: float, seconds: float) -> None:
    await upgrade(url, MIGRATIONS, "audit")
    engine = create_engine(url, schema="audit", pool_size=10)
    factory = create_session_factory(engine)
    settings = Settings(database_url=url, nats_url=nats_url, fetch_batch=500, discovery_interval_seconds=0.2)

    print("(a) raw Postgres commits ...", flush=True)
    commits = await raw_commits(url)
    print("(b) direct appends ...", flush=True)
    one_chain = await direct_appends(factory, 10_000, [uuid.uuid4()])
    many_chains = await direct_appends(factory, 10_000, [uuid.uuid4() for _ in range(20)])

    nc = await nats.connect(nats_url)
    js = nc.jetstream(publish_async_max_pending=4000)
    tenants = [uuid.uuid4() for _ in range(5)]
    print(f"(c) backlog drain of {events} events ...", flush=True)
    await ensure_stream(js, "backlog")
    await publish(js, "backlog", tenants, 1, events, None)
    ingest = AuditIngest(factory, nats_url, settings)
    task = asyncio.create_task(ingest.run())
    drain_seconds = await wait_for(factory, "backlog", events)
    drain = events / drain_seconds

    steady_n = int(rate * seconds)
    print(f"(d) steady load: {rate:.0f}/s for {seconds:.0f}s ...", flush=True)
    await ensure_stream(js, "steady")
    await asyncio.sleep(0.5)  # discovery picks the stream up
    start = time.perf_counter()
    await publish(js, "steady", tenants, 1, steady_n, rate)
    await wait_for(factory, "steady", steady_n)
    steady = steady_n / (time.perf_counter() - start)
    async with factory() as session:
        lags = sorted(
            (
                await session.execute(
                    select(func.extract("epoch", Entry.recorded_at - Entry.occurred_at)).where(
                        Entry.producer == "steady"
                    )
                )
            ).scalars()
        )
    ingest.stop()
    await task
    await nc.close()

    print("(e) verify ...", flush=True)
    async with factory() as session:
        biggest = (
            await session.execute(
                select(Entry.chain_id, func.count())
                .group_by(Entry.chain_id)
                .order_by(func.count().desc())
                .limit(1)
            )
        ).first()
    assert biggest is not None
    keyring = Keyring(Signer.derived("bench").public)
    start = time.perf_counter()
    async with factory() as session:
        result = await verify_chain(session, biggest[0], keyring)
    verify_rate = result.entries_checked / (time.perf_counter() - start)
    assert result.ok, result.first_bad
    async with engine.connect() as conn:
        total = await conn.scalar(text("SELECT count(*) FROM audit.entries"))
    await engine.dispose()

    p50 = statistics.median(lags) * 1000
    p99 = lags[int(len(lags) * 0.99) - 1] * 1000
    rows = [
        ("raw Postgres commits, 1 writer", f"{commits:,.0f} /s", "1.00x"),
        (
            "direct append, 1 chain, batches of 200",
            f"{one_chain:,.0f} entries/s",
            f"{one_chain / commits:.2f}x",
        ),
        (
            "direct append, 20 chains, batches of 200",
            f"{many_chains:,.0f} entries/s",
            f"{many_chains / commits:.2f}x",
        ),
        (f"backlog drain ({events} events, 5 chains)", f"{drain:,.0f} entries/s", f"{drain / commits:.2f}x"),
        (
            f"steady load ({rate:.0f}/s offered)",
            f"{steady:,.0f} entries/s",
            f"lag p50 {p50:.0f} ms, p99 {p99:.0f} ms",
        ),
        (f"verify ({result.entries_checked} entries)", f"{verify_rate:,.0f} entries/s", ""),
    ]
    print(f"\naudit benchmark ({total} entries in the log)")
    for label, value, ratio in rows:
        print(f"  {label:<44} {value:>22}  {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="baton-bench-audit-"))
    pg = EmbeddedPostgres(root / "postgres", durable=True)
    broker = EmbeddedNats(root / "nats")
    try:
        pg.start()
        broker.start()
        asyncio.run(run(pg.url(), broker.url, args.events, args.rate, args.seconds))
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
