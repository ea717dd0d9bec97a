"""Running a service's worker process: the outbox relay and its consumers, side by side, until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Protocol

from shared.health import HealthServer
from shared.metrics import Exposition, MetricsSource

__all__ = ["Runnable", "run_worker"]

log = logging.getLogger(__name__)


class Runnable(Protocol):
    """``OutboxRelay`` and ``ConsumerRunner`` both fit: ``run`` until ``stop`` is called."""

    async def run(self) -> None: ...
    def stop(self) -> None: ...


async def run_worker(*components: Runnable, health_port: int | None = None) -> None:
    """Run every component until SIGTERM/SIGINT, then stop them gracefully (each finishes its batch).

    If one component fails, the others are stopped too and the error is raised, so the process exits
    non-zero and the orchestrator restarts it, instead of limping on half-alive. With a ``health_port``
    (default: ``BATON_WORKER_HEALTH_PORT``), ``/healthz`` and ``/readyz`` answer there for probes (ready
    means every component is still running), and ``/metrics`` for Prometheus: what every component that
    is a ``MetricsSource`` reports, computed at each scrape.
    """
    loop = asyncio.get_running_loop()
    if health_port is None and (env_port := os.environ.get("BATON_WORKER_HEALTH_PORT")):
        health_port = int(env_port)

    def stop_all() -> None:
        for component in components:
            component.stop()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread / not Unix
            loop.add_signal_handler(sig, stop_all)
            installed.append(sig)
    tasks = [asyncio.create_task(component.run(), name=type(component).__name__) for component in components]

    async def all_running() -> dict[str, str]:
        return {t.get_name(): "ok" if not t.done() else "stopped" for t in tasks}

    health = None
    if health_port:
        exposition = Exposition([c for c in components if isinstance(c, MetricsSource)])
        health = HealthServer(health_port, all_running, metrics=exposition.render)
    if health is not None:
        await health.start()
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = [t for t in done if not t.cancelled() and t.exception() is not None]
        if failed:
            log.error("worker component %s failed; stopping the others", failed[0].get_name())
            stop_all()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
    finally:
        stop_all()
        if health is not None:
            await health.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
