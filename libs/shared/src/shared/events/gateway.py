"""Events published by the gateway (stream ``BATON_GATEWAY``, subjects ``baton.gateway.>``).

The gateway has no database and so no outbox: it publishes these directly, in batches, from a bounded
in-memory queue. They are best effort by design: when the queue is full (NATS slow or down) new events
are dropped and counted, never allowed to slow the request path. ``Nats-Msg-Id`` is the event id.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from shared.events.catalog import Event, register

__all__ = ["RequestDenied"]


@register
class RequestDenied(Event):
    """A request was refused: by the gateway before it reached a service (no, invalid or revoked token:
    401; a forbidden origin: 403; a rate limit: 429), or by the service it was forwarded to (its 401 or
    403). Envelope ``tenant`` is the agent's client when known."""

    event_type: ClassVar[str] = "baton.gateway.request.denied.v1"

    status: Literal[401, 403, 429]
    # Stable problem code: unauthorized, invalid_token, token_expired, token_revoked, rate_limited, ...;
    # for a service's refusal, its problem code, or ``upstream_<status>`` when it gave none.
    reason: str = Field(max_length=64)
    method: str = Field(max_length=16)
    # Path only, never the query string (it may carry secrets); truncated to 512 characters.
    path: str = Field(max_length=512)
    # The route table pattern that matched (``upstream:pattern``), None when none did.
    route: str | None = Field(default=None, max_length=256)
    request_id: str = Field(max_length=128)
    # Who, when the token verified (a revoked, rate-limited or refused principal); None for anonymous
    # callers and tokens that did not verify.
    subject: str | None = Field(default=None, max_length=256)
    principal_kind: Literal["user", "agent"] | None = None
    client_ip: str | None = Field(default=None, max_length=64)
    occurred_at: datetime
