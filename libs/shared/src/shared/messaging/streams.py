"""Stream and consumer declarations: one stream per producing service, durable pull consumers.

Declarations are idempotent (create, or update when the desired configuration changed), so every relay and
every consumer declares what it needs at start-up and after a broker restart, and no separate setup step
can be forgotten. Where a consumer starts is decided once, when it is created: the server refuses to change
a consumer's deliver policy or start time, and an update keeps what the consumer was created with.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.errors import APIError, BadRequestError, NotFoundError

__all__ = [
    "ensure_consumer",
    "ensure_stream",
    "replay_subject",
    "service_subjects",
    "stream_name",
]

log = logging.getLogger(__name__)

# nats-server's "stream name already in use" (a concurrent creator won the race).
_STREAM_NAME_IN_USE = 10058
# nats-server's "consumer not found" (as opposed to the stream not being there).
_CONSUMER_NOT_FOUND = 10014


def stream_name(service: str) -> str:
    """``BATON_<SERVICE>``: the stream holding everything ``service`` publishes."""
    return f"BATON_{service.upper()}"


def service_subjects(service: str) -> list[str]:
    return [f"baton.{service}.>"]


def replay_subject(service: str) -> str:
    """Where a service's relay answers replay requests (core NATS request-reply).

    Deliberately outside ``baton.<service>.>``: a request on a subject the stream captures would be stored
    as a message, and JetStream's PubAck would race the relay's answer.
    """
    return f"baton._replay.{service}"


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


async def ensure_stream(
    js: JetStreamContext,
    service: str,
    *,
    replicas: int = 1,
    duplicate_window: float | timedelta = timedelta(seconds=120),
    max_age: float | timedelta | None = None,
) -> StreamInfo:
    """Declare ``BATON_<SERVICE>`` on ``baton.<service>.>``: file storage, limits retention.

    ``duplicate_window`` bounds how late a relay may re-publish an event and still have JetStream drop
    the copy (``Nats-Msg-Id``); past it, consumers' inboxes are the only dedupe. ``max_age`` unset keeps
    events until someone decides otherwise.
    """
    name = stream_name(service)
    desired = StreamConfig(
        name=name,
        description=f"Events published by the Baton {service} service",
        subjects=service_subjects(service),
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=_seconds(duplicate_window),
        max_age=None if max_age is None else _seconds(max_age),
    )
    try:
        current = await js.stream_info(name)
    except NotFoundError:
        try:
            return await js.add_stream(desired)
        except BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
            current = await js.stream_info(name)
    cfg = current.config
    if (
        sorted(cfg.subjects or []) == sorted(desired.subjects or [])
        and cfg.num_replicas == desired.num_replicas
        and abs((cfg.duplicate_window or 0) - desired.duplicate_window) < 1e-3
        and (cfg.max_age or 0) == (desired.max_age or 0)
    ):
        return current
    log.info("updating stream %s", name)
    return await js.update_stream(desired)


async def ensure_consumer(
    js: JetStreamContext,
    stream: str,
    durable: str,
    filter_subjects: Sequence[str],
    *,
    max_deliver: int = 10,
    backoff: Sequence[float] | None = None,
    ack_wait: float | timedelta = 30.0,
    max_ack_pending: int = 1000,
    start_time: Callable[[], Awaitable[datetime | None]] | None = None,
) -> ConsumerInfo:
    """Declare (or update) a durable pull consumer with explicit acks.

    ``ack_wait`` is how long a delivered, unacknowledged message (a crashed worker) waits before it is
    redelivered. ``backoff``, when given, replaces ``ack_wait`` for successive redeliveries on the server
    side; ``ConsumerRunner`` leaves it unset and applies its backoff through ``nak(delay)`` instead, so
    slow handlers are not redelivered while still running.

    ``start_time`` is awaited only when the consumer does not exist yet: a time makes the new consumer
    deliver from the first message stored at or after it (``DeliverPolicy.BY_START_TIME``), ``None`` from
    the stream's first message. An existing consumer keeps where it was created to start.
    """
    subjects = list(filter_subjects)
    config = ConsumerConfig(
        name=durable,
        durable_name=durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=_seconds(ack_wait),
        max_deliver=max_deliver,
        backoff=list(backoff) if backoff else None,
        max_ack_pending=max_ack_pending,
        filter_subject=subjects[0] if len(subjects) == 1 else None,
        filter_subjects=subjects if len(subjects) > 1 else None,
    )
    current = await _consumer_info(js, stream, durable)
    if current is None:
        start = None if start_time is None else await start_time()
        if start is not None:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = start
        try:
            created = await js.add_consumer(stream, config)
        except APIError:
            # Created meanwhile by another replica with another start (the server answers 400 or 500,
            # "start time can not be updated"): update that one instead.
            current = await _consumer_info(js, stream, durable)
            if current is None:
                raise
        else:
            if start is not None:
                log.info(
                    "created consumer %s on %s delivering from %s: earlier messages are not delivered",
                    durable,
                    stream,
                    start.isoformat(),
                )
            return created
    config.deliver_policy = current.config.deliver_policy
    config.opt_start_time = current.config.opt_start_time
    config.opt_start_seq = current.config.opt_start_seq
    return await js.add_consumer(stream, config)


async def _consumer_info(js: JetStreamContext, stream: str, durable: str) -> ConsumerInfo | None:
    """The consumer, or ``None`` when the stream has no such consumer (a missing stream raises)."""
    try:
        info: ConsumerInfo = await js.consumer_info(stream, durable)
    except NotFoundError as exc:
        if exc.err_code != _CONSUMER_NOT_FOUND:
            raise
        return None
    return info
