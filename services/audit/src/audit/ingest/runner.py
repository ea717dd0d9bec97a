"""``AuditIngest``: the worker component that discovers ``BATON_*`` streams, runs one consumer per stream,
heals gaps and reconciles producers, over one NATS connection. Several replicas may run it at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from prometheus_client.core import Metric
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.chain.service import PartitionKeeper
from audit.config import AuditSettings
from audit.ingest.consumer import StreamConsumer, consumer_name
from audit.ingest.healing import ProducerReport, heal_once, reconcile_once
from audit.ingest.producers import list_producers
from shared.messaging.observe import consumer_families
from shared.metrics import family

__all__ = ["AuditIngest"]

log = logging.getLogger(__name__)


class AuditIngest:
    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        nats_url: str,
        settings: AuditSettings,
        *,
        name: str = "audit-ingest",
    ) -> None:
        self.factory = factory
        self.nats_url = nats_url
        self.settings = settings
        self.name = name
        self.keeper = PartitionKeeper(factory)
        self.consumers: dict[str, StreamConsumer] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self.nc: NATS | None = None

    def stop(self) -> None:
        self._stopping.set()
        for consumer in self.consumers.values():
            consumer.stop()

    async def run(self) -> None:
        self._stopping.clear()
        self.nc = await nats.connect(
            self.nats_url,
            name=self.name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            reconnected_cb=self._on_reconnected,
            error_cb=self._on_error,
        )
        s = self.settings
        loops = [
            asyncio.create_task(self._every(s.discovery_interval_seconds, self.discover), name="discover"),
            asyncio.create_task(self._every(s.gap_check_interval_seconds, self.heal), name="heal"),
            asyncio.create_task(self._every(s.reconcile_interval_seconds, self.reconcile), name="reconcile"),
        ]
        try:
            await self._stopping.wait()
        finally:
            for consumer in self.consumers.values():
                consumer.stop()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, *self._tasks.values(), return_exceptions=True)
            # close, not drain: fetched but unprocessed messages are simply redelivered later.
            with contextlib.suppress(Exception):
                await self.nc.close()
            self.nc = None

    async def _on_reconnected(self) -> None:
        for consumer in self.consumers.values():
            consumer.resubscribe = True

    async def _on_error(self, exc: Exception) -> None:
        log.debug("audit ingest: NATS: %s", exc)

    async def _every(self, seconds: float, job: Callable[[], Awaitable[object]]) -> None:
        while not self._stopping.is_set():
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audit ingest: %s failed; trying again later", getattr(job, "__name__", job))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)

    def _wanted(self, stream: str) -> bool:
        return stream.startswith(self.settings.stream_prefix) and stream not in self.settings.excluded_streams

    async def discover(self) -> list[str]:
        """Start a consumer for every producing stream that has none running; the streams consumed."""
        assert self.nc is not None
        js = self.nc.jetstream()
        try:
            infos = await js.streams_info()
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("audit ingest: cannot list streams (%s)", exc)
            return sorted(self._tasks)
        for info in infos:
            name = info.config.name
            if name is None or not self._wanted(name):
                continue
            task = self._tasks.get(name)
            if task is not None and not task.done():
                continue
            consumer = StreamConsumer(self.factory, self.keeper, js, name, self.settings)
            self.consumers[name] = consumer
            self._tasks[name] = asyncio.create_task(consumer.run(), name=f"audit-{name}")
            log.info("audit ingest: consuming %s", name)
        return sorted(n for n, t in self._tasks.items() if not t.done())

    async def metrics(self) -> list[Metric]:
        """What an operator watches: each stream's audit consumer (JetStream's view) and each producer's
        sequence as the log has it, with the gaps still open, the events given up as lost and the replays
        asked for."""
        families: list[Metric] = []
        if self.nc is not None:
            js = self.nc.jetstream()
            views = []
            for stream in sorted(self.consumers):
                with contextlib.suppress(NotFoundError):
                    info = await js.consumer_info(stream, consumer_name(stream))
                    views.append(({"stream": stream, "consumer": consumer_name(stream)}, info))
            families += consumer_families(views)
        async with self.factory() as session:
            reports = [ProducerReport.of(row) for row in await list_producers(session)]

        def each(field: str) -> list[tuple[dict[str, str], float]]:
            return [({"producer": r.producer}, float(getattr(r, field))) for r in reports]

        families += [
            family("gauge", "baton_audit_producer_contiguous_sequence", "Highest sequence of the producer "
                   "up to which the log has every event", each("contiguous_through")),
            family("gauge", "baton_audit_producer_seen_sequence", "Highest sequence of the producer seen",
                   each("last_sequence_seen")),
            family("gauge", "baton_audit_producer_gaps_open", "Gaps in the producer's sequence not yet "
                   "healed", each("gaps_open")),
            family("gauge", "baton_audit_producer_missing_events", "Events missing from the open gaps",
                   each("missing")),
            family("gauge", "baton_audit_producer_lost_events", "Events given up as lost (neither the "
                   "stream nor the producer's outbox had them)", each("lost")),
            family("counter", "baton_audit_producer_replays_requested", "Replays asked of the producer",
                   each("replays_requested")),
        ]  # fmt: skip
        return families

    async def heal(self) -> int:
        assert self.nc is not None
        return await heal_once(self.factory, self.nc, self.keeper, self.settings)

    async def reconcile(self) -> object:
        assert self.nc is not None
        return await reconcile_once(self.factory, self.nc, self.settings)
