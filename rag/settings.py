"""Every tunable in one typed object, overridable from the environment and CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .types import RagError

_KINDS = {int: "whole number", float: "number", str: "text"}


def _cache_dir() -> Path:
    base = os.environ.get("RAG_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "newsrag")
    return Path(base)


def _parse(name: str, raw: str, default: object) -> object:
    """An environment value as the type of its default; RagError naming the variable when it is not one."""
    kind = type(default)
    try:
        return kind(raw.strip()) if kind is not str else raw
    except ValueError as exc:
        raise RagError(f"{name}={raw!r} is not a {_KINDS.get(kind, kind.__name__)} (default {default!r}): fix or unset it") from exc


@dataclass(frozen=True)
class Settings:
    """Defaults for indexing, retrieval and answering.

    Each field can be set from the environment as ``RAG_<FIELD NAME IN CAPITALS>``
    (for example ``RAG_TOP_K=8``); CLI flags override the environment.
    """

    index_dir: str = "index"
    corpus_dir: str = ""  # where added and uploaded articles are saved ("": the first folder the index was built from)
    cache_dir: str = field(default_factory=lambda: str(_cache_dir()))

    # chunking: sentences are packed up to this many characters (about 130 tokens)
    chunk_chars: int = 600
    chunk_overlap_sentences: int = 1
    dense_chunks_per_article: int = 10  # passages per article given a dense vector (0 = all); BM25 indexes every one

    # retrieval
    top_k: int = 5
    candidates: int = 30  # per retriever, before fusion
    rrf_k: int = 60
    dense_weight: float = 1.0  # weight of the dense ranking in the fusion; BM25's is 1
    # with a question date (as_of): bonus for an article published that day, in units of a rank-1 fusion score
    recency_weight: float = 2.0
    recency_half_life_days: float = 14.0  # the bonus halves with every this many days of age
    article_support: float = 0.4  # ranking articles: each further passage of an article adds this share (then its square)
    dup_threshold: float = 0.6  # word 5-gram containment that counts as the same passage

    # embedding: auto = bf16 where the CPU multiplies bfloat16 natively, else fp32 | fp32 | bf16 (a change re-embeds)
    embed_precision: str = "auto"

    # where retrieval searches: faiss (the index's own vectors and BM25) | qdrant (a collection mirroring the index)
    store: str = "faiss"
    store_url: str = ""  # a Qdrant server or cluster ("": embedded, under the index folder in qdrant/)
    # how the faiss store searches vectors: auto (exact below 100k vectors, IVF lists from there on) | flat (exact) | ivf
    vector_index: str = "auto"
    ivf_nprobe: int = 32  # IVF lists searched per query (of 4 * sqrt(n)); more: better recall, slower

    # indexing on a Ray cluster (rag.distributed): "" = in this process | auto (the cluster this machine
    # belongs to, else a new local one) | a cluster's address; each embedding actor takes these resources
    ray: str = ""
    ray_actor_cpus: int = 1
    ray_actor_gpus: float = 0.0

    # answering
    llm: str = "local"  # local | openai | extractive
    max_context_sentences: int = 4
    max_answer_tokens: int = 160
    temperature: float = 0.0
    llm_threads: int = 0  # 0 = all cores
    llm_ctx: int = 4096
    local_model: str = "qwen"  # qwen (default) | smollm (small test model) | a .gguf path
    # the local model also scores the candidate answers the sentences it read offer (rag.candidates), recording how much
    # of their probability its own answer holds, as the reply and as the choice it picks. Off by default: on the dev
    # weeks neither chose better than the draft nor made the fitted decision better on held-out weeks (README), and
    # it costs ~1 s a question; on, a recorded run keeps these signals for a later refit
    rank_candidates: bool = False
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_api_key: str = "not-needed"
    openai_model: str = "local-model"
    openai_timeout_s: float = 60.0  # longest wait for each part of the endpoint's reply
    openai_connect_timeout_s: float = 10.0
    ui_endpoints: str = ""  # comma-separated base URLs the UI may send the operator's API key to, besides openai_base_url

    # abstention and verification
    min_relevance: float = 0.25  # best dense cosine below this: the sources are off-topic
    support_threshold: float = 0.5  # attribution score a quote needs to be considered for a sentence
    # an answer that passed every check stands when the fitted chance that it is right (rag.decision, 0..1)
    # reaches this; below 0 (the default): the threshold fitted with it (rag/decision.json)
    min_answer_score: float = -1.0

    # limits on input
    max_question_chars: int = 2000
    max_file_bytes: int = 5_000_000
    max_files_per_add: int = 20_000
    max_pending: int = 16  # questions in flight per process; more are refused as busy
    busy_wait_s: float = 30.0  # how long a question waits for a free slot before it is refused

    # rag serve (rag.serve): one answer at a time, this many more waiting; past that, 429 with Retry-After
    serve_queue: int = 4
    serve_max_body_bytes: int = 256_000  # a request body past this is refused (413) before it is parsed
    # bearer token for rag serve's write endpoints (POST/DELETE /v1/articles); "": they are off
    serve_token: str = ""
    # rag ask and rag serve together (rag.forward): a one-shot rag ask sends its question to a rag serve running for
    # the same index when that answers as this process would: auto | off (always answer in this process)
    ask_forward: str = "auto"
    serve_read_token: str = ""  # bearer token rag serve's other endpoints need too (all but /healthz); "": reads are open

    # fetching feeds and pages (rag index add --feed/--url); a page is refused past max_file_bytes
    fetch_timeout_s: float = 10.0  # longest wait to connect, or for the next part of a reply
    fetch_total_s: float = 60.0  # longest one page or feed may take in all (a server can drip bytes forever)
    fetch_max_redirects: int = 5
    fetch_workers: int = 4  # pages fetched at once
    # hosts (``host`` or ``host:port``, comma-separated) on loopback or a private network that a UI
    # visitor's endpoint, a feed entry's link or a redirect may reach (rag.addresses); the operator's
    # own endpoint and the feeds and pages the operator names are allowed without it
    fetch_allow_private: str = ""

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Defaults, then ``RAG_*`` environment variables, then explicit overrides (None is ignored).

        Read by hand rather than with pydantic-settings: importing it costs ~0.17 s of every one-shot
        ``rag ask`` (the answer path imports no pydantic), and its ValidationError spans lines where
        a mistyped variable must be one line naming it (:func:`_parse`); this loop is all it would do.
        """
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get(f"RAG_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _parse(f"RAG_{f.name.upper()}", raw, getattr(cls(), f.name))
        if "openai_base_url" not in values and os.environ.get("OPENAI_BASE_URL"):
            values["openai_base_url"] = os.environ["OPENAI_BASE_URL"]
        if "openai_api_key" not in values and os.environ.get("OPENAI_API_KEY"):
            values["openai_api_key"] = os.environ["OPENAI_API_KEY"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        # an API caller's top_k="3" would fail deep in retrieval as a TypeError: name it here
        for f in fields(self):
            value, default = getattr(self, f.name), getattr(Settings, f.name, None)
            kind = type(default) if default is not None else str  # cache_dir: a default_factory, a str
            if isinstance(value, bool):
                ok = kind is bool
            elif kind is float:
                ok = isinstance(value, int | float)
            elif kind is str:
                ok = isinstance(value, str | os.PathLike)  # a folder may be given as a Path
            else:
                ok = isinstance(value, kind)
            if not ok:
                raise RagError(f"{f.name} is {value!r}: it must be a {_KINDS.get(kind, kind.__name__)}")
        if self.top_k < 1:
            raise RagError(f"top_k is {self.top_k}: it must be a whole number of at least 1 (RAG_TOP_K, --top-k)")

    def with_(self, **overrides: object) -> Settings:
        """A copy with the given fields changed (None leaves a field as it is)."""
        unknown = sorted(set(overrides) - {f.name for f in fields(self)})
        if unknown:
            raise RagError(f"{unknown[0]} is no setting: see rag.settings.Settings for the names")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
