"""Consumer of identity's own events that writes not-before stamps to the gateway's bucket.

It runs as the durable consumer ``identity-not-before`` on ``BATON_IDENTITY``, so a stamp is written
at least once for every committed event that carries one, even if NATS KV was down when the change was
made (the message is retried with backoff until the write succeeds).
"""

from __future__ import annotations

from collections.abc import Mapping

from nats.errors import Error as NatsError
from sqlalchemy.ext.asyncio import AsyncSession

from identity.notbefore.store import NotBeforeStore
from shared.events.catalog import Event
from shared.events.identity import (
    AgentDisabled,
    AgentSecretRotated,
    AgentUpdated,
    MembershipGranted,
    MembershipRevoked,
    UserDisabled,
    UserUpdated,
)
from shared.messaging.consumer import Handler
from shared.messaging.envelope import Envelope
from shared.messaging.errors import TransientError

__all__ = ["CONSUMER", "STAMPED_EVENTS", "not_before_handlers", "stamp_of"]

CONSUMER = "identity-not-before"
STAMPED_EVENTS: tuple[type[Event], ...] = (
    UserDisabled,
    UserUpdated,
    MembershipGranted,
    MembershipRevoked,
    AgentDisabled,
    AgentSecretRotated,
    AgentUpdated,
)


def stamp_of(event: Event) -> tuple[str, int] | None:
    """(subject, not_before) of an event, or None when it carries no stamp."""
    stamp = getattr(event, "not_before", None)
    if stamp is None:
        return None
    subject = getattr(event, "agent_id", None) or getattr(event, "user_id", None)
    return (str(subject), int(stamp)) if subject is not None else None


def not_before_handlers(store: NotBeforeStore) -> Mapping[str, Handler]:
    def make(event_cls: type[Event]) -> Handler:
        async def handler(_session: AsyncSession, envelope: Envelope) -> None:
            found = stamp_of(envelope.parse_data(event_cls))
            if found is None:
                return
            try:
                await store.raise_to(*found)
            except (NatsError, OSError, TimeoutError) as exc:
                raise TransientError(f"not-before bucket unavailable: {exc!r}") from exc

        return handler

    return {cls.event_type: make(cls) for cls in STAMPED_EVENTS}
