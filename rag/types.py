"""Typed objects that cross module boundaries."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Literal, TypedDict

from .text import sane_date, strip_tags

ABSTAIN_TEXT = "The sources do not answer this question."  # what an Answer says when it abstains

# Between two kept segments in ``Document.text``: the blank line a paragraph break reads as.
SEGMENT_SEPARATOR = "\n\n"


class RagError(Exception):
    """An error a user can act on; its message is one clear line."""


@dataclass
class Document:
    """A cleaned article. ``segments`` are the (start, end) spans of the raw file kept as content."""

    id: str  # the file's base name (a record: "<file name>#<record key>"): stable and what citations show
    path: str
    content_hash: str
    title: str | None = None
    outlet: str | None = None
    author: str | None = None
    date: str | None = None  # ISO 8601 (YYYY-MM-DD, or YYYY-MM / YYYY when that is all the text says)
    url: str | None = None
    segments: list[tuple[int, int]] = field(default_factory=list)
    text: str = ""  # the cleaned text: each segment as shown (display_text), joined by SEGMENT_SEPARATOR
    duplicate_of: str | None = None  # id of the earlier document this one repeats
    # metadata this copy of a report does not state, filled in from another copy: field -> that copy's id
    inherited: dict[str, str] = field(default_factory=dict)

    record: str | None = None  # a record of a .jsonl/.json/.csv file (``path``): its key there (id, url or text hash)
    html: bool = False  # a record whose text field is HTML (an .html file is known by its name)

    def __post_init__(self) -> None:
        # every article is made here, from a file or from an index already built: a date no one
        # can compute with (99999999999, 9999-12-31, "2022-13-45", planted text) makes it undated
        self.date = sane_date(self.date)

    def inherited_note(self, named: str | None = None) -> str:
        """Which metadata came from another copy, e.g. "date and outlet from the copy 003.txt" ("" when none)."""
        return inherited_note(self.inherited, named)

    @property
    def is_html(self) -> bool:
        """Its raw text is HTML: an .html/.htm file, or a record whose text is marked up."""
        return self.html or self.path.lower().endswith((".html", ".htm"))

    def clean_offset(self, raw_offset: int, raw: str | None = None) -> int | None:
        """Where offset ``raw_offset`` of the raw text lands in ``text``.

        An offset in dropped text before a segment lands at that segment's start; None past the
        last segment. An HTML segment reads shorter than its raw span (tags, entities), so an HTML
        document needs its ``raw`` text (``Index.raw``) to be mapped; without it, None.
        """
        if self.is_html and raw is None:
            return None
        pos = 0
        for s, e in self.segments:
            if raw_offset < s:
                return pos
            if raw_offset <= e:
                return pos + (_shown_length(raw[s:e], raw_offset - s) if self.is_html else raw_offset - s)
            pos += (len(display_text(raw[s:e], True)) if self.is_html else e - s) + len(SEGMENT_SEPARATOR)
        return None


# Elements a page never shows that may sit inside a paragraph: rag.ingest.cleaning keeps the text
# on both sides as one segment, so a segment can hold one, which reads as nothing (its content
# too) and as one space where spaces stood around it. Such an element is closed inside its
# segment and no sentence starts or ends inside it (rag.ingest.chunking); a prefix of a segment
# cut inside one (Document.clean_offset) reads as nothing from the element's start.
_UNSHOWN = re.compile(r"(\s?)<(script|style|noscript)(?=[\s/>])[^<>]*>.*?(?:</\2\s*>|\Z)(\s*)", re.I | re.S)


def unshown_elements(span: str) -> list[tuple[int, int]]:
    """(start, end) in an HTML span of each element in it that reads as nothing (a <script> kept inside a paragraph)."""
    if "<" not in span:
        return []
    return [(m.start(2) - 1, m.start(3)) for m in _UNSHOWN.finditer(span)]


def display_text(span: str, is_html: bool) -> str:
    """A kept span of raw text as a reader sees it: for HTML, inline tags dropped and entities decoded."""
    if is_html:
        if "<" in span:
            span = _UNSHOWN.sub(lambda m: m.group(1) or m.group(3), span)
        return html.unescape(strip_tags(span))
    return span


def _shown_length(span: str, cut: int) -> int:
    """How long ``span[:cut]`` of an HTML segment reads (as :func:`display_text` shows it)."""
    lt = span.rfind("<", 0, cut)
    gt = span.find(">", cut)
    if lt >= 0 and ">" not in span[lt:cut] and gt >= 0 and "<" not in span[lt + 1 : gt]:
        cut = lt  # inside a tag (``<[^<>]*>``, as strip_tags reads one): the tag shows nothing
    # an entity cut in two ("&am") would read longer than it shows: never past the segment's end
    return min(len(display_text(span[:cut], True)), len(display_text(span, True)))


def inherited_note(inherited: dict[str, str], named: str | None = None) -> str:
    """"date and outlet from the copy 003.txt" for ``{"date": "003.txt", "outlet": "003.txt"}``; "" for none.

    The copy ``named`` just before (in "same report as 003.txt") is "that copy".
    """
    by_source: dict[str, list[str]] = {}
    for name, source in inherited.items():
        by_source.setdefault(source, []).append(name)
    return "; ".join(
        f"{' and '.join(names)} from {'that copy' if source == named else f'the copy {source}'}" for source, names in by_source.items()
    )


class Message(TypedDict):
    """One chat message of a prompt.

    A TypedDict, not a dataclass: llama-cpp-python and the openai client both take a list of plain
    ``{"role": ..., "content": ...}`` dicts, so the prompts reach them as they are, with no conversion.
    """

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass
class Sentence:
    start: int  # character offsets into the raw file
    end: int
    text: str


@dataclass
class Chunk:
    id: str
    doc_id: str
    text: str
    start: int
    end: int
    sentences: list[Sentence]


@dataclass
class Passage:
    """A retrieved chunk, numbered for the prompt, with its article's metadata."""

    n: int
    chunk: Chunk
    score: float | None  # cosine to the question; None until the answer pipeline embeds it (retrieve's embed_unstored)
    doc: Document
    also_reported_by: list[str] = field(default_factory=list)  # ids of near-duplicate reports

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "source_file": self.doc.id,
            "title": self.doc.title,
            "outlet": self.doc.outlet,
            "date": self.doc.date,
            "text": self.chunk.text,
            "start": self.chunk.start,
            "end": self.chunk.end,
            "score": None if self.score is None else round(self.score, 4),
            "also_reported_by": self.also_reported_by,
            "inherited": self.doc.inherited,
        }


@dataclass
class SourceSentence:
    """One sentence of a retrieved passage, as the answer step sees it."""

    passage: Passage
    sentence: Sentence


@dataclass
class Citation:
    """A verified citation: ``open(path).read()[start:end] == quote``."""

    n: int
    source_file: str
    title: str | None
    outlet: str | None
    date: str | None
    quote: str
    start: int
    end: int
    path: str = ""
    passage: int = 0  # number of the passage the quote lies in
    score: float = 0.0  # how strongly the quote supports the sentence (0..1)
    inherited: dict[str, str] = field(default_factory=dict)  # title/outlet/date taken from another copy: field -> its id

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("path")
        d["score"] = round(self.score, 3)
        return d


@dataclass
class AnswerSentence:
    text: str
    citations: list[int]  # citation numbers
    supported: bool
    quoted: bool = False  # a source sentence quoted verbatim, not the model's own words


@dataclass
class Draft:
    """What the answering step wrote: the short answer line (if any), the sentences, and the model's confidence."""

    short: str | None
    body: str
    confidence: float | None = None  # geometric-mean probability of the short answer's tokens (local backend)
    first_p: float | None = None  # probability of the short answer's first token
    ranking: dict[str, float] = field(default_factory=dict)  # rag.answer.candidates' signals (share of the candidates' probability, margin)
    candidates: list[tuple[str, float, float]] = field(default_factory=list)  # the candidate answers scored, with their shares (rag.answer.candidates)


@dataclass
class Dropped:
    """A sentence of the draft that the answer leaves out, and why (the audit trail)."""

    text: str
    reason: str


@dataclass(eq=False)  # compared as the mapping it reads as (equal to the dict of the same stages)
class Timings(Mapping[str, float]):
    """Seconds each stage of one answer took; a stage that did not run is None.

    Stages are written as attributes; read, the object is the mapping of the stages that ran, in
    the order they run (``answer.timings["total_s"]``, ``"generation_s" in answer.timings``):
    that mapping is what the Python API, ``rag ask --json`` and the UI's detail have always shown.
    """

    retrieval_s: float | None = None  # from the question to the passages
    context_s: float | None = None  # the evidence sentences embedded and scored
    llm_load_s: float | None = None  # the local model loaded (once per process)
    first_token_s: float | None = None  # from the question to the first streamed text
    generation_s: float | None = None  # the model writing its draft
    ranking_s: float | None = None  # the model scoring the candidate answers (rag.answer.candidates)
    verify_s: float | None = None  # attribution of the draft's sentences
    total_s: float | None = None  # from the question to the verified answer
    index_open_s: float | None = None  # rag ask: opening the index (before the question's clock starts)

    def to_dict(self) -> dict[str, float]:
        """The stages that ran, in stage order."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    def __getitem__(self, stage: str) -> float:
        value = getattr(self, stage, None) if stage in self.__dataclass_fields__ else None
        if value is None:
            raise KeyError(stage)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


class Kind(StrEnum):
    """What shape an answer takes."""

    ANSWER = "answer"  # a direct answer
    TIMELINE = "timeline"  # dated entries in time order
    DIFFERING = "differing"  # reports that disagree, each attributed


@dataclass(frozen=True)
class Answer:
    """A verified answer or an abstention, built once by the answer pipeline and never changed after."""

    question: str
    text: str
    abstained: bool
    sentences: list[AnswerSentence]
    citations: list[Citation]
    passages: list[Passage]  # what was retrieved; on an abstention, related passages that do not answer
    timings: Timings  # a plain {stage: seconds} mapping is read the same way
    backend: str
    standalone_question: str | None = None
    short_answer: str | None = None  # the model's direct answer ("New York City"), when it gave one
    confidence: float | None = None  # the model's probability for its short answer (local backend), 0..1
    abstain_reason: str | None = None  # why the sources were judged not to answer
    abstain_check: str | None = None  # the check that withheld the answer, by name (rag.answer.CHECKS)
    dropped: list[Dropped] = field(default_factory=list)
    signals: dict[str, float] = field(default_factory=dict)  # the figures the answer/abstain decision used
    draft: str | None = None  # what the answering step wrote, before verification (the audit trail's start)
    kind: Kind = Kind.ANSWER
    notes: list[str] = field(default_factory=list)  # what the reader should know about how the sources were chosen (dates)
    # candidate answers the model scored (rag.answer.candidates): each with its share of the probability as the reply, and as the choice picked
    candidates: list[tuple[str, float, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The stable JSON shape of ``rag ask --json``."""
        return {
            "question": self.question,
            "answer": self.text,
            "abstained": self.abstained,
            "kind": self.kind,
            "short_answer": self.short_answer,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "abstain_reason": self.abstain_reason,
            "abstain_check": self.abstain_check,
            "notes": self.notes,
            "citations": [c.to_dict() for c in self.citations],
            "sentences": [asdict(s) for s in self.sentences],
            "dropped": [asdict(d) for d in self.dropped],
            "draft": self.draft,
            "passages": [p.to_dict() for p in self.passages],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "signals": {k: round(v, 4) for k, v in self.signals.items()},
            "candidates": [{"text": t, "reply_share": r, "choice_share": c} for t, r, c in self.candidates],
            "backend": self.backend,
        }
