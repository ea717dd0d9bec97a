"""Replay: re-reading a producer's retained outbox by sequence number, over core NATS request-reply.

JetStream acknowledges a publish before it fsyncs (``sync_interval``), so a broker crash can lose events the
relay already marked sent. Consumers that must see everything (the audit service) watch ``ce-sequence``
and, on a gap, ask the producer's relay for the missing range; the relay answers from its outbox, which
keeps sent rows for its retention period.

Wire format (JSON): request ``{"from": a, "to": b}`` (inclusive); reply ``{"events": [<envelope>...],
"next": n | null, "oldest_retained": s | null, "last_sequence": s}`` where each envelope is structured
CloudEvents JSON with ``sequence`` set, ``next`` is where to continue when the answer was cut at
``limit`` events or the broker's payload size, and a sequence in range that is absent (and below
``oldest_retained``) is gone for good. Errors: ``{"error": "..."}``. ``request_replay`` does the paging.
"""

from __future__ import annotations

from typing import Any

import orjson
from nats.aio.client import Client as NATS
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.messaging.envelope import Envelope
from shared.messaging.outbox import outbox, outbox_state
from shared.messaging.streams import replay_subject

__all__ = ["ReplayError", "answer_replay", "request_replay"]

# Room left in a reply for the JSON around the events.
_ENVELOPE_OVERHEAD = 256


class ReplayError(RuntimeError):
    """The relay refused or could not answer a replay request."""


async def answer_replay(engine: AsyncEngine, request: bytes, *, limit: int, max_bytes: int) -> bytes:
    """The reply to one replay request, read from the outbox through ``engine``."""
    try:
        body = orjson.loads(request)
        first, last = int(body["from"]), int(body["to"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return orjson.dumps({"error": 'expected {"from": <int>, "to": <int>}'})
    if first < 1 or last < first:
        return orjson.dumps({"error": "need 1 <= from <= to"})
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(outbox.c.sequence, outbox.c.payload)
                .where(outbox.c.sequence.between(first, last), outbox.c.sent_at.is_not(None))
                .order_by(outbox.c.sequence)
                .limit(limit)
            )
        ).all()
        oldest = await conn.scalar(select(func.min(outbox.c.sequence)).where(outbox.c.sent_at.is_not(None)))
        last_sequence = await conn.scalar(select(outbox_state.c.last_sequence).where(outbox_state.c.id == 1))
    events: list[bytes] = []
    size = _ENVELOPE_OVERHEAD
    next_from: int | None = None
    for sequence, payload in rows:
        encoded = orjson.dumps({**payload, "sequence": sequence})
        if events and size + len(encoded) + 1 > max_bytes:
            next_from = sequence
            break
        events.append(encoded)
        size += len(encoded) + 1
    else:
        if len(rows) == limit and rows[-1][0] < last:
            next_from = rows[-1][0] + 1
    head = orjson.dumps({"next": next_from, "oldest_retained": oldest, "last_sequence": last_sequence or 0})
    return b'{"events":[' + b",".join(events) + b"]," + head[1:]


async def request_replay(
    nc: NATS, service: str, first: int, last: int, *, timeout: float = 5.0
) -> list[Envelope]:
    """Every retained, published envelope of ``service`` with ``first <= sequence <= last``, in order.

    Pages through the relay's bounded answers. Sequences missing from the result are no longer retained.
    """
    out: list[Envelope] = []
    cursor: int | None = first
    while cursor is not None and cursor <= last:
        msg = await nc.request(
            replay_subject(service), orjson.dumps({"from": cursor, "to": last}), timeout=timeout
        )
        reply: dict[str, Any] = orjson.loads(msg.data)
        if "error" in reply:
            raise ReplayError(reply["error"])
        out.extend(Envelope.model_validate(e) for e in reply["events"])
        cursor = reply["next"]
    return out
