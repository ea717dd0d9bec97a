"""Deterministic hash vectors for unit tests: no model, same text → same vector, shared words → closer.

Never the default and refused in production (see ``Settings``): it knows nothing about meaning.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from documents.embeddings.base import Vectors, l2_normalize

__all__ = ["FakeHashProvider"]

_WORD = re.compile(r"\w+", re.UNICODE)


class FakeHashProvider:
    def __init__(self, dim: int = 384) -> None:
        self._dim = dim

    @property
    def model_id(self) -> str:
        return f"fake-hash-{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower()) or [""]
            for word in words:
                h = hashlib.blake2b(word.encode(), digest_size=8).digest()
                bucket = int.from_bytes(h[:4], "little") % self._dim
                out[row, bucket] += 1.0 if h[4] & 1 else -1.0
        return l2_normalize(out)

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return self.embed_sync(texts)

    async def embed_query(self, text: str) -> Vectors:
        return self.embed_sync([text])

    async def aclose(self) -> None:
        return None
