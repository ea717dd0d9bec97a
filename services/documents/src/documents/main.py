"""The documents service's HTTP application: ``uvicorn documents.main:build_app --factory --port 8003``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from documents.admin.router import router as admin_router
from documents.config import Settings
from documents.documents.blobstore import PostgresBlobStore
from documents.documents.router import router as documents_router
from documents.embeddings import EmbeddingProvider, build_provider
from documents.index.models import EMBEDDING_DIM
from documents.search.router import router as search_router
from shared.app import create_app

__all__ = ["build_app"]


def build_app(
    settings: Settings | None = None, *, embedder: EmbeddingProvider | None = None, **overrides: Any
) -> FastAPI:
    """``embedder`` replaces the provider named by settings (tests share one loaded model); other
    ``overrides`` go to ``shared.app.create_app`` (``engine``, ``token_verifier``, ...).

    The API never touches NATS (events leave through the outbox and ``documents.worker``), so no NATS
    connection is opened unless asked for.
    """
    settings = settings or Settings()
    overrides.setdefault("use_nats", False)
    on_startup = list(overrides.pop("on_startup", ()))
    on_shutdown = list(overrides.pop("on_shutdown", ()))

    async def start(app: FastAPI) -> None:
        provider = embedder or build_provider(settings, role="api")
        if provider.dim != EMBEDDING_DIM:
            raise RuntimeError(
                f"the embedding model {provider.model_id} has {provider.dim} dimensions; the index holds "
                f"{EMBEDDING_DIM} (another dimension needs a migration)"
            )
        app.state.embedder = provider
        app.state.blobs = PostgresBlobStore(app.state.resources.session_factory)

    async def stop(app: FastAPI) -> None:
        provider = getattr(app.state, "embedder", None)
        if provider is not None and provider is not embedder:
            await provider.aclose()

    return create_app(
        settings,
        [documents_router, search_router, admin_router],
        on_startup=[start, *on_startup],
        on_shutdown=[*on_shutdown, stop],
        **overrides,
    )
