"""Emitting identity's events: one place that fixes the source service and builds actors."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import Principal
from shared.events.catalog import Event
from shared.messaging.envelope import Actor
from shared.messaging.outbox import emit

__all__ = ["SERVICE_ACTOR", "actor_of", "record"]

SERVICE_ACTOR = Actor(subject="identity", kind="service", name="identity")


def actor_of(principal: Principal | None) -> Actor:
    """The event actor for a caller; the service itself when there is none (bootstrap, consumers)."""
    if principal is None:
        return SERVICE_ACTOR
    return Actor(subject=principal.subject, kind=principal.kind, name=principal.display_name)


async def record(
    session: AsyncSession,
    event: Event,
    *,
    actor: Actor,
    tenant: uuid.UUID | str | None = None,
    resource_id: uuid.UUID | str,
) -> None:
    """Add ``event`` to the outbox in the caller's transaction (published later by the relay)."""
    await emit(
        session,
        event,
        tenant=None if tenant is None else str(tenant),
        actor=actor,
        resource_id=str(resource_id),
        source_service="identity",
    )
