"""What a consumer runner calls for each event: a ``Handler``, and ``typed_handler`` to write one per type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from shared.events.catalog import Event
from shared.messaging.envelope import Envelope

__all__ = ["Handler", "typed_handler"]

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]
EventT = TypeVar("EventT", bound=Event)


def typed_handler(event_cls: type[EventT], fn: Callable[[AsyncSession, EventT], Awaitable[None]]) -> Handler:
    """Adapt ``async def on_x(session, event: X)`` to a ``Handler`` (data that does not fit is poison)."""

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        await fn(session, envelope.parse_data(event_cls))

    handler.__qualname__ = getattr(fn, "__qualname__", repr(fn))
    return handler
