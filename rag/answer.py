"""The answer pipeline: from retrieved passages to a verified Answer, one stage after another.

:func:`run` owns the order of the stages:

1. **gate** — no passage about the question, or a year no passage mentions: abstain before any model.
2. **evidence** — every sentence of the passages once, embedded once, scored for relevance (:class:`Evidence`).
3. **draft** — the model reads the few best sentences and writes ``Answer: <short answer>`` and one to
   three cited sentences (streamed); the extractive backend quotes the best sentences instead.
4. **verify** — each sentence is attributed to the source sentences that state it (:mod:`rag.verify`).
5. **decide** — the answer stands only when its lead sentence is supported, its quotes are about what
   the question asks, and the model was sure enough; otherwise the answer is "the sources do not
   answer", with the passages kept as related reading.
6. **compose** — the lead, then only sentences that add a fact the question asked for, each once;
   every sentence left out is recorded with the reason.

The model's ``[n]`` markers are only a hint: attribution decides what is cited, with the exact quote.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from . import embedding, prompts, verify
from .llm import TokenProb
from .settings import Settings
from .text import MONTHS, WEEKDAYS, YEAR, content_words, human_date, name_tokens, sentence_spans, years
from .types import Answer, AnswerSentence, Citation, Dropped, Passage, Sentence, SourceSentence

ABSTAIN_TEXT = "The sources do not answer this question."

_REFUSAL = re.compile(
    r"NOT IN SOURCES|(sources?|articles?|passages?|context)\s+(do(es)?\s+not|don't|doesn't)\s+(say|mention|contain|provide|answer|specify|include|state)|"
    r"(no|not enough|insufficient)\s+information|cannot (be )?(answer|determine)|can't (answer|determine)|not mentioned",
    re.I,
)
# a small model flags its own padding: "The source also mentions that ..."
_ASIDE = re.compile(
    r"^((the|this|another|one) (source|article|report|passage)s? (also|further|additionally)\b|(additionally|furthermore|in addition|also),? (the|this) (source|article|report))",
    re.I,
)
_MARKER = re.compile(r"\s*\[(\d+(?:\s*,\s*\d+)*)\]")
_SHORT = re.compile(r"^\s*\**\s*(short\s+)?answer\s*\**\s*:\s*", re.I)
_TIMELINE = re.compile(
    r"\bhow (did|has|have|had|do|does)\b.*\b(chang|evolv|develop|shift|progress|turn)\w*|\b(trace|timeline|chronolog\w*|over (the )?(years|time)|history of)\b|"
    r"\b(from|between|since)\s+(1[89]|20)\d\d\b.*\b(to|and|until|through)\s+(1[89]|20)\d\d\b",
    re.I,
)
_SINGLE_VALUE = re.compile(r"^\s*(who|whom|which|when|since when|where|what (year|date|day|month|country|city|paper|newspaper)|how (many|much))\b", re.I)
_WHEN = re.compile(r"^\s*(when|since when|what (year|date|day|month))\b", re.I)
_LAST_YEAR = re.compile(r"\blast year\b", re.I)
_EXPLAIN = re.compile(r"^\s*why\b|\b(reasons?|explain|what (led|caused|prompted))\b", re.I)

# Text that addresses the model rather than the reader: never news, never context or evidence.
_INJECTION = re.compile(
    r"\b(ignore|disregard|forget)\b.{0,40}\b(previous|prior|above|earlier|all)\b.{0,20}\b(instructions?|prompts?|rules|context)\b|"
    r"^\W*(system|assistant|user|developer)\s*(prompt|message)?\s*:|<\s*/?\s*(source|system|im_start|im_end)\b|<\|im_(start|end)\|>|"
    r"\byou are (now )?(an? )?(ai|assistant|language model|chatbot)\b|\b(reply|respond|answer) only with\b",
    re.I,
)


def is_injection(text: str) -> bool:
    """True for a sentence written to steer a model (prompt injection) rather than to inform."""
    return bool(_INJECTION.search(text))


def is_timeline(question: str) -> bool:
    """A question about change over time ("how did ... change", "trace", "from 2011 to 2017", "timeline")."""
    return bool(_TIMELINE.search(question))


def is_refusal(draft: str) -> bool:
    return bool(_REFUSAL.search(draft[:300]))


def source_sentences(passages: list[Passage]) -> list[SourceSentence]:
    """Every sentence of the passages once, in article order (overlapping chunks share sentences).

    Sentences that try to instruct the model are left out: the model never reads them and
    nothing can cite them.
    """
    seen: dict[tuple[str, int], SourceSentence] = {}
    for p in passages:
        for s in p.chunk.sentences:
            if not is_injection(s.text):
                seen.setdefault((p.doc.id, s.start), SourceSentence(p, s))
    return [seen[k] for k in sorted(seen)]


def number_articles(passages: list[Passage]) -> dict[str, int]:
    """Source numbers for the prompt: one per article, oldest first, so answers read in time order."""
    docs = {p.doc.id: p.doc for p in passages}
    order = sorted(docs.values(), key=lambda d: (d.date or "9999", d.id))
    return {d.id: k for k, d in enumerate(order, 1)}


# ---------------------------------------------------------------- evidence
@dataclass
class Evidence:
    """A question's source sentences, built once: their vectors, relevance to the question, and article numbers."""

    question: str
    passages: list[Passage]
    srcs: list[SourceSentence]
    qvec: np.ndarray
    vecs: np.ndarray  # one row per source sentence
    relevance: np.ndarray
    numbers: dict[str, int]  # article id -> its source number in the prompt
    common: frozenset[str]  # words the sources use in lower case: a capitalised one at a sentence start is no name

    @classmethod
    def build(cls, question: str, passages: list[Passage]) -> Evidence:
        srcs = source_sentences(passages)
        vecs = embedding.embed([question] + [s.sentence.text for s in srcs])
        qvec, svecs = vecs[0], vecs[1:]
        common = frozenset(w for s in srcs for w in re.findall(r"(?<![\w'’-])[a-z][a-z'’-]+", s.sentence.text))
        return cls(question, passages, srcs, qvec, svecs, _relevance(question, srcs, qvec, svecs), number_articles(passages), common)

    def next_in_article(self, i: int) -> int | None:
        j = i + 1
        return j if j < len(self.srcs) and self.srcs[j].passage.doc.id == self.srcs[i].passage.doc.id else None

    def context(self, limit: int) -> dict[str, list[Sentence]]:
        """The sentences most relevant to the question, grouped by article, in reading order.

        Sending sentences rather than whole chunks keeps the prompt short, which is what makes a
        CPU model answer quickly. The sentence after each of the best matches comes along, since
        reasons and quotes often sit in the sentence after the one that matches the question.
        """
        chosen: dict[tuple[str, int], Sentence] = {}

        def take(i: int) -> None:
            if len(chosen) < limit:  # overlapping chunks repeat sentences: key by article and offset
                chosen.setdefault((self.srcs[i].passage.doc.id, self.srcs[i].sentence.start), self.srcs[i].sentence)

        order = [int(i) for i in np.argsort(-self.relevance)]
        for i in order[: max(1, limit // 2)]:
            take(i)
            if (j := self.next_in_article(i)) is not None:
                take(j)
        for i in order:
            take(i)
        out: dict[str, list[Sentence]] = {}
        for (doc_id, _), sent in sorted(chosen.items()):
            out.setdefault(doc_id, []).append(sent)
        return out

    def render(self, context: dict[str, list[Sentence]]) -> list[str]:
        docs = {p.doc.id: p.doc for p in self.passages}
        return [
            prompts.source_block(self.numbers[d], docs[d].date, "\n".join(s.text for s in sents))
            for d, sents in sorted(context.items(), key=lambda x: self.numbers[x[0]])
        ]

    def messages(self, limit: int) -> list[dict]:
        """The chat messages the answering model gets: the selected sentences as numbered sources."""
        return prompts.answer_messages(self.render(self.context(limit)), self.question)

    def best(self, most: int = 3) -> list[int]:
        """The few source sentences that answer the question best, in time order.

        The best match, the sentence after it (reasons and quotes often follow the sentence that
        matches the question), and other sentences scoring close to the best.
        """
        if not self.srcs:
            return []
        score = self.relevance
        order = [int(i) for i in np.argsort(-score)]
        top = order[0]
        picked = [top]
        nxt = self.next_in_article(top)
        if nxt is not None and score[nxt] >= 0.4 * score[top]:
            picked.append(nxt)
        for i in order[1:]:
            if len(picked) >= most or score[i] < 0.85 * score[top]:
                break
            if i not in picked and all(self.srcs[i].sentence.text != self.srcs[j].sentence.text for j in picked):
                picked.append(i)
        return picked


def _relevance(question: str, srcs: list[SourceSentence], qvec: np.ndarray, svecs: np.ndarray) -> np.ndarray:
    """Cosine similarity plus word overlap, plus a bonus when a sentence names the year asked about."""
    q_words = content_words(question)
    asked = years(question)
    lex = np.array([len(q_words & content_words(s.sentence.text)) / max(len(q_words), 1) for s in srcs])
    year = np.array([0.15 if asked & years(s.sentence.text) else 0.0 for s in srcs])
    return (svecs @ qvec + 0.5 * lex + year) if len(srcs) else np.zeros(0)


# ---------------------------------------------------------------- gate
def off_topic(question: str, passages: list[Passage], min_relevance: float) -> str | None:
    """Why the passages cannot answer the question, or None when they may."""
    if not passages:
        return "no passages"
    if max(p.score for p in passages) < min_relevance:
        return "no passage is about the question"
    asked = years(question)
    if asked:
        seen: set[str] = set()
        for p in passages:
            seen |= years(p.chunk.text)
            if p.doc.date:
                seen.add(p.doc.date[:4])
        if not asked & seen:
            return f"no passage mentions {', '.join(sorted(asked))}"
    return None


# ---------------------------------------------------------------- draft
@dataclass
class Draft:
    """What the answer step wrote: the short answer line (if any), the sentences, and the model's confidence."""

    short: str | None
    body: str
    confidence: float | None = None
    first_p: float | None = None  # probability of the short answer's first token


def parse_draft(text: str, probs: list[TokenProb] | None = None, token_text: Callable[[int], str] | None = None) -> Draft:
    """Split ``Answer: <short>`` from the sentences; confidence is the short answer's geometric-mean token probability."""
    short = None
    body = text.strip()
    m = _SHORT.match(text)
    if m:
        line, _, rest = text[m.end() :].partition("\n")
        short = _MARKER.sub("", line).strip().strip("*").strip() or None
        body = rest.strip() or line.strip()  # a model that wrote only the short line: it is the answer
    draft = Draft(short, body)
    if probs and token_text and m:
        # the tokens that wrote the short answer: after the "Answer:" label, before the line break
        pos, span = 0, []
        label_end = m.end()
        line_end = text.find("\n", label_end)
        line_end = len(text) if line_end == -1 else line_end
        for tp in probs:
            piece = token_text(tp.token)
            if pos >= label_end - 1 and pos < line_end and piece.strip():
                span.append(tp.p)
            pos += len(piece)
            if pos >= line_end:
                break
        if span:
            draft.confidence = float(np.exp(np.mean(np.log(np.maximum(span, 1e-9)))))
            draft.first_p = span[0]
    return draft


def extractive_draft(ev: Evidence) -> Draft:
    """An answer with no LLM: the best evidence sentences themselves, best first, each marked with its source."""
    picked = ev.best()
    lead, rest = picked[:1], sorted(picked[1:], key=lambda i: _time_key(ev.srcs[i]))
    body = " ".join(f"{ev.srcs[i].sentence.text} [{ev.numbers[ev.srcs[i].passage.doc.id]}]" for i in lead + rest)
    return Draft(None, body)


def _time_key(s: SourceSentence) -> tuple:
    return (s.passage.doc.date or "", s.passage.doc.id, s.sentence.start)


def split_answer(text: str) -> list[tuple[str, list[int]]]:
    """Answer sentences with the source numbers the model cited in each."""
    text = text.strip()
    out: list[tuple[str, list[int]]] = []
    for s, e in sentence_spans(text):
        sent = text[s:e].strip()
        cited = [int(n) for m in _MARKER.finditer(sent) for n in re.split(r"\s*,\s*", m.group(1))]
        clean = _MARKER.sub("", sent).strip()
        clean = re.sub(r"\s+([.,;:!?])", r"\1", clean)
        if out and re.fullmatch(r"[\[\]\d,.\s]*", clean):  # a stray marker after the period
            out[-1][1].extend(cited)
            continue
        if clean:
            out.append((clean, cited))
    return out


# ---------------------------------------------------------------- the pipeline
def run(
    question: str,
    passages: list[Passage],
    raw_of: Callable[[str], str],
    llm,
    settings: Settings,
    timings: dict[str, float],
    t0: float,
) -> Iterator[str | Answer]:
    """Yield the draft's text as it is generated, then the verified :class:`Answer` last."""
    backend = settings.llm
    why = off_topic(question, passages, settings.min_relevance)
    if why:
        timings["total_s"] = time.perf_counter() - t0
        yield abstained(question, passages, timings, backend, why)
        return
    t = time.perf_counter()
    ev = Evidence.build(question, passages)
    timings["context_s"] = time.perf_counter() - t
    if is_timeline(question):
        # a dated list of what the sources report, one entry per year, in time order: quoted, so
        # every entry is true to its source, and no model time is spent on it
        answer = timeline(question, ev, raw_of, timings, backend, settings)
        timings["first_token_s"] = timings["total_s"] = time.perf_counter() - t0
        yield answer.text
        yield answer
        return
    if llm is None:
        draft = extractive_draft(ev)
        timings["first_token_s"] = time.perf_counter() - t0
        yield draft.body
    else:
        messages = ev.messages(settings.max_context_sentences)
        if settings.llm == "local":
            t = time.perf_counter()
            llm.model()
            timings["llm_load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        probs: list[TokenProb] = []
        pieces: list[str] = []
        for piece in _visible(llm.stream(messages, settings.max_answer_tokens, settings.temperature, probs), pieces):
            if "first_token_s" not in timings:
                timings["first_token_s"] = time.perf_counter() - t0
            yield piece
        timings["generation_s"] = time.perf_counter() - t
        draft = parse_draft("".join(pieces), probs, getattr(llm, "token_text", None))
    answer = finish(question, ev, draft, raw_of, settings, timings, backend)
    answer.draft = (f"Answer: {draft.short}\n" if draft.short else "") + draft.body
    timings["total_s"] = time.perf_counter() - t0
    yield answer


def _visible(tokens: Iterator[str], pieces: list[str]) -> Iterator[str]:
    """Pass the model's text through without its "Answer:" label; every token is kept in ``pieces``."""
    past_label = False
    for tok in tokens:
        pieces.append(tok)
        if past_label:
            yield tok
            continue
        text = "".join(pieces)
        head = text.lstrip().lower()
        if len(head) < 7 and "answer:".startswith(head):
            continue  # may still become the label
        past_label = True
        m = _SHORT.match(text)
        if rest := text[m.end() :] if m else text:
            yield rest


def build_answer(
    question: str, draft: str, passages: list[Passage], raw_of: Callable[[str], str], settings: Settings, backend: str = "test"
) -> Answer:
    """Verify a draft written elsewhere (``Answer: <short>`` line optional) into an Answer."""
    return finish(question, Evidence.build(question, passages), parse_draft(draft), raw_of, settings, {}, backend)


def finish(
    question: str, ev: Evidence, draft: Draft, raw_of: Callable[[str], str], settings: Settings, timings: dict[str, float], backend: str
) -> Answer:
    """Verify the draft's sentences, decide whether it answers, and compose the answer."""
    t = time.perf_counter()
    if is_refusal(draft.body) or (draft.short and is_refusal(draft.short)):
        return abstained(question, ev.passages, timings, backend, "the model found no answer in the sources")
    parts = split_answer(draft.body)
    if not parts:
        return abstained(question, ev.passages, timings, backend, "the model wrote nothing")
    claims = [c for c, _ in parts]
    matrix = verify.support_matrix(claims, ev.srcs, embedding.embed(claims), ev.vecs, question)
    by_number = {n: d for d, n in ev.numbers.items()}
    checks: list[verify.Check] = []
    for i, (claim, hinted) in enumerate(parts):
        previous = claims[i - 1] if i else ""
        checks.append(
            verify.attribute(claim, question, matrix[i], ev.srcs, {by_number[n] for n in hinted if n in by_number}, settings.support_threshold, ev.common, previous)
        )
    timings["verify_s"] = time.perf_counter() - t

    lead_i = next((i for i, c in enumerate(claims) if not _ASIDE.match(c) and not _restates(question, c, ev.common)), 0)
    lead = checks[lead_i]
    signals: dict[str, float] = {"lead_score": lead.score}
    if draft.confidence is not None:
        signals["confidence"] = draft.confidence
        signals["first_p"] = draft.first_p or 0.0
    why = None
    if not lead.supported:
        why = f"the answer's main claim is not stated by the sources: it {lead.reason}"
    elif draft.short and (missing := verify.missing_terms(draft.short, question, [ev.srcs[j] for j in lead.sources], ev.common)):
        why = f"the short answer “{draft.short}” names {', '.join(missing)}, which its quotes do not"
    if why is None:
        about = verify.about_question(question, [ev.srcs[j] for j in lead.sources], ev.common)
        signals.update(about_names=about.names, about_words=about.words, about_context=about.context_words, about=about.score)
        if not about.years:
            why = "the quotes are not from the year the question asks about"
        elif about.score < settings.min_about:
            why = "the quotes are about the question's topic, not what it asks"
        elif draft.confidence is not None and draft.confidence < settings.min_confidence:
            why = f"the model was unsure of its answer (confidence {draft.confidence:.2f})"
    if why:
        a = abstained(question, ev.passages, timings, backend, why)
        a.short_answer, a.confidence, a.signals = draft.short, draft.confidence, signals
        a.dropped = [Dropped(c, why if i == lead_i else "the answer was withheld") for i, c in enumerate(claims)]
        return a
    return compose(question, ev, draft, claims, checks, lead_i, raw_of, timings, backend, signals, settings)


def compose(
    question: str,
    ev: Evidence,
    draft: Draft,
    claims: list[str],
    checks: list[verify.Check],
    lead_i: int,
    raw_of: Callable[[str], str],
    timings: dict[str, float],
    backend: str,
    signals: dict[str, float],
    settings: Settings,
) -> Answer:
    """The lead sentence, then each further sentence only when it is supported, on the question and adds a fact."""
    asked_years = years(question)
    rivals = [] if _EXPLAIN.search(question) else rival_reports(question, ev, checks[lead_i], draft.short)
    if rivals:
        # the sources disagree on what was asked: name each report rather than merge them
        lead_src = ev.srcs[checks[lead_i].sources[0]].passage
        reports = [(lead_src.doc.date or "", f"{_attribution(lead_src)}: {claims[lead_i]}", checks[lead_i], False)]
        reports += [
            (ev.srcs[i].passage.doc.date or "", f"{_attribution(ev.srcs[i].passage)}: {_quoted(ev.srcs[i].sentence.text)}", verify.Check(True, [i], 1.0), True)
            for i in rivals
        ]
        kept = [(text, chk, quoted) for _, text, chk, quoted in sorted(reports, key=lambda r: r[0])]
        dropped = [Dropped(c, "left out: the answer gives each report instead") for i, c in enumerate(claims) if i != lead_i]
        return _render(question, ev, draft, kept, dropped, raw_of, timings, backend, signals, kind="differing", lead_in="Reports differ:")
    kept: list[tuple[str, verify.Check, bool]] = [(claims[lead_i], checks[lead_i], False)]
    dropped = [Dropped(c, "an aside the model marked itself" if _ASIDE.match(c) else "restates the question without answering it") for c in claims[:lead_i]]
    stated = set(content_words(claims[lead_i])) | content_words(question)
    cited = set(checks[lead_i].sources)
    lead_about = verify.about_question(question, [ev.srcs[j] for j in checks[lead_i].sources], ev.common).score
    for claim, chk in zip(claims[lead_i + 1 :], checks[lead_i + 1 :]):
        reason = _leave_out(question, asked_years, claim, chk, stated, ev, lead_about)
        if reason:
            dropped.append(Dropped(claim, reason))
            continue
        kept.append((claim, chk, False))
        stated |= content_words(claim)
        cited |= set(chk.sources)
    # a why question gets every reason the best evidence states: one the model left out is quoted
    if _EXPLAIN.search(question):
        for j in ev.best():
            src = ev.srcs[j]
            words = content_words(src.sentence.text)
            new = words - stated
            if j in cited or len(new) < 3 or len(new) / max(len(words), 1) < 0.4 or not verify.states_cause(src.sentence.text):
                continue
            about = verify.about_question(question, [src], ev.common)
            if about.score < max(settings.min_about, 0.8 * lead_about) or not about.years:
                continue
            kept.append((_quoted(src.sentence.text), verify.Check(True, [j], 1.0), True))
            stated |= words
            cited.add(j)
    return _render(question, ev, draft, kept, dropped, raw_of, timings, backend, signals)


def _restates(question: str, claim: str, common: frozenset[str]) -> bool:
    """A why/how answer sentence that adds nothing but a date to the question ("X stopped Y on Monday") explains nothing."""
    if not _EXPLAIN.search(question):
        return False
    names, _, words = verify.new_terms(claim, question, common)
    dates = content_words(" ".join(WEEKDAYS + MONTHS))
    names = [n for n in names if not set(n) <= set(WEEKDAYS + MONTHS)]
    return not names and not (words - dates - {w for w in words if w.isdigit()})


def timeline(
    question: str, ev: Evidence, raw_of: Callable[[str], str], timings: dict[str, float], backend: str, settings: Settings
) -> Answer:
    """One entry per year the sources report on the question's subject, each the best-matching source sentence, oldest first.

    A sentence's year is the earliest year it names itself (within the question's range, when the
    question gives one), "last year" counts from its article's date, and otherwise it is the
    year its article was published.
    """
    asked = sorted(int(y) for y in years(question))
    lo, hi = (asked[0], asked[-1]) if len(asked) >= 2 else ((asked[0], 9999) if asked else (0, 9999))
    if not len(ev.srcs):
        return abstained(question, ev.passages, timings, backend, "no passage is about the question")
    floor = 0.5 * float(ev.relevance.max())
    q_names = name_tokens(question, ev.common)
    best: dict[int, tuple[float, int, str]] = {}
    for i, s in enumerate(ev.srcs):
        words = verify.words_of(s.sentence.text)
        lede = s.passage.chunk.id.endswith("#0") and s is _first_sentence(ev, s.passage.doc.id)
        # the sentence itself names the question's subjects (half of them at least)
        if (ev.relevance[i] < floor and not lede) or 2 * sum(verify.carries(n, words) for n in q_names) < len(q_names):
            continue
        named = sorted(int(y) for y in years(s.sentence.text) if lo <= int(y) <= hi)
        published = s.passage.doc.date
        rank = float(ev.relevance[i])
        if named:
            year, label = named[0], str(named[0])
        elif published and _LAST_YEAR.search(s.sentence.text):
            year = int(published[:4]) - 1
            label = str(year)
        elif published:
            year, label = int(published[:4]), human_date(published) or published
            if lede:
                rank += 1.0  # what a report says that year: its lede sums it up
        else:
            continue
        if lo <= year <= hi and (year not in best or rank > best[year][0]):
            best[year] = (rank, i, label)
    if not best:
        return abstained(question, ev.passages, timings, backend, "no dated passage is about the question")
    kept = []
    for year in sorted(best):
        _, i, label = best[year]
        kept.append((f"{label}: {_quoted(ev.srcs[i].sentence.text)}", verify.Check(True, [i], 1.0), True))
    return _render(question, ev, Draft(None, ""), kept, [], raw_of, timings, backend, {}, kind="timeline")


def _first_sentence(ev: Evidence, doc_id: str) -> SourceSentence | None:
    return next((s for s in ev.srcs if s.passage.doc.id == doc_id), None)


def _quoted(text: str) -> str:
    """A source sentence shown verbatim: in quotation marks unless it holds its own."""
    text = text.strip()
    return text if re.search(r"[“”\"]", text) else f"“{text}”"


def rival_reports(question: str, ev: Evidence, lead: verify.Check, short: str | None) -> list[int]:
    """Source sentences from other articles that report a different value for what the question asks.

    For a question that wants one value (who, which, when, how many): a sentence from another
    article that says nearly the same thing (embedding cosine to the lead's quote at least 0.55),
    is as much about the question, and names a different person, place or number — or, for a
    "when" question, comes from an article of another month. At most one per article, two in all.
    """
    if not _SINGLE_VALUE.search(question) or not lead.sources:
        return []
    lead_docs = {ev.srcs[j].passage.doc.id for j in lead.sources}
    lead_quotes = [ev.srcs[j] for j in lead.sources]
    lead_words = verify.words_of(" ".join(q.sentence.text for q in lead_quotes) + " " + (short or ""))
    lead_vec = ev.vecs[lead.sources].mean(axis=0)
    lead_vec /= max(float(np.linalg.norm(lead_vec)), 1e-9)
    lead_about = verify.about_question(question, lead_quotes, ev.common).score
    lead_month = {(q.passage.doc.date or "")[:7] for q in lead_quotes}
    out: list[int] = []
    for i in [int(i) for i in np.argsort(-ev.relevance)]:
        s = ev.srcs[i]
        doc = s.passage.doc.id
        if doc in lead_docs or any(doc in q.passage.also_reported_by for q in lead_quotes) or float(ev.vecs[i] @ lead_vec) < 0.55:
            continue
        about = verify.about_question(question, [s], ev.common)
        if not about.years or about.score < 0.8 * lead_about:
            continue
        if _WHEN.search(question):
            differs = bool(s.passage.doc.date) and s.passage.doc.date[:7] not in lead_month
        else:
            names, nums, _ = verify.new_terms(s.sentence.text, question, ev.common)
            differs = any(not verify.carries(n, lead_words) for n in names) or bool(nums - verify.words_of(" ".join(lead_words)))
            differs = differs and not (short and verify.carries(tuple(verify.words_of(short)), verify.words_of(s.sentence.text)))
        if differs:
            out.append(i)
            lead_docs.add(doc)
        if len(out) == 2:
            break
    return out


def _attribution(p: Passage) -> str:
    """"The Algemeiner, 25 March 2014" — who published a report and when, for naming sources that disagree."""
    when = human_date(p.doc.date)
    if p.doc.outlet:
        return f"{p.doc.outlet}, {when}" if when else p.doc.outlet
    return f"A report of {when}" if when else "An undated report"


def _leave_out(
    question: str, asked_years: set[str], claim: str, chk: verify.Check, stated: set[str], ev: Evidence, lead_about: float
) -> str | None:
    """Why a sentence after the lead should not be in the answer, or None to keep it."""
    if _ASIDE.match(claim):
        return "an aside the model marked itself"
    if not chk.supported:
        return f"not stated by the sources: it {chk.reason}"
    said = {int(y) for y in YEAR.findall(claim)}
    if asked_years and said and not said & {int(y) for y in asked_years} and min(said) > max(int(y) for y in asked_years):
        return "about a later year than the question asks"
    new = content_words(claim) - stated
    if len(new) < 2:
        return "repeats what the answer already says"
    about = verify.about_question(question, [ev.srcs[j] for j in chk.sources], ev.common)
    if not about.years:
        return "about another year than the question asks"
    if about.score < 0.75 * lead_about:
        return "not about what the question asks"
    return None


def _render(
    question: str,
    ev: Evidence,
    draft: Draft,
    kept: list[tuple[str, verify.Check, bool]],
    dropped: list[Dropped],
    raw_of: Callable[[str], str],
    timings: dict[str, float],
    backend: str,
    signals: dict[str, float],
    kind: str = "answer",
    lead_in: str = "",
) -> Answer:
    """The Answer with its citations numbered in order of first use; a timeline or differing reports read as a list."""
    citations: list[Citation] = []
    by_span: dict[tuple[str, int, int], int] = {}
    sentences: list[AnswerSentence] = []
    rendered: list[str] = []
    for claim, chk, quoted in kept:
        nums: list[int] = []
        for j in chk.sources:
            src = ev.srcs[j]
            key = (src.passage.doc.id, src.sentence.start, src.sentence.end)
            if key not in by_span:
                raw = raw_of(src.passage.doc.id)
                citations.append(
                    Citation(
                        n=len(citations) + 1,
                        source_file=src.passage.doc.id,
                        title=src.passage.doc.title,
                        outlet=src.passage.doc.outlet,
                        date=src.passage.doc.date,
                        quote=raw[src.sentence.start : src.sentence.end],
                        start=src.sentence.start,
                        end=src.sentence.end,
                        path=src.passage.doc.path,
                        passage=src.passage.n,
                        score=chk.score,
                    )
                )
                by_span[key] = citations[-1].n
            nums.append(by_span[key])
        sentences.append(AnswerSentence(text=claim, citations=nums, supported=chk.supported, quoted=quoted))
        rendered.append(claim + "".join(f" [{n}]" for n in nums))
    if kind == "answer":
        text = " ".join(_attach_marker(r) for r in rendered)
    else:
        text = "\n".join(([lead_in] if lead_in else []) + [f"- {_attach_marker(r)}" for r in rendered])
    return Answer(
        question,
        text,
        False,
        sentences,
        citations,
        ev.passages,
        timings,
        backend,
        short_answer=draft.short,
        confidence=draft.confidence,
        dropped=dropped,
        signals=signals,
        kind=kind,
    )


def _attach_marker(sentence: str) -> str:
    """Move trailing markers inside the final period: "... Damascus [1]." reads better."""
    m = re.match(r"^(.*?)([.!?]+)((?:\s\[\d+\])+)$", sentence)
    return f"{m.group(1)}{m.group(3)}{m.group(2)}" if m else sentence


def abstained(question: str, passages: list[Passage], timings: dict, backend: str, reason: str | None = None) -> Answer:
    """"The sources do not answer", keeping the passages as related reading."""
    return Answer(question, ABSTAIN_TEXT, True, [], [], passages, timings, backend, abstain_reason=reason)
