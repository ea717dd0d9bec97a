"""The embedding provider contract: every provider turns texts into L2-normalised float32 vectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["EmbeddingError", "EmbeddingProvider", "Vectors", "l2_normalize"]

Vectors = npt.NDArray[np.float32]


class EmbeddingError(Exception):
    """The provider could not embed (model file missing or altered, endpoint down, bad answer).

    ``transient`` tells a caller whether trying again later may succeed.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@runtime_checkable
class EmbeddingProvider(Protocol):
    """What search and processing need from a model.

    ``model_id`` is stored on every vector row, so vectors of two models are never compared; ``dim`` is
    the vector length. Both methods return an ``(n, dim)`` float32 array of unit vectors (row i for text i).
    """

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    async def embed_documents(self, texts: Sequence[str]) -> Vectors: ...

    async def embed_query(self, text: str) -> Vectors: ...

    async def aclose(self) -> None: ...


def l2_normalize(matrix: npt.NDArray[np.floating]) -> Vectors:
    """Unit rows (a zero row stays zero), as float32: cosine distance then equals 1 - dot product."""
    out = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    result: Vectors = np.divide(out, np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return result
