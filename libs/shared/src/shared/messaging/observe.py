"""How consumers are doing, for metrics, health and tests: JetStream's view of them and their dead letters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nats.js.api import ConsumerInfo
from prometheus_client.core import Metric
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.messaging.outbox import dead_letters
from shared.metrics import family

__all__ = ["consumer_families", "dead_letter_count"]


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


async def dead_letter_count(session: AsyncSession, consumer: str) -> int:
    """How many messages ``consumer`` gave up on (for health endpoints and tests)."""
    query = select(func.count()).select_from(dead_letters).where(dead_letters.c.consumer == consumer)
    return int(await session.scalar(query) or 0)
