"""The public Python API: ``RAG.open("index").ask("...")``."""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from . import addresses, dates
from .answer import candidates, prompts
from .answer import pipeline as ans
from .answer.compose import abstained
from .answer.llm import ChatModel, endpoint_hosts, make_llm
from .index import embedding, writer
from .index.layout import current_name
from .index.reader import Index
from .index.retrieval import HybridRetriever
from .ingest.uploads import UploadLine, Uploads
from .settings import Settings
from .types import Answer, Document, Passage, RagError, Timings

if TYPE_CHECKING:
    from .ingest.feeds import FetchReport

# Endpoint clients kept, the most recently used: each holds a connection pool, and questions
# beyond settings.max_pending wait for a slot anyway, so more clients than this sit idle.
ENDPOINT_CLIENTS = 32
# what one endpoint client is built for: one URL, model, key, set of timeouts, and who gave the URL
ENDPOINT_FIELDS = (
    "openai_base_url",
    "openai_model",
    "openai_api_key",
    "openai_timeout_s",
    "openai_connect_timeout_s",
    "openai_total_s",
    "endpoint_visitor",
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_UNDECODED = re.compile(r"[\ud800-\udfff]")


class RAG:
    """Question answering with verified citations over one index folder."""

    def __init__(self, idx: Index, settings: Settings):
        self.index = idx
        self.settings = settings
        embedding.configure(settings)  # the questions' embedder keeps its copy where these settings say
        self.retriever = HybridRetriever(idx, settings)
        self._llms: dict[tuple, ChatModel | None] = {}
        # endpoint clients, one per visitor's URL and key: a long-running server meets a new key per
        # visitor, so only the most recent are kept (local models stay in _llms: the operator names them)
        self._endpoints = functools.lru_cache(maxsize=ENDPOINT_CLIENTS)(self._endpoint)
        self._llm_override: ChatModel | None = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(settings.max_pending)

    @classmethod
    def open(cls, index_dir: str | Path | None = None, settings: Settings | None = None, **overrides: object) -> RAG:
        """Open an index folder (default ``settings.index_dir``); fields of Settings may be overridden."""
        settings = (settings or Settings.from_env()).with_(**overrides)
        return cls(Index.open(index_dir or settings.index_dir), settings)

    @classmethod
    def build(
        cls,
        index_dir: str | Path,
        paths: Iterable[str | Path],
        settings: Settings | None = None,
        fields: str | Mapping[str, str] | None = None,
        **overrides: object,
    ) -> RAG:
        """Index the articles under ``paths`` into ``index_dir`` (incrementally) and open it.

        ``fields`` maps the keys of record files (``{"text": "body"}`` or ``"text=body,date=published_at"``).
        """
        settings = (settings or Settings.from_env()).with_(**overrides)
        report = writer.build(index_dir, paths, settings, fields=fields)
        if report.errors and not report.n_chunks:
            raise RagError("; ".join(report.errors))
        return cls.open(index_dir, settings)

    @classmethod
    def add_feeds(cls, index_dir: str | Path, feeds: Iterable[str], settings: Settings | None = None, **overrides: object) -> FetchReport:
        """Fetch the pages of the feeds' entries not indexed yet and index them; the feeds are followed from then on.

        Each page or feed that fails is one line in ``report.errors``; the rest goes on and nothing
        indexed is lost. ``report.index`` is the index update (``added``, ``embedded_chunks``).
        """
        from .ingest import feeds as fetching

        return fetching.add(index_dir, (settings or Settings.from_env()).with_(**overrides), feeds=list(feeds))

    @classmethod
    def add_urls(cls, index_dir: str | Path, urls: Iterable[str], settings: Settings | None = None, **overrides: object) -> FetchReport:
        """Fetch web pages and index them (a page fetched before is re-indexed only if its text changed)."""
        from .ingest import feeds as fetching

        return fetching.add(index_dir, (settings or Settings.from_env()).with_(**overrides), urls=list(urls))

    @classmethod
    def poll_feeds(cls, index_dir: str | Path, settings: Settings | None = None, **overrides: object) -> FetchReport:
        """Poll the feeds the index follows, index their new entries, and sync the recorded sources (``rag index``)."""
        from .ingest import feeds as fetching

        return fetching.sync(index_dir, (settings or Settings.from_env()).with_(**overrides))

    def refresh(self) -> bool:
        """Re-open the index if a writer has published a new generation; True when it changed."""
        if current_name(self.index.root) == self.index.gen.name:
            return False
        with self._lock:
            self.index = Index.open(self.index.root)
            self.retriever = HybridRetriever(self.index, self.settings)
        return True

    def add_files(self, paths: Iterable[str | Path], folder: str | Path | None = None) -> list[UploadLine]:
        """Check article files, save them into the corpus folder (``folder`` or ``settings.corpus_dir``) and index them."""
        return Uploads(self, folder).add(paths)

    def articles(self, sort: str = "date", since: str | None = "", until: str | None = "", outlet: str | None = "") -> tuple[list[Document], int]:
        """The indexed articles sorted by date, outlet or title, within a date range and outlet; and how many undated were left out."""
        self.refresh()
        return dates.select_documents(self.index.docs.values(), sort, dates.parse_range(since or None, until or None), outlet or "")

    def check_endpoint(self, url: str) -> None:
        """Refuse an OpenAI-compatible endpoint a visitor names when it resolves to an address the operator did not allow."""
        addresses.check_public(url, addresses.allowed_origins(self.settings.fetch_allow_private), "the endpoint")

    # ------------------------------------------------------------ questions
    def check_question(self, question: str) -> str:
        """The question cleaned of control characters; raises RagError if empty or too long."""
        if not isinstance(question, str):
            raise RagError("the question must be text")
        bad = _UNDECODED.search(question)
        if bad:  # bytes that were not UTF-8 reach Python as lone surrogates (surrogateescape)
            raise RagError(f"the question is not valid UTF-8 text (at character {bad.start() + 1}): retype it or set the terminal to UTF-8")
        q = _CONTROL.sub(" ", question).strip()
        if not q:
            raise RagError("the question is empty: type a question about the articles")
        if len(q) > self.settings.max_question_chars:
            raise RagError(f"the question is {len(q):,} characters long; the limit is {self.settings.max_question_chars:,}")
        return q

    def retrieve(
        self, question: str, top_k: int | None = None, as_of: str | None = None, since: str | date | None = None, until: str | date | None = None
    ) -> list[Passage]:
        """The top passages for a question, duplicates folded, numbered from 1.

        ``as_of`` (YYYY-MM-DD): the date the question is asked as of; articles published in the
        days before it rank higher, later ones lower. ``since``/``until`` (YYYY-MM-DD, YYYY-MM or
        YYYY, the whole period): only articles published in that range, none undated.
        """
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise RagError(f"top_k is {top_k!r}: it must be a whole number of at least 1")
        question = self.check_question(question)
        retriever = self.retriever
        plan = dates.plan(question, as_of, dates.parse_range(since, until), retriever.article_dates)
        if plan.empty:
            return []
        return retriever.retrieve(question, top_k, as_of=plan.as_of, dates=plan.range, newest_first=plan.newest_first)

    def use_llm(self, model: ChatModel | None) -> None:
        """Answer every question with ``model`` instead of the backend settings name (None: back to settings).

        How evaluation records a run's drafts and replays them (:mod:`rag.answer.drafts`).
        """
        self._llm_override = model

    def llm(self, settings: Settings) -> ChatModel | None:
        """The backend ``settings`` name, made once per process and kept (None: the extractive backend)."""
        if self._llm_override is not None:
            return self._llm_override
        if settings.llm == "openai":
            return self._endpoints(tuple(getattr(settings, f) for f in ENDPOINT_FIELDS))
        # an endpoint client is built for one key and one set of timeouts
        key = (
            settings.llm,
            settings.local_model,
            settings.openai_base_url,
            settings.openai_model,
            settings.llm_threads,
            settings.openai_api_key,
            settings.openai_timeout_s,
            settings.openai_connect_timeout_s,
        )
        with self._lock:
            if key not in self._llms:
                self._llms[key] = make_llm(settings)
            return self._llms[key]

    def _endpoint(self, values: tuple) -> ChatModel | None:
        """A client for one OpenAI-compatible endpoint, key, set of timeouts and trust (the ENDPOINT_FIELDS' values)."""
        settings = self.settings.with_(llm="openai", **dict(zip(ENDPOINT_FIELDS, values)))
        # a URL a visitor typed may reach on a private network only what the operator's own settings name
        return make_llm(settings, endpoint_hosts(self.settings if settings.endpoint_visitor else settings))

    def warm(self, **overrides: object) -> float:
        """Load the embedder and the answering model now; returns seconds spent loading the model."""
        settings = self.settings.with_(**overrides)
        llm = self.llm(settings) if settings.llm == "local" else None
        if hasattr(llm, "model"):  # a local model (recorded or not)
            llm.model()  # first: a question being retrieved meanwhile loads the embedder itself
            if settings.rank_candidates:
                candidates.warm()
        embedding.warm()
        return llm.load_s if llm is not None else 0.0

    def ask(
        self, question: str, as_of: str | None = None, since: str | date | None = None, until: str | date | None = None, **overrides: object
    ) -> Answer:
        """Answer a question; overrides are Settings fields such as ``llm="extractive"`` or ``top_k=8``.

        ``as_of`` (YYYY-MM-DD) dates the question, for "this week"-style news questions.
        ``since``/``until`` (YYYY-MM-DD, YYYY-MM or YYYY, each the whole period) limit the answer to
        articles published in that range; undated ones are left out, and ``Answer.notes`` says how many.
        """
        result = None
        for item in self.stream(question, as_of=as_of, since=since, until=until, **overrides):
            result = item
        assert isinstance(result, Answer)
        return result

    def stream(
        self, question: str, as_of: str | None = None, since: str | date | None = None, until: str | date | None = None, **overrides: object
    ) -> Iterator[str | Answer]:
        """Yield answer text as it is generated, then the verified :class:`Answer` last.

        At most ``max_pending`` questions are in flight at once; one that finds no free slot
        within ``busy_wait_s`` is refused with a RagError saying the system is busy.
        """
        settings = self.settings.with_(**overrides)
        question = self.check_question(question)
        explicit = dates.parse_range(since, until)  # a bad date is refused before the question waits for a slot
        asked = dates.question_date(as_of)
        as_of = asked.isoformat() if asked else None
        if not self._slots.acquire(timeout=settings.busy_wait_s):
            raise RagError(f"busy: {self.settings.max_pending} questions are being answered; try again in a moment")
        try:
            with embedding.answering():  # an upload being indexed in this process waits meanwhile
                yield from self._stream(question, settings, as_of, explicit)
        finally:
            self._slots.release()

    def _stream(self, question: str, settings: Settings, as_of: str | None = None, explicit: dates.DateRange | None = None) -> Iterator[str | Answer]:
        llm = self.llm(settings)  # raises on an unknown backend before any work
        # one generation for the whole question: a writer publishing meanwhile (an upload) cannot
        # pull the article text from under the quotes cut from it
        retriever = self.retriever
        timings = Timings()
        t0 = time.perf_counter()
        plan = dates.plan(question, as_of, explicit, retriever.article_dates)
        if plan.empty:  # nothing to retrieve from: say so, and spend no model time
            timings.retrieval_s = timings.total_s = time.perf_counter() - t0
            yield replace(abstained(question, [], timings, settings.llm, plan.empty, "date range"), notes=plan.notes)
            return
        # a passage without a stored vector is embedded with the evidence sentences (rag.answer.evidence), not in retrieval
        how = dict(as_of=plan.as_of, dates=plan.range, newest_first=plan.newest_first, embed_unstored=False)
        timeline = ans.is_timeline(question)
        if timeline:  # a question over years needs every article it reaches, not the five best passages
            passages = retriever.retrieve_across_articles(question, settings.top_k, **how)
        else:
            passages = retriever.retrieve(question, settings.top_k, **how)
        timings.retrieval_s = time.perf_counter() - t0
        # the answer step sees the user's as_of: the "latest" rule's anchor chooses the passages, it
        # does not date the question for the staleness check
        yield from ans.run(question, passages, retriever.index.raw, llm, settings, timings, t0, as_of, timeline=timeline, notes=plan.notes)

    def rewrite(self, history: list[tuple[str, str]], follow_up: str, **overrides: object) -> str:
        """Turn a follow-up ("And in 2014?") into a standalone question using the conversation."""
        follow_up = self.check_question(follow_up)
        if not history:
            return follow_up
        settings = self.settings.with_(**overrides)
        llm = self.llm(settings)
        if llm is None:
            return _rewrite_without_llm(history, follow_up)
        out = "".join(llm.stream(prompts.rewrite_messages(history, follow_up), 60, 0.0)).strip()
        out = out.splitlines()[0].strip().strip('"') if out else ""
        return out if 5 <= len(out) <= self.settings.max_question_chars else _rewrite_without_llm(history, follow_up)


def _rewrite_without_llm(history: list[tuple[str, str]], follow_up: str) -> str:
    """Without a model: carry the previous question's subject into a short follow-up.

    "And what happened in 2014?" after "Why did ties between Iran and Hamas break down in 2012?"
    becomes "And what happened in 2014, regarding ties between Iran and Hamas?".
    """
    if len(follow_up.split()) > 8:
        return follow_up
    prev = history[-1][0]
    subject = re.sub(
        r"^\s*(why|what|which|who|whom|how|when|where)\b(\s+(did|does|do|is|are|was|were|has|have|had|many|much))?\s*", "", prev, flags=re.I
    )
    subject = re.sub(r"\s*\b(in|during|since|by)?\s*\b(1[89]|20)\d\d\b", "", subject)
    subject = re.sub(r"\s+(break|broke|happen|happened|start|end|change)\w*(\s+down|\s+up)?\s*$", "", subject.strip(" ?"), flags=re.I)
    return f"{follow_up.rstrip(' ?')}, regarding {subject}?" if subject else follow_up
