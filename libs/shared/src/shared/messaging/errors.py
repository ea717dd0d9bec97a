"""The outcomes a handler can signal, and the errors of the messaging plumbing itself."""

from __future__ import annotations

__all__ = ["PoisonMessage", "TransientError", "UnregisteredEvent"]


class TransientError(Exception):
    """Raised by a handler when trying again later may succeed (a dependency is down, a row is locked).

    The consumer rolls back, naks with the next backoff delay, and dead-letters the message once its
    deliveries are exhausted.
    """


class PoisonMessage(Exception):
    """Raised by a handler (or the envelope parser) when no retry can ever succeed.

    The consumer rolls back, records a ``dead_letters`` row and terminates the message: it is not
    redelivered, and it is not lost either.
    """


class UnregisteredEvent(TypeError):
    """``emit`` was given an event class that is not in the catalog, so nobody could read or document it."""
