"""Events between services: transactional outbox → relay → JetStream → idempotent consumers.

A producer calls ``emit(session, event, ...)`` inside its business transaction; its worker runs an
``OutboxRelay``; a consumer runs a ``ConsumerRunner`` whose handlers apply each event once. See
``docs`` in each module for the guarantees, and ARCHITECTURE.md ("Events") for the rules.
"""

from shared.messaging.consumer import ConsumerRunner, ConsumerStats, Handler, dead_letter_count, typed_handler
from shared.messaging.envelope import Actor, ActorKind, Envelope, from_nats, to_nats
from shared.messaging.errors import PoisonMessage, TransientError, UnregisteredEvent
from shared.messaging.inbox import InboxPruning, PruneResult, inbox_horizon_of, prune_inbox
from shared.messaging.outbox import (
    NOTIFY_CHANNEL,
    MessagingTables,
    add_messaging_tables,
    create_messaging_tables,
    drop_messaging_tables,
    emit,
    envelope_of,
    messaging_tables_ddl,
)
from shared.messaging.relay import OutboxRelay, RelayStats
from shared.messaging.replay import ReplayError, request_replay
from shared.messaging.streams import ensure_consumer, ensure_stream, replay_subject, stream_name
from shared.messaging.worker import Runnable, run_worker

__all__ = [
    "NOTIFY_CHANNEL",
    "Actor",
    "ActorKind",
    "ConsumerRunner",
    "ConsumerStats",
    "Envelope",
    "Handler",
    "InboxPruning",
    "MessagingTables",
    "OutboxRelay",
    "PoisonMessage",
    "PruneResult",
    "RelayStats",
    "ReplayError",
    "Runnable",
    "TransientError",
    "UnregisteredEvent",
    "add_messaging_tables",
    "create_messaging_tables",
    "dead_letter_count",
    "drop_messaging_tables",
    "emit",
    "ensure_consumer",
    "ensure_stream",
    "envelope_of",
    "from_nats",
    "inbox_horizon_of",
    "messaging_tables_ddl",
    "prune_inbox",
    "replay_subject",
    "request_replay",
    "run_worker",
    "stream_name",
    "to_nats",
    "typed_handler",
]
