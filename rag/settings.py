"""Every tunable in one typed object, in groups, checked when it is built and overridable from the environment and CLI flags.

The fields stay flat (``settings.top_k``, ``RAG_TOP_K``, ``RAG.open(top_k=8)``): those names are
what users and scripts set, so the groups are declared beside each field (``group``) rather than
nested, and :func:`groups` lists them for the docs and the tests.
"""

from __future__ import annotations

import os
from dataclasses import Field, dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Literal, get_args, get_origin, get_type_hints

from .types import RagError

_KINDS = {int: "a whole number", float: "a number", str: "text", bool: "true or false (1 or 0)"}
GROUPS = ("paths", "chunking", "retrieval", "store", "cluster", "model", "checks", "limits", "serve", "fetching")


def _cache_dir() -> Path:
    base = os.environ.get("RAG_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "newsrag")
    return Path(base)


def _setting(default: object, group: str, low: float | None = None, high: float | None = None, above: float | None = None) -> object:
    """A field with its group and the range of values it accepts (``above``: strictly greater than)."""
    assert group in GROUPS, group
    return field(default=default, metadata={"group": group, "low": low, "high": high, "above": above})


def _parse(name: str, raw: str, default: object) -> object:
    """An environment value as the type of its default; RagError naming the variable when it is not one."""
    kind = type(default)
    try:
        if kind is bool:
            word = raw.strip().lower()
            if word not in ("1", "0", "true", "false", "yes", "no", "on", "off", ""):
                raise ValueError(word)
            return word in ("1", "true", "yes", "on")
        return kind(raw.strip()) if kind is not str else raw
    except ValueError as exc:
        raise RagError(f"{name}={raw!r} is not {_KINDS.get(kind, kind.__name__)} (default {default!r}): fix or unset it") from exc


@dataclass(frozen=True)
class Settings:
    """Defaults for indexing, retrieval and answering.

    Each field can be set from the environment as ``RAG_<FIELD NAME IN CAPITALS>``
    (for example ``RAG_TOP_K=8``); CLI flags override the environment. A value of the wrong type,
    outside its range or not among its choices is refused when the settings are built, in one line
    naming the variable.
    """

    index_dir: str = _setting("index", "paths")
    corpus_dir: str = _setting("", "paths")  # where added and uploaded articles are saved ("": the first folder the index was built from)
    cache_dir: str = field(default_factory=lambda: str(_cache_dir()), metadata={"group": "paths"})

    # chunking: sentences are packed up to this many characters (about 130 tokens)
    chunk_chars: int = _setting(600, "chunking", low=1)
    chunk_overlap_sentences: int = _setting(1, "chunking", low=0)
    dense_chunks_per_article: int = _setting(10, "chunking", low=0)  # passages per article given a dense vector (0 = all); BM25 indexes every one

    # retrieval
    top_k: int = _setting(5, "retrieval", low=1)
    candidates: int = _setting(30, "retrieval", low=1)  # per retriever, before fusion
    rrf_k: int = _setting(60, "retrieval", low=0)
    dense_weight: float = _setting(1.0, "retrieval", low=0)  # weight of the dense ranking in the fusion; BM25's is 1
    # with a question date (as_of): bonus for an article published that day, in units of a rank-1 fusion score
    recency_weight: float = _setting(2.0, "retrieval", low=0)
    recency_half_life_days: float = _setting(14.0, "retrieval", above=0)  # the bonus halves with every this many days of age
    article_support: float = _setting(0.4, "retrieval", low=0, high=1)  # ranking articles: each further passage of an article adds this share (then its square)
    dup_threshold: float = _setting(0.6, "retrieval", low=0, high=1)  # word 5-gram containment that counts as the same passage
    # embedding: auto = bf16 where the CPU multiplies bfloat16 natively, else fp32 | fp32 | bf16 (a change re-embeds)
    embed_precision: Literal["auto", "fp32", "bf16"] = _setting("auto", "retrieval")

    # where retrieval searches: faiss (the index's own vectors and BM25) | milvus (Milvus's engine, embedded or a
    # cluster, mirroring the index) | qdrant (a Qdrant collection mirroring the index)
    store: Literal["faiss", "milvus", "qdrant"] = _setting("faiss", "store")
    # milvus: the embedded engine's .db file ("": <index>/milvus/milvus.db) or a cluster's http(s)://host:19530;
    # qdrant: a server or cluster ("": embedded, under the index folder in qdrant/)
    store_url: str = _setting("", "store")
    store_token: str = _setting("", "store")  # a Milvus cluster's token: "user:password" or an API key ("": none)
    store_timeout_s: float = _setting(30.0, "store", above=0)  # longest wait for the embedded engine to start, or for a cluster to answer
    # how the faiss store searches vectors: auto (exact below 100k vectors, IVF lists from there on) | flat (exact) | ivf
    vector_index: Literal["auto", "flat", "ivf"] = _setting("auto", "store")
    ivf_nprobe: int = _setting(32, "store", low=1)  # IVF lists searched per query (of 4 * sqrt(n)); more: better recall, slower

    # indexing on a Ray cluster (rag.index.distributed): "" = in this process | auto (the cluster this machine
    # belongs to, else a new local one) | a cluster's address; each embedding actor takes these resources
    ray: str = _setting("", "cluster")
    ray_actor_cpus: int = _setting(1, "cluster", low=0)
    ray_actor_gpus: float = _setting(0.0, "cluster", low=0)

    # answering
    llm: Literal["local", "openai", "extractive"] = _setting("local", "model")
    max_context_sentences: int = _setting(4, "model", low=1)
    max_answer_tokens: int = _setting(160, "model", low=1)
    temperature: float = _setting(0.0, "model", low=0, high=2)
    llm_threads: int = _setting(0, "model", low=0)  # 0 = all cores
    llm_ctx: int = _setting(4096, "model", low=256)
    local_model: str = _setting("qwen", "model")  # qwen (default) | smollm (small test model) | a .gguf path
    # the local model also scores the candidate answers the sentences it read offer (rag.answer.candidates), recording how much
    # of their probability its own answer holds, as the reply and as the choice it picks. Off by default: on the dev
    # weeks neither chose better than the draft nor made the fitted decision better on held-out weeks (README), and
    # it costs ~1 s a question; on, a recorded run keeps these signals for a later refit
    rank_candidates: bool = _setting(False, "model")
    openai_base_url: str = _setting("http://127.0.0.1:8000/v1", "model")
    openai_api_key: str = _setting("not-needed", "model")
    openai_model: str = _setting("local-model", "model")
    openai_timeout_s: float = _setting(60.0, "model", above=0)  # longest wait for each part of the endpoint's reply
    openai_connect_timeout_s: float = _setting(10.0, "model", above=0)
    openai_total_s: float = _setting(300.0, "model", above=0)  # longest one answer from the endpoint may take in all, headers included
    # the endpoint's URL was typed by a UI visitor, not set by the operator: it may reach a private network only
    # where the operator's settings do (their endpoints, fetch_allow_private), each request checked where it connects
    endpoint_visitor: bool = _setting(False, "model")
    ui_endpoints: str = _setting("", "model")  # comma-separated base URLs the UI may send the operator's API key to, besides openai_base_url

    # abstention and verification
    min_relevance: float = _setting(0.25, "checks", low=-1, high=1)  # best dense cosine below this: the sources are off-topic
    support_threshold: float = _setting(0.5, "checks", low=0, high=1)  # attribution score a quote needs to be considered for a sentence
    # an answer that passed every check stands when the fitted chance that it is right (rag.answer.decision, 0..1)
    # reaches this; below 0 (the default): the threshold fitted with it (rag/answer/decision.json)
    min_answer_score: float = _setting(-1.0, "checks", low=-1, high=1)

    # limits on input
    max_question_chars: int = _setting(2000, "limits", low=1)
    max_file_bytes: int = _setting(5_000_000, "limits", low=1)
    max_files_per_add: int = _setting(20_000, "limits", low=1)
    max_pending: int = _setting(16, "limits", low=1)  # questions in flight per process; more are refused as busy
    busy_wait_s: float = _setting(30.0, "limits", low=0)  # how long a question waits for a free slot before it is refused

    # rag serve (rag.serve): one answer at a time, this many more waiting; past that, 429 with Retry-After
    serve_queue: int = _setting(4, "serve", low=0)
    serve_max_body_bytes: int = _setting(256_000, "serve", low=1)  # a request body past this is refused (413) before it is parsed
    # bearer token for rag serve's write endpoints (POST/DELETE /v1/articles); "": they are off
    serve_token: str = _setting("", "serve")
    serve_read_token: str = _setting("", "serve")  # bearer token rag serve's other endpoints need too (all but /healthz); "": reads are open
    # a one-shot rag ask sends its question to a rag serve running for the same index when that answers as this
    # process would (rag.forward): auto | off (always answer in this process)
    ask_forward: Literal["auto", "off"] = _setting("auto", "serve")

    # fetching feeds and pages (rag index add --feed/--url); a page is refused past max_file_bytes
    fetch_timeout_s: float = _setting(10.0, "fetching", above=0)  # longest wait to connect, or for the next part of a reply
    fetch_total_s: float = _setting(60.0, "fetching", above=0)  # longest one page or feed may take in all (a server can drip bytes forever)
    fetch_max_redirects: int = _setting(5, "fetching", low=0)
    fetch_workers: int = _setting(4, "fetching", low=1)  # pages fetched at once
    fetch_per_host: int = _setting(2, "fetching", low=1)  # of those, from one host at once
    # hosts (``host`` or ``host:port``, comma-separated) on loopback or a private network that a UI
    # visitor's endpoint, a feed entry's link or a redirect may reach (rag.addresses); the operator's
    # own endpoint and the feeds and pages the operator names are allowed without it
    fetch_allow_private: str = _setting("", "fetching")

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
            values[f.name] = _parse(f"RAG_{f.name.upper()}", raw, _default(f))
        if "openai_base_url" not in values and os.environ.get("OPENAI_BASE_URL"):
            values["openai_base_url"] = os.environ["OPENAI_BASE_URL"]
        if "openai_api_key" not in values and os.environ.get("OPENAI_API_KEY"):
            values["openai_api_key"] = os.environ["OPENAI_API_KEY"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        # every value is checked here, so a bad one fails at open in one line, not deep in retrieval or the embedder
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _choices() and isinstance(value, str):  # "FLAT" or " ivf" from the environment is the choice meant
                value = value.strip().lower()
                object.__setattr__(self, f.name, value)
            _check(f, value)

    def with_(self, **overrides: object) -> Settings:
        """A copy with the given fields changed (None leaves a field as it is)."""
        unknown = sorted(set(overrides) - {f.name for f in fields(self)})
        if unknown:
            raise RagError(f"{unknown[0]} is no setting: see rag.settings.Settings for the names")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _default(f: Field) -> object:
    return f.default_factory() if f.default_factory is not field().default_factory else f.default  # type: ignore[misc]


@cache
def _choices() -> dict[str, tuple[str, ...]]:
    """The fields typed as a ``Literal``, with the values each accepts."""
    hints = get_type_hints(Settings)
    return {name: get_args(t) for name, t in hints.items() if get_origin(t) is Literal}


def _check(f: Field, value: object) -> None:
    """RagError naming the setting and its variable when ``value`` is of the wrong type, outside its range or not a choice."""
    default = _default(f)
    kind = type(default)
    if isinstance(value, bool):
        ok = kind is bool
    elif kind is float:
        ok = isinstance(value, int | float)
    elif kind is str:
        ok = isinstance(value, str | os.PathLike)  # a folder may be given as a Path
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise RagError(f"{_named(f, value)}: it must be {_KINDS.get(kind, kind.__name__)}")
    choices = _choices().get(f.name)
    if choices and value not in choices:
        raise RagError(f"{_named(f, value)}: it must be one of {', '.join(choices)}")
    low, high, above = (f.metadata.get(k) for k in ("low", "high", "above"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value != value or (low is not None and value < low) or (high is not None and value > high) or (above is not None and value <= above):
            bounds = [f"at least {low:g}" if low is not None else "", f"above {above:g}" if above is not None else "", f"at most {high:g}" if high is not None else ""]
            raise RagError(f"{_named(f, value)}: it must be {' and '.join(b for b in bounds if b)}")


def _named(f: Field, value: object) -> str:
    return f"{f.name} is {value!r} (RAG_{f.name.upper()})"


def groups() -> dict[str, list[str]]:
    """The settings by group, in declaration order."""
    out: dict[str, list[str]] = {g: [] for g in GROUPS}
    for f in fields(Settings):
        out[f.metadata["group"]].append(f.name)
    return out
