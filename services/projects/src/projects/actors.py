"""The ``Actor`` recorded on events, from the principal that made the change."""

from __future__ import annotations

from shared.auth import Principal
from shared.messaging.envelope import Actor

__all__ = ["SERVICE", "actor_of"]

SERVICE = "projects"


def actor_of(principal: Principal) -> Actor:
    return Actor(subject=principal.subject, kind=principal.kind, name=principal.display_name)
