"""How consumers are doing, for metrics, health and tests: JetStream's view of them and their dead letters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nats.js.api import ConsumerInfo
from prometheus_client.core import Metric
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.messaging.outbox import dead_letters
from shared.metrics import family

__all__ = ["consumer_families", "dead_letter_count", "settled_families"]


def consumer_families(views: Sequence[tuple[Mapping[str, str], ConsumerInfo]]) -> list[Metric]:
    """JetStream's view of durable consumers (labelled ``stream`` and ``consumer``), as metric families."""
    return [
        family("gauge", "baton_consumer_pending_messages", "Messages in the stream not yet delivered to the "
               "consumer", [(labels, info.num_pending or 0) for labels, info in views]),
        family("gauge", "baton_consumer_ack_pending_messages", "Messages delivered and not yet acknowledged",
               [(labels, info.num_ack_pending or 0) for labels, info in views]),
        family("gauge", "baton_consumer_redelivered_messages", "Unacknowledged messages delivered more than "
               "once", [(labels, info.num_redelivered or 0) for labels, info in views]),
    ]  # fmt: skip


def settled_families(labels: Mapping[str, str], dead_letters: int, stats: object) -> list[Metric]:
    """A consumer's dead letters (from its table) and what this process settled by outcome (``stats``: a
    ``ConsumerStats``), as metric families."""
    outcomes = ("processed", "duplicates", "unhandled", "retried", "dead_lettered")
    return [
        family("gauge", "baton_consumer_dead_letters", "Messages the consumer gave up on, recorded in its "
               "dead-letter table", [(labels, dead_letters)]),
        family("counter", "baton_consumer_messages", "Messages this process settled, by outcome",
               [({**labels, "outcome": o}, getattr(stats, o)) for o in outcomes]),
    ]  # fmt: skip


async def dead_letter_count(session: AsyncSession, consumer: str) -> int:
    """How many messages ``consumer`` gave up on (for health endpoints and tests)."""
    query = select(func.count()).select_from(dead_letters).where(dead_letters.c.consumer == consumer)
    return int(await session.scalar(query) or 0)
