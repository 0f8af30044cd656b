"""The composition stage: from checked draft sentences to the Answer a reader sees.

The lead sentence gives the direct answer; a further sentence is kept only when it is supported,
adds a fact and is about what was asked; a "why" question also gets, quoted, a reason the best
evidence gives that the model left out. Questions over years become a dated list, and reports
that disagree are named one by one. Every sentence left out is recorded with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from ..settings import Settings
from ..text import MONTHS, WEEKDAYS, YEAR, content_words, human_date, name_tokens, years
from ..types import ABSTAIN_TEXT, Answer, AnswerSentence, Citation, Draft, Dropped, Kind, Passage, SourceSentence, Timings
from . import verify
from .evidence import Evidence

_ASIDE = re.compile(
    r"^((the|this|another|one) (source|article|report|passage)s? (also|further|additionally)\b|(additionally|furthermore|in addition|also),? (the|this) (source|article|report))",
    re.I,
)


_EXPLAIN = re.compile(r"^\s*why\b|\b(reasons?|explain|what (led|caused|prompted))\b", re.I)

_SINGLE_VALUE = re.compile(r"^\s*(who|whom|which|when|since when|where|what (year|date|day|month|country|city|paper|newspaper)|how (many|much))\b", re.I)


_WHEN = re.compile(r"^\s*(when|since when|what (year|date|day|month))\b", re.I)


_LAST_YEAR = re.compile(r"\blast year\b", re.I)


def compose(
    question: str,
    ev: Evidence,
    draft: Draft,
    claims: list[str],
    checks: list[verify.Check],
    lead_i: int,
    raw_of: Callable[[str], str],
    timings: Timings,
    backend: str,
    signals: dict[str, float],
    settings: Settings,
    lead_quoted: bool = False,
    dropped: list[Dropped] | None = None,
) -> Answer:
    """The lead sentence, then each further sentence only when it is supported, on the question and adds a fact.

    The lead names the short answer first when its own words do not ("Bird flu: The virus was ...").
    """
    asked_years = years(question)
    rivals = [] if _EXPLAIN.search(question) else rival_reports(question, ev, checks[lead_i], draft.short)
    if rivals:
        # the sources disagree on what was asked: name each report rather than merge them
        lead_src = ev.srcs[checks[lead_i].sources[0]].passage
        reports = [(lead_src.doc.date or "", f"{_attribution(lead_src)}: {claims[lead_i]}", checks[lead_i], False)]
        reports += [
            (ev.srcs[i].passage.doc.date or "", f"{_attribution(ev.srcs[i].passage)}: {quoted(ev.srcs[i].sentence.text)}", verify.Check(True, [i], 1.0), True)
            for i in rivals
        ]
        kept = [(text, chk, is_quote) for _, text, chk, is_quote in sorted(reports, key=lambda r: r[0])]
        dropped = [*(dropped or []), *(Dropped(c, "left out: the answer gives each report instead") for i, c in enumerate(claims) if i != lead_i)]
        return _render(question, ev, draft, kept, dropped, raw_of, timings, backend, signals, kind=Kind.DIFFERING, lead_in="Reports differ:")
    lead = claims[lead_i]
    dropped = list(dropped or [])
    sources = checks[lead_i].sources
    richer = [j for j in sources if says_more(ev.srcs[j].sentence.text, lead, question, draft.short if len(sources) == 1 else None, ev)]
    if not lead_quoted and richer:
        # the model's paraphrase dropped names or numbers its quote gives with the answer: show that quote
        # (all the lead's quotes stay cited: together they state the short answer)
        dropped.append(Dropped(lead, "its quote says more; shown instead"))
        lead, lead_quoted = quoted(ev.srcs[richer[0]].sentence.text), True
    short = draft.short
    if short and verify.is_yes_no(question) and verify.yes_or_no(short):
        lead = f"{short}: {lead}"  # "Yes: Iran cut off its aid ..."
    elif short and any(verify.new_terms(short, question, ev.common)) and (lead_quoted or not verify.names_answer(short, lead, question, ev.common)):
        lead = f"{short[:1].upper()}{short[1:]}: {lead}"  # the direct answer first, always in words
    kept: list[tuple[str, verify.Check, bool]] = [(lead, checks[lead_i], lead_quoted)]
    stated = set(content_words(lead)) | content_words(question)
    cited = set(checks[lead_i].sources)
    lead_about = verify.about_question(question, [ev.srcs[j] for j in checks[lead_i].sources], ev.common).score
    for i, (claim, chk) in enumerate(zip(claims, checks)):
        if i == lead_i:
            continue
        reason = "restates the question without answering it" if i < lead_i and restates(question, claim, ev.common) else None
        # a reason stated right after a quote already in the answer is read with it: that quote names the event
        prev = ev.before(min(chk.sources)) if chk.sources and is_why(question) else None
        lead_in = ev.srcs[prev].sentence.text if prev is not None and prev in cited else ""
        reason = reason or _leave_out(question, asked_years, claim, chk, stated, ev, lead_about, lead_in)
        if reason:
            dropped.append(Dropped(claim, reason))
            continue
        kept.append((claim, chk, False))
        stated |= content_words(claim)
        cited |= set(chk.sources)
    # a quotation that runs on past the lead's quote is quoted whole (at most two more sentences)
    last, added = max(checks[lead_i].sources), 0
    while added < 2 and _open_quotation(" ".join(ev.srcs[j].sentence.text for j in sorted(cited))):
        if (nxt := ev.next_in_article(last)) is None:
            break
        last = nxt
        if nxt in cited:
            continue  # already in the answer
        added += 1
        doc = ev.srcs[nxt].passage.doc.id
        at = max([1] + [p + 1 for p, k in enumerate(kept) if any(ev.srcs[j].passage.doc.id == doc and j < nxt for j in k[1].sources)])
        kept.insert(at, (quoted(ev.srcs[nxt].sentence.text), verify.Check(True, [nxt], 1.0), True))
        cited.add(nxt)
        stated |= content_words(ev.srcs[nxt].sentence.text)
    # a why question gets every reason the best evidence states: one the model left out is quoted
    if _EXPLAIN.search(question):
        # the best evidence, and the sentence after each quote already cited (one reason often leads to the next)
        after = [n for j in sorted(cited) if (n := ev.next_in_article(j)) is not None]
        for j in dict.fromkeys(ev.best() + after):
            src = ev.srcs[j]
            words = content_words(src.sentence.text)
            new = words - stated
            if j in cited or len(new) < 3 or len(new) / max(len(words), 1) < 0.4 or not verify.states_cause(src.sentence.text):
                continue
            about = verify.about_question(question, [src], ev.common)
            if about.score < 0.8 * lead_about or not about.years:
                continue
            kept.append((quoted(src.sentence.text), verify.Check(True, [j], 1.0), True))
            stated |= words
            cited.add(j)
    return _render(question, ev, draft, kept, dropped, raw_of, timings, backend, signals)


def restates(question: str, claim: str, common: frozenset[str]) -> bool:
    """A why/how answer sentence that adds nothing but a date to the question ("X stopped Y on Monday") explains nothing."""
    if not _EXPLAIN.search(question):
        return False
    names, _, words = verify.new_terms(claim, question, common)
    dates = content_words(" ".join(WEEKDAYS + MONTHS))
    names = [n for n in names if not set(n) <= set(WEEKDAYS + MONTHS)]
    return not names and not (words - dates - {w for w in words if w.isdigit()})


def timeline(
    question: str, ev: Evidence, raw_of: Callable[[str], str], timings: Timings, backend: str, settings: Settings
) -> Answer:
    """One entry per year the sources report on the question's subject, each the best-matching source sentence, oldest first.

    A sentence's year is the earliest year it names itself (within the question's range, when the
    question gives one), "last year" counts from its article's date, and otherwise it is the
    year its article was published.
    """
    asked = sorted(int(y) for y in years(question))
    lo, hi = (asked[0], asked[-1]) if len(asked) >= 2 else ((asked[0], 9999) if asked else (0, 9999))
    if not len(ev.srcs):
        return abstained(question, ev.passages, timings, backend, "no passage is about the question", "off topic")
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
        return abstained(question, ev.passages, timings, backend, "no dated passage is about the question", "off topic")
    kept = []
    for year in sorted(best):
        _, i, label = best[year]
        kept.append((f"{label}: {quoted(ev.srcs[i].sentence.text)}", verify.Check(True, [i], 1.0), True))
    return _render(question, ev, Draft(None, ""), kept, [], raw_of, timings, backend, {}, kind=Kind.TIMELINE)


def _first_sentence(ev: Evidence, doc_id: str) -> SourceSentence | None:
    return next((s for s in ev.srcs if s.passage.doc.id == doc_id), None)


def quoted(text: str) -> str:
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
        if not about.years or about.score < 0.8 * lead_about or verify.stale(question, [s], ev.as_of):
            continue  # another subject, another year, or a report from before the days asked about
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


def says_more(quote: str, sentence: str, question: str, short: str | None, ev: Evidence, longest: int = 400) -> bool:
    """Whether a (short enough) quote states the answer and names something the sentence paraphrasing it left out."""
    if not quote or len(quote) > longest or (short and not verify.names_answer(short, quote, question, ev.common)):
        return False
    names, nums, _ = verify.new_terms(quote, question + " " + sentence, ev.common)
    have = verify.words_of(sentence)
    return any(not verify.carries(n, have) for n in names) or bool(nums - verify.numbers(sentence))


def _open_quotation(text: str) -> bool:
    """A quotation opened in ``text`` and not closed there (“ without ”, or an odd number of straight quotes)."""
    return text.count("“") > text.count("”") or text.count('"') % 2 == 1


def _leave_out(
    question: str, asked_years: set[str], claim: str, chk: verify.Check, stated: set[str], ev: Evidence, lead_about: float, lead_in: str = ""
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
    about = verify.about_question(question, [ev.srcs[j] for j in chk.sources], ev.common, lead_in)
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
    timings: Timings,
    backend: str,
    signals: dict[str, float],
    kind: Kind = Kind.ANSWER,
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
                        inherited=dict(src.passage.doc.inherited),
                    )
                )
                by_span[key] = citations[-1].n
            nums.append(by_span[key])
        sentences.append(AnswerSentence(text=claim, citations=nums, supported=chk.supported, quoted=quoted))
        rendered.append(claim + "".join(f" [{n}]" for n in nums))
    if kind is Kind.ANSWER:
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


def abstained(question: str, passages: list[Passage], timings: Timings, backend: str, reason: str | None = None, check: str | None = None) -> Answer:
    """"The sources do not answer", keeping the passages as related reading; ``check`` names the check that withheld it (CHECKS)."""
    return Answer(question, ABSTAIN_TEXT, True, [], [], passages, timings, backend, abstain_reason=reason, abstain_check=check)


def is_why(question: str) -> bool:
    """A question that asks for reasons ("why", "what led to", "the reasons for")."""
    return bool(_EXPLAIN.search(question))


def is_aside(claim: str) -> bool:
    """A sentence the model itself marks as beside the question ("The source also mentions ...")."""
    return bool(_ASIDE.match(claim))
