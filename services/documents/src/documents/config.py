"""Settings of the documents service: shared ``BATON_*`` ones plus ``BATON_DOCUMENTS_*``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import BaseServiceSettings

__all__ = ["MAX_UPLOAD_DEFAULT", "Settings"]

MAX_UPLOAD_DEFAULT = 25 * 1024 * 1024


def _env(name: str, default: Any, description: str, **kwargs: Any) -> Any:
    """A field read from ``BATON_DOCUMENTS_<NAME>`` only (code may still pass it by field name)."""
    return Field(
        default, validation_alias=f"BATON_DOCUMENTS_{name.upper()}", description=description, **kwargs
    )


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="BATON_", extra="ignore", env_file=None, populate_by_name=True
    )

    service_name: str = "documents"
    # The app-wide body cap must leave room for the largest upload; the upload reader enforces the real limit.
    max_body_bytes: int = Field(default=MAX_UPLOAD_DEFAULT + 1_048_576, ge=1024)

    max_upload_bytes: int = _env(
        "max_upload_bytes",
        MAX_UPLOAD_DEFAULT,
        "Largest accepted upload (bytes); refused with 413 while streaming",
        ge=1,
        le=1024 * 1024 * 1024,
    )
    # An upload to a project this service has not heard of yet waits this long for its event (then 404).
    project_wait_seconds: float = _env(
        "project_wait_seconds",
        2.0,
        "How long an upload waits for a project this service has not heard of yet (then 404)",
        ge=0,
        le=30,
    )

    embedding_provider: Literal["local", "openai", "fake"] = _env(
        "embedding_provider",
        "local",
        "local (all-MiniLM-L6-v2 int8 ONNX, CPU), openai (any OpenAI-compatible /v1/embeddings) or fake (tests only)",
    )
    embedding_batch_size: int = _env(
        "embedding_batch_size", 32, "Texts per embedding batch (local) or per request (openai)", ge=1, le=1024
    )
    # onnxruntime threads: one on the request path (query embedding), more in the worker.
    embedding_threads_api: int = _env(
        "embedding_threads_api", 1, "onnxruntime threads in the API process (query embedding)", ge=1, le=64
    )
    embedding_threads_worker: int = _env(
        "embedding_threads_worker", 2, "onnxruntime threads in the worker (document embedding)", ge=1, le=64
    )
    openai_base_url: str = _env(
        "openai_base_url",
        "http://127.0.0.1:11434/v1",
        "Base URL of the OpenAI-compatible embeddings endpoint (…/v1)",
    )
    openai_api_key: SecretStr = _env(
        "openai_api_key", SecretStr(""), "Bearer key for that endpoint (empty: none)"
    )
    openai_model: str = _env("openai_model", "all-minilm", "Model name sent to that endpoint")
    openai_dim: int = _env(
        "openai_dim",
        384,
        "Vector dimension that model returns (must be 384 for the current index)",
        ge=1,
        le=16000,
    )
    openai_timeout_seconds: float = _env(
        "openai_timeout_seconds", 30.0, "Timeout of one embeddings request", gt=0, le=600
    )
    openai_max_retries: int = _env(
        "openai_max_retries", 4, "Retries (exponential backoff) on 429, 5xx and network errors", ge=0, le=20
    )

    # Search
    hnsw_ef_search: int = _env(
        "hnsw_ef_search",
        100,
        "hnsw.ef_search for searches (candidate list size; recall vs latency)",
        ge=10,
        le=1000,
    )

    processing_ack_wait_seconds: float = _env(
        "processing_ack_wait_seconds",
        60.0,
        "How long a version whose worker died waits before another worker processes it (a live worker "
        "keeps its version in progress however long it takes)",
        ge=5,
        le=3600,
    )

    # Processing limits: a hostile file fails with a reason instead of taking the worker down.
    pdf_timeout_seconds: float = _env(
        "pdf_timeout_seconds", 60.0, "Wall-clock limit for reading one PDF", gt=0, le=3600
    )
    pdf_memory_bytes: int = _env(
        "pdf_memory_bytes",
        1024 * 1024 * 1024,
        "Address-space limit of the PDF reading child process",
        ge=64 * 1024 * 1024,
    )
    pdf_max_pages: int = _env(
        "pdf_max_pages", 2000, "PDFs with more pages fail with pdf_too_many_pages", ge=1
    )
    max_extracted_chars: int = _env(
        "max_extracted_chars", 20_000_000, "Documents with more text fail (split them)", ge=1000
    )
    max_chunks_per_document: int = _env(
        "max_chunks_per_document",
        3000,
        "Documents that split into more chunks fail with too_many_chunks",
        ge=1,
    )

    # Worker
    reindex_poll_seconds: float = _env(
        "reindex_poll_seconds", 5.0, "How often the worker looks for a queued reindex job", gt=0, le=3600
    )
    reindex_batch_size: int = _env(
        "reindex_batch_size", 128, "Chunks embedded per reindex batch (one transaction each)", ge=1, le=10_000
    )

    @model_validator(mode="after")
    def _fake_is_for_tests(self) -> Settings:
        if self.embedding_provider == "fake" and self.environment == "production":
            raise ValueError("BATON_DOCUMENTS_EMBEDDING_PROVIDER=fake is for tests only")
        return self
