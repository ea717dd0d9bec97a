"""The audit HTTP API: ``uvicorn audit.main:build_app --factory --port 8005``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from audit.checkpoints.router import public_router
from audit.checkpoints.router import router as checkpoints_router
from audit.checkpoints.signing import Keyring
from audit.config import Settings
from audit.context import AuditContext, build_signer
from audit.entries.router import router as entries_router
from audit.ingest.router import router as producers_router
from shared.app import create_app

__all__ = ["build_app"]


def build_app(settings: Settings | None = None, **overrides: Any) -> FastAPI:
    """``overrides`` go to ``create_app`` (tests pass ``engine=`` and ``token_verifier=``)."""
    settings = settings or Settings()
    overrides.setdefault("use_nats", False)  # the API reads the database only; the worker does NATS
    app = create_app(
        settings,
        [entries_router, checkpoints_router, producers_router, public_router],
        title="Baton audit",
        **overrides,
    )
    signer = build_signer(settings)
    app.state.audit = AuditContext(
        settings=settings,
        signer=signer,
        keyring=Keyring(signer.public, settings.previous_public_keys),
    )
    return app
