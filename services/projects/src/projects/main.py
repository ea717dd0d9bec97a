"""The projects service's HTTP application: ``uvicorn projects.main:build_app --factory --port 8002``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from projects.clients.router import router as clients_router
from projects.config import Settings
from projects.projects.router import router as projects_router
from shared.app import create_app

__all__ = ["build_app"]


def build_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """``overrides`` go to ``shared.app.create_app`` (tests pass ``engine``, ``token_verifier``, ...).

    The API never touches NATS (events leave through the outbox and ``projects.worker``), so no NATS
    connection is opened unless asked for.
    """
    overrides.setdefault("use_nats", False)
    return create_app(settings or Settings(), [clients_router, projects_router], **overrides)
