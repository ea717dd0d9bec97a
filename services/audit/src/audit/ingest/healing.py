"""Gap healing and reconciliation against the producers' relays.

Replays use the relays' request-reply protocol (``shared.messaging.replay``: request ``{"from", "to"}``
on ``baton._replay.<service>``; reply ``{"events", "next", "oldest_retained", "last_sequence"}``). The
reply's ``oldest_retained`` tells which holes are gone for good (marked ``lost``, reported, no longer
asked for) and ``last_sequence`` reveals a lost tail that no later event would ever expose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from audit.chain.models import Producer
from audit.chain.service import PartitionKeeper
from audit.config import AuditSettings
from audit.ingest.consumer import consumer_name
from audit.ingest.mapping import draft_from_envelope
from audit.ingest.pipeline import IngestItem, ingest
from audit.ingest.producers import list_producers, state_of, store_state
from audit.ingest.sequences import Gap
from shared.db import utcnow
from shared.messaging import Envelope, ReplayError, replay_subject

__all__ = ["ProducerReport", "ReplayPage", "heal_once", "reconcile_once", "request_range"]

log = logging.getLogger(__name__)


@dataclass
class ReplayPage:
    events: list[Envelope] = field(default_factory=list)
    oldest_retained: int | None = None
    last_sequence: int = 0


async def request_range(nc: NATS, producer: str, first: int, last: int, *, timeout: float) -> ReplayPage:
    """Every retained envelope of ``producer`` in ``first..last`` (paging through bounded answers)."""
    out = ReplayPage()
    cursor: int | None = first
    while cursor is not None and cursor <= last:
        msg = await nc.request(
            replay_subject(producer), orjson.dumps({"from": cursor, "to": last}), timeout=timeout
        )
        reply: dict[str, Any] = orjson.loads(msg.data)
        if "error" in reply:
            raise ReplayError(str(reply["error"]))
        out.events.extend(Envelope.model_validate(e) for e in reply.get("events", []))
        out.oldest_retained = reply.get("oldest_retained")
        out.last_sequence = max(out.last_sequence, int(reply.get("last_sequence") or 0))
        nxt = reply.get("next")
        cursor = int(nxt) if nxt is not None and int(nxt) > cursor else None
    return out


async def _claim(
    factory: async_sessionmaker[AsyncSession], producer: str, gap: Gap, settings: AuditSettings
) -> bool:
    """Mark a due gap as requested now, unless another replica just did (throttles replay requests)."""
    now = utcnow()
    async with factory() as session, session.begin():
        row = (
            await session.execute(
                select(Producer).where(Producer.producer == producer).with_for_update(skip_locked=True)
            )
        ).scalar_one_or_none()
        if row is None:
            return False
        state = state_of(row)
        due = state.due(
            now, grace_seconds=settings.gap_grace_seconds, retry_seconds=settings.replay_retry_seconds
        )
        match = next((g for g in due if g.start <= gap.start and g.end >= gap.start), None)
        if match is None:
            return False
        state.mark_requested(match, now)
        store_state(row, state, now)
        row.replays_requested += 1
    return True


async def _apply_page(
    factory: async_sessionmaker[AsyncSession],
    keeper: PartitionKeeper,
    row: Producer,
    page: ReplayPage,
    first: int,
    last: int,
    settings: AuditSettings,
) -> int:
    drafts = [
        IngestItem(
            draft_from_envelope(
                envelope,
                stream=row.stream,
                stream_sequence=None,
                producer=row.producer,
                max_payload_bytes=settings.max_payload_bytes,
            )
        )
        for envelope in page.events
        if envelope.sequence is not None and first <= envelope.sequence <= last
    ]
    appended = 0
    if drafts:
        outcome = await ingest(factory, keeper, drafts)
        appended = len(outcome.appended)
    now = utcnow()
    async with factory() as session, session.begin():
        locked = (
            await session.execute(select(Producer).where(Producer.producer == row.producer).with_for_update())
        ).scalar_one()
        state = state_of(locked)
        state.report_last(page.last_sequence, now)
        returned = {d.draft.producer_sequence for d in drafts}
        oldest = page.oldest_retained
        if any(s not in returned for s in range(first, last + 1) if oldest is None or s < oldest):
            state.mark_lost(oldest if oldest is not None else last + 1)
        store_state(locked, state, now)
        locked.replayed_entries += appended
    return appended


async def heal_once(
    factory: async_sessionmaker[AsyncSession], nc: NATS, keeper: PartitionKeeper, settings: AuditSettings
) -> int:
    """Ask the producers for every gap past its grace period; how many entries the replays added."""
    async with factory() as session:
        producers = [p for p in await list_producers(session) if p.gaps]
    now = utcnow()
    healed = 0
    for row in producers:
        due = state_of(row).due(
            now, grace_seconds=settings.gap_grace_seconds, retry_seconds=settings.replay_retry_seconds
        )
        for gap in due:
            if not await _claim(factory, row.producer, gap, settings):
                continue
            log.warning(
                "producer %s: sequences %d..%d missing for %.1fs; asking its relay for a replay",
                row.producer, gap.start, gap.end, (now - gap.since).total_seconds(),
            )  # fmt: skip
            for first in range(gap.start, gap.end + 1, settings.replay_max_range):
                last = min(gap.end, first + settings.replay_max_range - 1)
                try:
                    page = await request_range(
                        nc, row.producer, first, last, timeout=settings.replay_timeout_seconds
                    )
                except (nats.errors.Error, TimeoutError, ReplayError, ValueError) as exc:
                    log.warning("producer %s: replay %d..%d failed: %r", row.producer, first, last, exc)
                    break
                healed += await _apply_page(factory, keeper, row, page, first, last, settings)
    return healed


@dataclass
class ProducerReport:
    producer: str
    stream: str | None
    last_sequence_seen: int
    contiguous_through: int
    producer_last_sequence: int
    gaps_open: int
    missing: int
    lost: int
    replays_requested: int
    replayed_entries: int

    @classmethod
    def of(cls, row: Producer) -> ProducerReport:
        state = state_of(row)
        return cls(
            producer=row.producer,
            stream=row.stream,
            last_sequence_seen=row.max_seen,
            contiguous_through=row.high_water,
            producer_last_sequence=row.reported_last,
            gaps_open=len(state.gaps),
            missing=sum(g.size for g in state.gaps),
            lost=sum(g.size for g in state.gaps if g.lost),
            replays_requested=row.replays_requested,
            replayed_entries=row.replayed_entries,
        )


async def _caught_up(js: JetStreamContext, stream: str | None) -> bool:
    """Whether the stream's audit consumer has nothing pending (a relay's higher count is then a loss)."""
    if stream is None:
        return False
    try:
        info = await js.consumer_info(stream, consumer_name(stream))
    except (nats.errors.Error, TimeoutError):
        return False
    return (info.num_pending or 0) == 0 and (info.num_ack_pending or 0) == 0


async def reconcile_once(
    factory: async_sessionmaker[AsyncSession], nc: NATS, settings: AuditSettings
) -> list[ProducerReport]:
    """Ask each producer's relay for its last sequence, open a gap for a lost tail, log the report."""
    js = nc.jetstream()
    async with factory() as session:
        producers = await list_producers(session)
    reports: list[ProducerReport] = []
    for row in producers:
        try:
            probe = await request_range(
                nc, row.producer, row.max_seen + 1, row.max_seen + 1, timeout=settings.replay_timeout_seconds
            )
        except (nats.errors.Error, TimeoutError, ReplayError, ValueError) as exc:
            log.info("producer %s: relay did not answer the reconciliation probe (%r)", row.producer, exc)
            probe = None
        if probe is not None and probe.last_sequence > row.max_seen and await _caught_up(js, row.stream):
            now = utcnow()
            async with factory() as session, session.begin():
                locked = (
                    await session.execute(
                        select(Producer).where(Producer.producer == row.producer).with_for_update()
                    )
                ).scalar_one()
                state = state_of(locked)
                state.report_last(probe.last_sequence, now)
                store_state(locked, state, now)
                row = locked
        report = ProducerReport.of(row)
        reports.append(report)
        log.info(
            "audit reconciliation: producer=%s seen=%d contiguous=%d producer_last=%d gaps=%d missing=%d "
            "lost=%d replays_requested=%d",
            report.producer, report.last_sequence_seen, report.contiguous_through,
            report.producer_last_sequence, report.gaps_open, report.missing, report.lost,
            report.replays_requested,
        )  # fmt: skip
    return reports
