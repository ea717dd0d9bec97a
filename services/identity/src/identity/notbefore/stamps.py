"""Per-subject not-before stamps (epoch seconds).

A stamp is strictly greater than the ``iat`` of every token issued so far (``iat`` is whole seconds, at
most ``floor(now)``), so every earlier token is refused. Tokens issued afterwards use
``iat = max(floor(now), stamp)`` and so are never refused by the stamp that preceded them.
"""

from __future__ import annotations

import math
import time

__all__ = ["issue_time", "next_stamp"]


def next_stamp(current: int, *, now: float | None = None) -> int:
    t = time.time() if now is None else now
    return max(current, math.floor(t) + 1)


def issue_time(valid_after: int, *, now: float | None = None) -> int:
    t = time.time() if now is None else now
    return max(math.floor(t), valid_after)
