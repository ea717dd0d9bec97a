"""FastAPI dependencies for what the app's lifespan set up: settings, blob store, embedding provider."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from documents.config import Settings
from documents.documents.blobstore import BlobStore
from documents.embeddings import EmbeddingProvider
from shared.http import session_factory

__all__ = ["BlobsDep", "EmbedderDep", "FactoryDep", "SettingsDep"]


def get_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def get_blobs(request: Request) -> BlobStore:
    return cast(BlobStore, request.app.state.blobs)


def get_embedder(request: Request) -> EmbeddingProvider:
    return cast(EmbeddingProvider, request.app.state.embedder)


SettingsDep = Annotated[Settings, Depends(get_settings)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
EmbedderDep = Annotated[EmbeddingProvider, Depends(get_embedder)]
FactoryDep = Annotated[async_sessionmaker[AsyncSession], Depends(session_factory)]
