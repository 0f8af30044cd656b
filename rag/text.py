"""Low-level text helpers shared by indexing, retrieval and answering: sentences, words, numbers, names, dates.

Nothing here knows about documents or indexes; every other module may import it.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bm25s.tokenization import Tokenized
    from nltk.tokenize.punkt import PunktTokenizer
    from Stemmer import Stemmer

# ---------------------------------------------------------------- sentences


@lru_cache(maxsize=1)
def punkt() -> PunktTokenizer:
    """NLTK's Punkt sentence splitter, which gives sentence *spans* (offsets need them).

    Punkt ships inside llama-index-core's wheel (leave NLTK_DATA unset). Its folder is found
    without importing llama-index (a second of start-up); llama-index's own helper, which points
    NLTK at the same folder, is the fallback.
    """
    import importlib.util
    import os

    import nltk
    from nltk.tokenize.punkt import PunktTokenizer

    spec = importlib.util.find_spec("llama_index.core")
    bundled = os.path.join(next(iter(spec.submodule_search_locations)), "_static", "nltk_cache") if spec else ""
    if "NLTK_DATA" not in os.environ and os.path.isdir(os.path.join(bundled, "tokenizers", "punkt_tab")):
        if bundled not in nltk.data.path:
            nltk.data.path.append(bundled)
    else:
        from llama_index.core.utils import globals_helper

        globals_helper.wait_for_nltk_check()  # adds the bundled nltk_cache to nltk.data.path
    return PunktTokenizer("english")


# Where Punkt may see a sentence end: ".", "?" or "!" before a space or closing punctuation
# (its own candidate test, without the word before). Punkt costs tens of microseconds per
# candidate, so callers count them to bound the work on text that is mostly punctuation.
_SENTENCE_END = re.compile(r"""[.?!](?=[\s)"';}\]*:@({\[!?\u2019\u201d])""")
# Punkt gets at most this many characters at once: NLTK runs each of its regex scans under a
# 5-second ReDoS timeout, which one multi-megabyte line exceeds.
SENTENCE_WINDOW = 10_000
_WINDOW_TAIL = 2_000  # how far back from a window's end a sentence end or space is looked for
_WINDOW_CUT = re.compile(r"""[.?!]["')\]\u2019\u201d]*\s""")  # a sentence end with its closing quotes


def sentence_end_count(text: str) -> int:
    """How many places in ``text`` Punkt would test as sentence ends."""
    return len(_SENTENCE_END.findall(text))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``, in linear time on any input.

    Text without a sentence-end mark is one sentence (what Punkt gives, without its per-call
    cost); longer text goes to Punkt in windows of at most ``SENTENCE_WINDOW`` characters, cut
    after a sentence end or at a space; a window Punkt still gives up on stays one span.
    """
    spans: list[tuple[int, int]] = []
    for ws, we in _windows(text):
        piece = text[ws:we]
        if not _SENTENCE_END.search(piece):
            end = len(piece.rstrip())
            found = [(0, end)] if end else []
        else:
            try:
                found = list(punkt().span_tokenize(piece))
            except TimeoutError:
                end = len(piece.rstrip())
                found = [(0, end)] if end else []
        spans.extend((ws + s, ws + e) for s, e in found)
    return spans


def _windows(text: str) -> list[tuple[int, int]]:
    """``text`` cut into pieces of at most ``SENTENCE_WINDOW`` characters, preferably after a sentence end."""
    out: list[tuple[int, int]] = []
    pos = 0
    while len(text) - pos > SENTENCE_WINDOW:
        hi = pos + SENTENCE_WINDOW
        lo = hi - _WINDOW_TAIL
        ends = [m.end() for m in _WINDOW_CUT.finditer(text, lo, hi)]
        cut = ends[-1] if ends else max(text.rfind(c, lo, hi) for c in " \n\t")
        cut = cut if cut > pos else hi
        while cut < len(text) and text[cut].isspace() and cut - pos < SENTENCE_WINDOW:
            cut += 1  # the next piece starts at its first word
        out.append((pos, cut))
        pos = cut
    out.append((pos, len(text)))
    return out


def strip_tags(html_text: str) -> str:
    """``html_text`` without its tags. A tag ends at the next ``<`` too, which keeps this linear
    where ``<[^>]*>`` rescans to the end of the text after each unclosed ``<``."""
    return _TAG.sub("", html_text)


_TAG = re.compile(r"<[^<>]*>")


# ---------------------------------------------------------------- words

WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*|\d+(?:[.,]\d+)*")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_POSSESSIVE = re.compile(r"['’]s?$")
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}


@lru_cache(maxsize=1)
def stemmer() -> Stemmer:
    """The Snowball English stemmer (PyStemmer), shared by BM25 and the overlap measures."""
    import Stemmer

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    extra = {"said", "says", "according", "report", "reported", "also", "would", "could", "one", "two", "its", "it's", "us", "mr", "ms"}
    return frozenset(STOPWORDS_EN) | extra


@lru_cache(maxsize=16384)
def content_words(text: str) -> frozenset[str]:
    """Lower-cased, stemmed content words (numbers kept), for overlap measures.

    Cached: each source sentence is compared several times per question.
    """
    words = [_POSSESSIVE.sub("", w.lower()).strip("'’-") for w in WORD.findall(text)]
    words = [w for w in words if w and w not in stopwords() and (len(w) > 2 or w.isdigit())]
    return frozenset(stemmer().stemWords(words))


@lru_cache(maxsize=16384)
def stated_words(text: str) -> frozenset[str]:
    """:func:`content_words`, a compound counted as its parts too: "a two-year hiatus" states "two years", "Gaza-based" speaks of Gaza.

    For checking what a sentence states; choosing which sentences the model reads keeps to
    content_words, so that a change here never changes a prompt.
    """
    parts = " ".join(w.replace("-", " ") for w in WORD.findall(text) if "-" in w)
    return content_words(text) | content_words(parts) if parts else content_words(text)


def numbers(text: str) -> set[str]:
    """Numbers in ``text``, thousands separators dropped ("1,000" = "1000"), number words as digits."""
    found = {n.replace(",", "") for n in NUMBER.findall(text)}
    found |= {_NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", text.lower()) if w in _NUMBER_WORDS}
    return found


def years(text: str) -> set[str]:
    return set(YEAR.findall(text))


def bm25_tokenize(texts: list[str]) -> Tokenized:
    """bm25s tokens with English stopwords and the shared stemmer."""
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", stemmer=stemmer(), show_progress=False)


_BM25_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s.tokenize's default token_pattern


@lru_cache(maxsize=1)
def _bm25_stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def has_index_words(text: str) -> bool:
    """Whether ``bm25_tokenize`` keeps any word of ``text`` (two or more letters or digits, not a stopword).

    bm25s cannot build an index over texts without one. Checked word by word up to the first
    kept one, as bm25s reads them (lower-cased, same pattern, same stopwords), rather than by
    tokenizing the whole text.
    """
    sw = _bm25_stopwords()
    return any(m.group(0) not in sw for m in _BM25_TOKEN.finditer(text.lower()))


# ---------------------------------------------------------------- names
# Words that start a sentence with a capital without naming anything, and honorifics that a name
# may or may not carry ("President Joe Biden" and "Biden" name the same man).
_TITLES = frozenset(
    "president vice prime minister foreign secretary general chief leader supreme ayatollah king queen prince princess "
    "sen senator rep representative gov governor mayor judge justice dr mr mrs ms sir lord lady pope sheikh "
    "official spokesman spokeswoman spokesperson commander director chairman ceo former late".split()
)
_CONNECTORS = frozenset({"of", "al", "el", "bin", "ibn", "de", "la", "van", "von", "da", "der", "the", "and", "for"})
_NAME = re.compile(r"(?:[A-Z][\w'’.-]*|\d+(?:[.,]\d+)*)(?:\s+(?:(?:of|al|el|bin|ibn|de|la|van|von|da|der|the|and|for)\s+)*[A-Z][\w'’.-]*)*")
_ASKING = frozenset("why what which who whom whose when where how whether".split())
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def name_tokens(text: str, common: frozenset[str] = frozenset()) -> list[tuple[str, ...]]:
    """Capitalised names in ``text`` ("Mahmoud al-Zahar", "As-Safir", "Lebanese", "US"), each as lower-case tokens.

    A capitalised word that is only capitalised because it starts a sentence is not a name: one
    whose lower-case form is a stopword or occurs in ``common`` (words seen lower-case nearby).
    Honorifics are dropped; month and weekday names are kept (dates are checked as words too).
    """
    out: list[tuple[str, ...]] = []
    for m in _NAME.finditer(text):
        words = [_POSSESSIVE.sub("", w.strip("'’.-").lower()) for w in re.split(r"\s+", m.group(0))]
        words = [w for w in words if w]
        # the sentence's first word, or one after a colon or quote, may be capitalised for grammar only
        at_start = m.start() == 0 or re.search(r"[.!?:;“\"(]\s*$", text[: m.start()]) is not None
        if at_start and words and (words[0] in stopwords() or words[0] in common or words[0] in _ASKING) and words[0] not in MONTHS:
            words = words[1:]
        # "al-Zahar" and "As-Safir" are matched word by word, as quotes are ("al", "zahar")
        parts = [p for w in words for p in re.findall(r"[a-z0-9]+", w)]
        tokens = tuple(p for p in parts if p not in _TITLES and p not in _CONNECTORS and not p.isdigit() and len(p) > 1)
        if tokens:
            out.append(tokens)
    return out


def same_word(a: str, b: str) -> bool:
    """Two lower-case words for the same thing: equal, or one a form of the other ("iran"/"iranian", "lebanon"/"lebanese")."""
    if a == b:
        return True
    shorter = min(len(a), len(b))
    if shorter < 4:
        return False
    common = len(_common_prefix(a, b))
    return common >= max(4, shorter - 2)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


# ---------------------------------------------------------------- dates
_MONTHS_RX = (
    "January|February|March|April|May|June|July|August|September|October|November|December|"
    "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
)
MONTH_NUM = {
    m.lower(): ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"].index(m[:3].lower()) + 1
    for m in _MONTHS_RX.split("|")
}
DATE_MDY = re.compile(rf"\b({_MONTHS_RX})\.? (\d{{1,2}}),? (\d{{4}})\b")
DATE_DMY = re.compile(rf"\b(\d{{1,2}}) ({_MONTHS_RX}),? (\d{{4}})\b")
DATE_ISO = re.compile(r"\b(\d{4})[-/](\d{2})[-/](\d{2})(?!\d)")


def parse_date(text: str) -> str | None:
    """The first date in ``text`` ("March 25, 2014", "25 March 2014", "2014-03-25", "2014/03/25") as ISO 8601, or None."""
    for rx, order in ((DATE_ISO, "ymd"), (DATE_MDY, "mdy"), (DATE_DMY, "dmy")):
        m = rx.search(text)
        if not m:
            continue
        g = m.groups()
        if order == "ymd":
            y, mo, d = int(g[0]), int(g[1]), int(g[2])
        elif order == "mdy":
            y, mo, d = int(g[2]), MONTH_NUM[g[0].lower()], int(g[1])
        else:
            y, mo, d = int(g[2]), MONTH_NUM[g[1].lower()], int(g[0])
        try:
            return date(y, mo, d).isoformat()
        except ValueError:
            continue
    return None


_ISO_PERIOD = re.compile(r"(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?")


def iso_period(text: str) -> tuple[date, date] | None:
    """The first and last day of "YYYY-MM-DD", "YYYY-MM" or "YYYY", or None when ``text`` is none of them."""
    m = _ISO_PERIOD.fullmatch(text.strip())
    if not m:
        return None
    y, mo, d = (int(g) if g else None for g in m.groups())
    try:
        if d is not None:
            day = date(y, mo, d)
            return day, day
        if mo is not None:
            return date(y, mo, 1), date(y, mo, calendar.monthrange(y, mo)[1])
        return date(y, 1, 1), date(y, 12, 31)
    except ValueError:  # month 13, 30 February, year 0
        return None


# A news article's date is no earlier than this; later than a year from today it is misread or hostile.
# Dates outside are never stored (the article is undated) and never computed with: a year of
# 99999999999 overflows ``date``, and 9999-12-31 would rank first as "latest" and overflow a window.
EARLIEST_DATE = date(1800, 1, 1)
FUTURE_DAYS = 366


def latest_date(today: date | None = None) -> date:
    """The latest publication date taken as real: a year after ``today``."""
    return (today or date.today()) + timedelta(days=FUTURE_DAYS)


def in_range(day: date, today: date | None = None) -> bool:
    """``day`` lies between :data:`EARLIEST_DATE` and :func:`latest_date`."""
    return EARLIEST_DATE <= day <= latest_date(today)


def sane_date(value: object, today: date | None = None) -> str | None:
    """``value`` when it is an ISO date, year-month or year (a time after the day is dropped) in the sane
    range; else None: the article is undated rather than dated by a misread or hostile value."""
    if not isinstance(value, str) or not value.strip():
        return None
    day = value.strip()[:10]
    found = iso_period(day)
    if found is None or not (in_range(found[0], today) and in_range(found[1], today)):
        return None
    return day


def as_date(text: str | None) -> date | None:
    """An ISO date, year-month or year as a ``date``: a bare year-month counts as mid-month, a bare year as mid-year.

    None for anything else, and for a date outside the sane range (:func:`in_range`).
    """
    if not isinstance(text, str) or not text:
        return None
    parts = text[:10].split("-")
    try:
        y = int(parts[0])
        m = int(parts[1]) if len(parts) > 1 else 7
        d = int(parts[2]) if len(parts) > 2 else (15 if len(parts) > 1 else 1)
        day = date(y, m, d)
    except (ValueError, IndexError, OverflowError):  # OverflowError: a year past C's int
        return None
    return day if in_range(day) else None


def date_words(iso: str | None) -> set[str]:
    """The words a sentence may use for an article's date: its year, month name and day ("2013-08" gives 2013, august)."""
    if not iso:
        return set()
    parts = iso.split("-")
    out = {parts[0]}
    if len(parts) > 1 and parts[1].isdigit() and 1 <= int(parts[1]) <= 12:
        out.add(MONTHS[int(parts[1]) - 1])
    if len(parts) > 2 and parts[2].isdigit():
        out.add(str(int(parts[2])))
    return out


def human_date(iso: str | None) -> str | None:
    """"2013-08" → "August 2013", "2014-03-25" → "25 March 2014"; None stays None."""
    if not iso:
        return None
    parts = iso.split("-")
    if len(parts) == 1:
        return parts[0]
    try:
        month = MONTHS[int(parts[1]) - 1].capitalize()
    except (ValueError, IndexError):
        return iso
    return f"{int(parts[2])} {month} {parts[0]}" if len(parts) > 2 and parts[2].isdigit() else f"{month} {parts[0]}"
