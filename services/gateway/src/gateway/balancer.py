"""The endpoints of one upstream: requests take turns, and an endpoint that cannot be reached is set aside.

``BATON_GATEWAY_<NAME>_URL`` may list several base URLs separated by commas, for example the replicas of
a service when nothing balances them (``make run`` with replicas). With one URL (a Kubernetes Service,
which balances the pods itself) this is a pass-through.

- Each request gets every endpoint once, in the order to try them: the ones in service first, taking turns
  (round-robin), then the ones set aside, the one due back soonest first. So a request is never refused
  without trying, even when every endpoint has failed lately.
- An endpoint whose connection cannot be made (refused, unreachable, not accepted within the connect
  timeout) is set aside for ``eject_seconds``; a request that then succeeds on it puts it back at once.
  Nothing of the request was sent, so the proxy may go on to the next endpoint whatever the method.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Endpoints"]

log = logging.getLogger("gateway.balancer")


class Endpoints:
    def __init__(
        self,
        name: str,
        urls: Sequence[str],
        *,
        eject_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError(f"upstream {name!r} has no URL")
        self.name = name
        self.urls = tuple(urls)
        self.eject_seconds = eject_seconds
        self.ejections = 0
        self._clock = clock
        self._turn = random.randrange(len(self.urls))  # replicas of the gateway do not all start on one
        self._down: dict[str, float] = {}  # url -> when it may be tried again

    def order(self) -> Sequence[str]:
        """Every endpoint once, in the order one request should try them."""
        if len(self.urls) == 1:
            return self.urls
        turn = self._turn
        self._turn = turn + 1
        if not self._down:
            return _rotated(self.urls, turn)
        now = self._clock()
        for url, until in list(self._down.items()):
            if until <= now:
                del self._down[url]  # due back: tried again like any other
        up = [url for url in self.urls if url not in self._down]
        aside = sorted(self._down, key=self._down.__getitem__)
        return _rotated(up, turn) + aside  # the turns go round the endpoints in service only

    def failed(self, url: str) -> None:
        """No connection could be made to ``url``: set it aside."""
        if url not in self._down:
            self.ejections += 1
            if len(self.urls) > 1:
                log.warning(
                    "%s endpoint %s unreachable; set aside for %.0f s", self.name, url, self.eject_seconds
                )
        self._down[url] = self._clock() + self.eject_seconds

    def succeeded(self, url: str) -> None:
        """``url`` answered: back in service if it was set aside."""
        if self._down and self._down.pop(url, None) is not None:
            log.info("%s endpoint %s answers again", self.name, url)

    def state(self) -> dict[str, Any]:
        """For ``/readyz``: how many endpoints, which are set aside, how often one was."""
        now = self._clock()
        return {
            "endpoints": len(self.urls),
            "set_aside": sorted(url for url, until in self._down.items() if until > now),
            "ejections": self.ejections,
        }


def _rotated(urls: Sequence[str], turn: int) -> list[str]:
    if not urls:
        return []
    start = turn % len(urls)
    return [*urls[start:], *urls[:start]]
