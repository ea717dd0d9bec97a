"""Embedding providers behind one small interface, chosen by settings."""

from __future__ import annotations

from typing import Literal

from documents.config import Settings
from documents.embeddings.base import EmbeddingError, EmbeddingProvider, Vectors, l2_normalize

__all__ = ["EmbeddingError", "EmbeddingProvider", "Vectors", "build_provider", "l2_normalize"]


def build_provider(settings: Settings, *, role: Literal["api", "worker"]) -> EmbeddingProvider:
    """The provider named by ``BATON_DOCUMENTS_EMBEDDING_PROVIDER``; ``role`` picks its CPU budget."""
    if settings.embedding_provider == "local":
        from documents.embeddings.local import LocalMiniLMProvider

        threads = settings.embedding_threads_api if role == "api" else settings.embedding_threads_worker
        return LocalMiniLMProvider(threads=threads, batch_size=settings.embedding_batch_size)
    if settings.embedding_provider == "openai":
        from documents.embeddings.openai_compatible import OpenAICompatibleProvider

        return OpenAICompatibleProvider(
            base_url=settings.openai_base_url,
            model=settings.openai_model,
            dim=settings.openai_dim,
            api_key=settings.openai_api_key.get_secret_value(),
            batch_size=settings.embedding_batch_size,
            timeout=settings.openai_timeout_seconds,
            max_retries=settings.openai_max_retries,
        )
    from documents.embeddings.fake import FakeHashProvider

    return FakeHashProvider()
