"""The answer pipeline: from retrieved passages to a verified Answer, one stage after another.

:func:`run` owns the order of the stages:

1. **gate** — no passage about the question, or a year no passage mentions: abstain before any model.
2. **evidence** — every sentence of the passages once, embedded once, scored for relevance (:class:`Evidence`).
3. **draft** — the model reads the few best sentences and writes ``Answer: <short answer>`` and one to
   three cited sentences (streamed); the extractive backend quotes the best sentences instead.
4. **verify** — each sentence is attributed to the source sentences that state it (:mod:`rag.answer.verify`).
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
from dataclasses import replace

import numpy as np

from ..index import embedding
from ..settings import Settings
from ..text import content_words, sentence_spans, years
from ..types import Answer, Draft, Dropped, Passage, SourceSentence, Timings
from . import candidates, decision, verify
from .compose import abstained, compose, is_aside, is_why, quoted, restates
from .compose import timeline as compose_timeline
from .evidence import Evidence
from .llm import ChatModel, TokenProb

# A refusal is looked for in the draft's first this many characters: a model that finds no answer says so
# up front, while "not mentioned" further on qualifies one detail of an answer.
REFUSAL_WINDOW = 300
MIN_TOKEN_P = 1e-9  # floor of a token's probability before its log: one zero would make the geometric mean 0
_LABEL = "answer:"  # the short answer's label, as the streamed text is matched against it (lower case)

# The checks that can withhold an answer, by the name an abstention records (Answer.abstain_check) and
# `rag eval` counts: what each one found missing is in the abstention's reason.
CHECKS = {
    "off topic": "no retrieved passage is about the question",
    "year": "the question names a year no passage or quote is from",
    "date range": "no indexed article falls in the dates asked",
    "not asked": "no source sentence speaks of what was asked (extractive backend)",
    "model refused": "the model found no answer in the sources",
    "empty draft": "the model wrote nothing",
    "claim": "the answer's main claim is not stated by its quotes",
    "short answer": "the short answer is not what its quotes state",
    "answer type": "the short answer is not the kind of thing asked (a person for who, a place for where), or is about another entity",
    "stale": "the quotes are older than the days the question asks about",
    "off question": "the quotes speak of none of what the question asks (only their passages do)",
    "weak evidence": "the fitted chance that the answer is right (rag.answer.decision) falls below the threshold",
}

_REFUSAL = re.compile(
    r"NOT IN SOURCES|(sources?|articles?|passages?|context)\s+(do(es)?\s+not|don't|doesn't)\s+(say|mention|contain|provide|answer|specify|include|state)|"
    r"(no|not enough|insufficient)\s+information|cannot (be )?(answer|determine)|can't (answer|determine)|not mentioned",
    re.I,
)
_MARKER = re.compile(r"\s*\[(\d+(?:\s*,\s*\d+)*)\]")
_SHORT = re.compile(r"^\s*\**\s*(short\s+)?answer\s*\**\s*:\s*", re.I)
_TIMELINE = re.compile(
    r"\bhow (did|has|have|had|do|does)\b.*\b(chang|evolv|develop|shift|progress|turn)\w*|\b(trace|timeline|chronolog\w*|over (the )?(years|time)|history of)\b|"
    r"\b(from|between|since)\s+(1[89]|20)\d\d\b.*\b(to|and|until|through)\s+(1[89]|20)\d\d\b",
    re.I,
)


def is_timeline(question: str) -> bool:
    """A question about change over time ("how did ... change", "trace", "from 2011 to 2017", "timeline")."""
    return bool(_TIMELINE.search(question))


def is_refusal(draft: str) -> bool:
    return bool(_REFUSAL.search(draft[:REFUSAL_WINDOW]))


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
            draft.confidence = float(np.exp(np.mean(np.log(np.maximum(span, MIN_TOKEN_P)))))
            draft.first_p = span[0]
    return draft


def extractive_draft(ev: Evidence) -> Draft:
    """An answer with no LLM: the best evidence sentences themselves, best first, each marked with its source."""
    picked = ev.best()
    lead, rest = picked[:1], sorted(picked[1:], key=lambda i: _time_key(ev.srcs[i]))
    body = " ".join(f"{ev.srcs[i].sentence.text} [{ev.numbers[ev.srcs[i].passage.doc.id]}]" for i in lead + rest)
    return Draft(None, body)


def unasked(question: str, ev: Evidence) -> str | None:
    """Why the extractive backend has nothing to quote, or None.

    With no model to say "not in the sources", the best-matching sentences would be quoted even
    when they share only a year or a verb with the question ("won ... in 2021" for a question
    about a marathon): at least one must speak of half of what was asked, read with the sentence
    before it (which often names the event).
    """
    asked = verify.asked_words(question)
    if not asked:
        return None
    for i in ev.best():
        text = ev.srcs[i].sentence.text
        if (b := ev.before(i)) is not None:
            text += " " + ev.srcs[b].sentence.text
        if 2 * len(asked & content_words(text)) >= len(asked):
            return None
    return "no source sentence speaks of what the question asks"


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
    llm: ChatModel | None,
    settings: Settings,
    timings: Timings,
    t0: float,
    as_of: str | None = None,
    *,
    timeline: bool = False,
    notes: list[str] | None = None,
) -> Iterator[str | Answer]:
    """Yield the draft's text as it is generated, then the verified :class:`Answer` last.

    What the question asks of the sources was decided once, before retrieval (:meth:`rag.RAG.stream`):
    ``as_of`` is the question's date, ``timeline`` whether it asks for a dated list over the years,
    and ``notes`` what the reader should know of how the sources were chosen; each Answer carries them.
    """
    backend = settings.llm
    notes = list(notes or [])
    t = time.perf_counter()
    # a passage retrieved without its cosine (retrieve's embed_unstored=False) gets it with the evidence, before the gate reads it
    ev = Evidence.build(question, passages, as_of) if any(p.score is None for p in passages) else None
    why = off_topic(question, passages, settings.min_relevance)
    if why:
        timings.total_s = time.perf_counter() - t0
        yield replace(abstained(question, passages, timings, backend, why, "year" if why.startswith("no passage mentions") else "off topic"), notes=notes)
        return
    ev = ev or Evidence.build(question, passages, as_of)
    timings.context_s = time.perf_counter() - t
    if timeline:
        # a dated list of what the sources report, one entry per year, in time order: quoted, so
        # every entry is true to its source, and no model time is spent on it
        answer = replace(compose_timeline(question, ev, raw_of, timings, backend, settings), notes=notes)
        timings.first_token_s = timings.total_s = time.perf_counter() - t0
        yield answer.text
        yield answer
        return
    if llm is None:
        if why := unasked(question, ev):
            timings.total_s = time.perf_counter() - t0
            yield replace(abstained(question, passages, timings, backend, why, "not asked"), notes=notes)
            return
        draft = extractive_draft(ev)
        timings.first_token_s = time.perf_counter() - t0
        yield draft.body
    else:
        messages = ev.messages(settings.max_context_sentences)
        if hasattr(llm, "model"):  # a local model's load (once per process) is timed apart from the generation
            t = time.perf_counter()
            llm.model()
            timings.llm_load_s = time.perf_counter() - t
        t = time.perf_counter()
        probs: list[TokenProb] = []
        pieces: list[str] = []
        for piece in _visible(llm.stream(messages, settings.max_answer_tokens, settings.temperature, probs), pieces):
            if timings.first_token_s is None:
                timings.first_token_s = time.perf_counter() - t0
            yield piece
        timings.generation_s = time.perf_counter() - t
        draft = parse_draft("".join(pieces), probs, getattr(llm, "token_text", None))
        if settings.rank_candidates and candidates.can_rank(llm) and rankable(question, draft):
            t = time.perf_counter()
            ranking = candidates.rank(llm, messages, question, draft.short, ev.read(settings.max_context_sentences))
            timings.ranking_s = time.perf_counter() - t
            if ranking:
                draft.ranking = ranking.signals()
                draft.candidates = [(c, round(float(p), 4), round(float(q), 4)) for c, p, q in zip(ranking.candidates, ranking.shares, ranking.choice_shares)]
    # the audit trail (what the model wrote, the candidates it scored) and the notes join the checked answer
    written = (f"Answer: {draft.short}\n" if draft.short else "") + draft.body
    answer = replace(finish(question, ev, draft, raw_of, settings, timings, backend), draft=written, candidates=draft.candidates, notes=notes)
    timings.total_s = time.perf_counter() - t0
    yield answer


def rankable(question: str, draft: Draft) -> bool:
    """Whether the draft's short answer is one of the names, dates or numbers the sources offer: not a refusal, a yes or no, or a reason."""
    return bool(draft.short) and not is_refusal(draft.body) and not is_refusal(draft.short or "") and not verify.is_yes_no(question) and verify.asked_kind(question) != "reason"


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
        if len(head) < len(_LABEL) and _LABEL.startswith(head):
            continue  # may still become the label
        past_label = True
        m = _SHORT.match(text)
        if rest := text[m.end() :] if m else text:
            yield rest


def build_answer(
    question: str,
    draft: str,
    passages: list[Passage],
    raw_of: Callable[[str], str],
    settings: Settings,
    backend: str = "test",
    as_of: str | None = None,
) -> Answer:
    """Verify a draft written elsewhere (``Answer: <short>`` line optional) into an Answer (``as_of``: the question's date)."""
    return finish(question, Evidence.build(question, passages, as_of), parse_draft(draft), raw_of, settings, Timings(), backend)


def finish(
    question: str, ev: Evidence, draft: Draft, raw_of: Callable[[str], str], settings: Settings, timings: Timings, backend: str
) -> Answer:
    """Verify the draft's sentences, decide whether it answers, and compose the answer."""
    t = time.perf_counter()
    if is_refusal(draft.body) or (draft.short and is_refusal(draft.short)):
        return abstained(question, ev.passages, timings, backend, "the model found no answer in the sources", "model refused")
    parts = split_answer(draft.body)
    if not parts:
        return abstained(question, ev.passages, timings, backend, "the model wrote nothing", "empty draft")
    claims = [c for c, _ in parts]
    matrix = verify.support_matrix(claims, ev.srcs, embedding.embed(claims), ev.vecs, question)
    by_number = {n: d for d, n in ev.numbers.items()}
    checks: list[verify.Check] = []
    for i, (claim, hinted) in enumerate(parts):
        previous = claims[i - 1] if i else ""
        checks.append(
            verify.attribute(claim, question, matrix[i], ev.srcs, {by_number[n] for n in hinted if n in by_number}, settings.support_threshold, ev.common, previous)
        )
    timings.verify_s = time.perf_counter() - t

    # the lead: the first sentence that answers (not an aside, not a restated "why"), the one naming the short answer if any does
    order = [i for i, c in enumerate(claims) if not is_aside(c) and not restates(question, c, ev.common)] or [0]
    signals: dict[str, float] = {}
    if draft.confidence is not None:
        signals["confidence"] = draft.confidence
        signals["first_p"] = draft.first_p or 0.0
    signals.update(draft.ranking)
    replaced: list[Dropped] = []
    short = draft.short
    polarity = verify.yes_or_no(short) if verify.is_yes_no(question) else None
    if polarity:
        short = None  # "yes" is stated by the sentence that says it happened, not by a word of its quote
    elif short and (bad := verify.wrong_kind(question, short, ev.common)):
        # a short answer of the wrong kind ("Hamas" for why, "yes" for who) answers nothing: the sentences must
        replaced.append(Dropped(f"Answer: {short}", f"{bad}; left out"))
        signals["short_wrong_kind"] = 1.0
        short = None
    lead_i = next((i for i in order if short is None or verify.names_answer(short, claims[i], question, ev.common)), order[0])
    lead = checks[lead_i]
    signals["lead_score"] = lead.score
    why, check = None, None
    if not lead.supported:
        why, check = f"the answer's main claim is not stated by the sources: it {lead.reason}", "claim"
    elif short and (unstated := verify.short_unstated(short, question, [ev.srcs[j] for j in lead.sources], ev.common)):
        why, check = f"the short answer “{short}” {unstated}", "short answer"
    elif polarity:
        why = yes_no_unstated(polarity, question, claims[lead_i], [ev.srcs[j] for j in lead.sources])
        check = "claim" if why else None
    elif short is None and (bad := verify.wrong_kind(question, claims[lead_i], ev.common)):
        why, check = bad, "answer type"
    if why and short and (j := quote_stating(short, question, ev)) is not None and j not in lead.sources:
        # the model's sentence fails but a source sentence states its answer: that sentence takes its place
        replaced.append(Dropped(claims[lead_i], f"{why.split(': it ', 1)[-1]}; replaced by the quote that states the answer"))
        claims[lead_i], checks[lead_i], why, check = quoted(ev.srcs[j].sentence.text), verify.Check(True, [j], 1.0), None, None
        lead = checks[lead_i]
        signals["replaced"] = 1.0
    if why is None:
        asked = replace(draft, short=short)  # what decide reads: no "yes", no short answer of the wrong kind
        check, why = decide(question, ev, lead, asked, settings, signals) or (None, None)
        if why and short and not signals.get("replaced") and (j := quote_stating(short, question, ev)) is not None and j not in lead.sources:
            # the model's sentence is withheld (another year, off the question): the best quote that states its answer may stand
            alt = verify.Check(True, [j], 1.0)
            alt_signals = dict(signals, replaced=1.0)
            if decide(question, ev, alt, asked, settings, alt_signals) is None:
                replaced.append(Dropped(claims[lead_i], f"{why}; replaced by the quote that states the answer"))
                claims[lead_i], checks[lead_i], lead, why, check, signals = quoted(ev.srcs[j].sentence.text), alt, alt, None, None, alt_signals
    if why:
        dropped = [Dropped(c, why if i == lead_i else "the answer was withheld") for i, c in enumerate(claims)]
        return replace(abstained(question, ev.passages, timings, backend, why, check), short_answer=draft.short, confidence=draft.confidence, signals=signals, dropped=dropped)
    if polarity:
        draft = replace(draft, short=polarity.capitalize())
    elif short != draft.short:
        draft = replace(draft, short=short)
    return compose(question, ev, draft, claims, checks, lead_i, raw_of, timings, backend, signals, settings, bool(signals.get("replaced")), replaced)


def yes_no_unstated(polarity: str, question: str, claim: str, quotes: list[SourceSentence]) -> str | None:
    """Why a supported sentence does not carry a "yes" or "no" to the question, or None when it does.

    A "no" needs a quote that states the negation ("refused", "cut off", "did not"), never an
    absence; a "yes" fails when its quote negates what the question asks about.
    """
    text = " ".join(q.sentence.text for q in quotes)
    asked = verify.asked_words(question) - verify.negated(question)
    if polarity == "no" and not verify.negated(text) & (asked | verify.negated(claim)):
        return "the answer is “no”, and its quote does not say that what was asked did not happen"
    if polarity == "yes" and verify.negated(text) & asked and not verify.negated(question):
        return "the answer is “yes”, and its quote says that what was asked did not happen"
    return None


def decide(question: str, ev: Evidence, lead: verify.Check, draft: Draft, settings: Settings, signals: dict[str, float]) -> tuple[str, str] | None:
    """The check (CHECKS) and the reason why a supported lead still does not answer the question, or None when the answer stands.

    Hard checks first: the quotes must be from the year asked (or a later report), speak of
    something the question asks, and be recent for a "this week" question. Then the fitted
    decision (:mod:`rag.answer.decision`) reads the signals recorded here (aboutness of the quotes, the
    model's token probabilities, agreement across articles, the report's age, the quote's rank)
    as the chance the answer is right, and the answer stands when that reaches the threshold.
    """
    # a reason is stated after its event: for a "why" question the sentence before the quote counts too
    first = min(lead.sources)
    lead_in = ev.srcs[b].sentence.text if is_why(question) and (b := ev.before(first)) is not None and b not in lead.sources else ""
    about = verify.about_question(question, [ev.srcs[j] for j in lead.sources], ev.common, lead_in)
    age = verify.report_age_days([ev.srcs[j] for j in lead.sources], ev.as_of)
    signals.update(about_names=about.names, about_words=about.words, about_context=about.context_words, about=about.score)
    if age is not None:
        signals["report_days"] = float(age)
    order = np.argsort(-ev.relevance)
    signals["lead_rank"] = float(min(int(np.flatnonzero(order == j)[0]) for j in lead.sources))
    signals["lead_relevance"] = float(max(ev.relevance[j] for j in lead.sources))
    signals["lead_passage"] = float(min(ev.srcs[j].passage.n for j in lead.sources))
    if draft.short:
        signals.update(corroboration(question, draft.short, lead, ev))
    chance = decision.fitted().probability(signals)
    signals["score"] = chance
    if not about.years_or_later:
        return "year", "the quotes are not from the year the question asks about, nor from a later report"
    if about.words == 0:
        # a quote that shares only its passage with the question states the answer to something else
        # ("Hassan Rouhani ... was reelected as Iran's president" for who leads Hezbollah)
        asked = sorted(verify.asked_words(question)) or ["what was asked"]
        return "off question", f"its quotes speak of none of what the question asks ({', '.join(asked[:4])})"
    if late := verify.stale(question, [ev.srcs[j] for j in lead.sources], ev.as_of):
        return "stale", late
    needed = decision.threshold(settings.min_answer_score)
    if chance < needed:
        return "weak evidence", (
            f"the evidence is too weak (its quotes speak of {about.words:.0%} of what was asked"
            + (f", the model was {draft.confidence:.0%} sure" if draft.confidence is not None else "")
            + (f", its newest report is {age // 365} year{'s' if age >= 730 else ''} older than the question" if age is not None and age >= 365 else "")
            + f"; the chance it is right is {chance:.0%}, an answer needs {needed:.0%})"
        )
    return None


def corroboration(question: str, short: str, lead: verify.Check, ev: Evidence) -> dict[str, float]:
    """How many of the passages' articles state the short answer: all of them, and those other than the lead's quotes' own."""
    lead_docs = {ev.srcs[j].passage.doc.id for j in lead.sources}
    stating = {s.passage.doc.id for s in ev.srcs if verify.names_answer(short, s.sentence.text, question, ev.common)}
    return {"articles": float(len({p.doc.id for p in ev.passages})), "stating": float(len(stating)), "stating_others": float(len(stating - lead_docs))}


def quote_stating(short: str, question: str, ev: Evidence) -> int | None:
    """The most relevant source sentence that states the short answer and itself speaks of at least half of what was asked.

    Such a quote stands alone as the answer, so naming the answer is not enough: "According to
    As-Safir, a series of meetings ..." names the paper but does not say it reported the funding.
    """
    for j in np.argsort(-ev.relevance):
        src = ev.srcs[int(j)]
        if verify.names_answer(short, src.sentence.text, question, ev.common) and verify.about_question(question, [src], ev.common).words >= 0.5:
            return int(j)
    return None


