"""Test helpers for consumers on the real JetStream: publish an event as a relay would, and drive a
``ConsumerRunner`` batch by batch until its counters say enough."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared.messaging.consumer import ConsumerRunner, ConsumerStats
from shared.messaging.envelope import Envelope, to_nats

__all__ = ["drain", "publish_envelope"]


async def publish_envelope(js: Any, envelope: Envelope, *, msg_id: str | None = None) -> None:
    """Publish ``envelope`` as its producer's relay would. Another ``msg_id`` gets a copy past JetStream's
    duplicate window, so a replay reaches the consumer and only its inbox can stop it."""
    subject, headers, body = to_nats(envelope)
    if msg_id is not None:
        headers["Nats-Msg-Id"] = msg_id
    await js.publish(subject, body, headers=headers)


async def drain(
    consumer: ConsumerRunner, until: Callable[[ConsumerStats], bool], timeout: float = 15.0
) -> None:
    """Process batches until ``until(consumer.stats)`` holds; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not until(consumer.stats):
        assert time.monotonic() < deadline, consumer.stats
        try:
            await consumer.process_batch(timeout=0.2)
        except TimeoutError:
            # nats-py's fetch can raise a bare asyncio.TimeoutError for "nothing yet"; the runner's own
            # loop carries on after it, and so does this.
            continue
