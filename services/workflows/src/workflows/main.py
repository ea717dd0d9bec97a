"""The workflows service's HTTP application: ``uvicorn workflows.main:build_app --factory --port 8004``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from shared.app import create_app
from workflows.config import Settings
from workflows.definitions.router import router as definitions_router
from workflows.definitions.service import announce_unannounced, load_builtin
from workflows.instances.router import router as instances_router
from workflows.tasks.router import router as tasks_router

__all__ = ["build_app"]

log = logging.getLogger("workflows")


async def _load_builtin(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    factory = app.state.resources.session_factory
    if factory is None:
        return
    if settings.load_builtin:
        stored = await load_builtin(factory)
        if stored:
            log.info("stored %d built-in workflow definition version(s)", stored)
    announced = await announce_unannounced(factory)
    if announced:
        log.info("announced %d workflow definition(s) stored before announcements", announced)


def build_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """``overrides`` go to ``shared.app.create_app`` (tests pass ``engine``, ``token_verifier``, ...).

    The API never talks to NATS (events leave through the outbox and ``workflows.worker``). The built-in
    BMAD definitions are stored at startup and definitions never announced are announced (both idempotent).
    """
    overrides.setdefault("use_nats", False)
    on_startup = [_load_builtin, *overrides.pop("on_startup", ())]
    return create_app(
        settings or Settings(),
        [definitions_router, instances_router, tasks_router],
        on_startup=on_startup,
        **overrides,
    )
