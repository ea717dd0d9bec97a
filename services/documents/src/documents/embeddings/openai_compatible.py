"""Any OpenAI-compatible ``POST /v1/embeddings`` endpoint (OpenAI, TEI, Ollama, vLLM, ...).

Inputs go in batches; each request has a timeout; 429, 5xx and network errors are retried with
exponential backoff (honouring ``Retry-After``); answers are checked (count, order, dimension) and
L2-normalised so cosine distance means the same for every provider.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from documents.embeddings.base import EmbeddingError, Vectors, l2_normalize

__all__ = ["OpenAICompatibleProvider"]

_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class OpenAICompatibleProvider:
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        dim: int,
        api_key: str = "",
        batch_size: int = 64,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", headers=headers, timeout=timeout, transport=transport
        )
        self._model = model
        self._dim = dim
        self._batch_size = batch_size
        self._max_retries = max_retries
        self._backoff_base = backoff_base

    @property
    def model_id(self) -> str:
        return f"openai:{self._model}"

    @property
    def dim(self) -> int:
        return self._dim

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            out[start : start + len(batch)] = await self._embed_batch(batch)
        return out

    async def embed_query(self, text: str) -> Vectors:
        return await self._embed_batch([text])

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _embed_batch(self, batch: list[str]) -> Vectors:
        payload = {"model": self._model, "input": batch}
        attempt = 0
        while True:
            try:
                response = await self._client.post("embeddings", json=payload)
            except httpx.TransportError as exc:  # connect/read timeouts, refused, reset
                if attempt >= self._max_retries:
                    raise EmbeddingError(f"embedding endpoint unreachable: {exc!r}", transient=True) from exc
                await asyncio.sleep(self._delay(attempt, None))
                attempt += 1
                continue
            if response.status_code in _RETRY_STATUS and attempt < self._max_retries:
                await asyncio.sleep(self._delay(attempt, response.headers.get("retry-after")))
                attempt += 1
                continue
            if response.status_code != 200:
                raise EmbeddingError(
                    f"embedding endpoint answered {response.status_code}",
                    transient=response.status_code in _RETRY_STATUS,
                )
            return self._parse(response, len(batch))

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None and retry_after.isdigit():
            return min(float(retry_after), 60.0)
        return float(self._backoff_base * (2**attempt) * (0.5 + random.random() / 2))

    def _parse(self, response: httpx.Response, expected: int) -> Vectors:
        try:
            body: Any = response.json()
            items = sorted(body["data"], key=lambda item: int(item["index"]))
            matrix = np.asarray([item["embedding"] for item in items], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(f"embedding endpoint sent a malformed answer: {exc!r}") from exc
        if matrix.shape != (expected, self._dim):
            raise EmbeddingError(
                f"embedding endpoint sent shape {matrix.shape}, expected ({expected}, {self._dim})"
            )
        if not np.isfinite(matrix).all():
            raise EmbeddingError("embedding endpoint sent non-finite numbers")
        return l2_normalize(matrix)
