"""Which articles a question may draw on by date: an explicit range (since/until) and the "latest" rule.

An article's date may be a day, a month or a year ("2014-03-25", "2013-08", "2013"); it is read
as that whole period, and an article is in a range when its period overlaps it: an article of
"August 2013" may be from any day of August, so a range starting on 15 August cannot rule it out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

from .text import EARLIEST_DATE, as_date, human_date, in_range, iso_period, latest_date
from .types import Document, RagError


def period(value: str | date, name: str) -> tuple[date, date]:
    """The first and last day ``value`` stands for; a RagError naming ``name`` when it is no date."""
    if isinstance(value, date):
        found = (value, value)
    else:
        found = iso_period(value) if isinstance(value, str) else None
    if found is None:
        raise RagError(f"{name} {value!r} is not a date: use YYYY-MM-DD, YYYY-MM or YYYY (e.g. 2014-03-25, 2014-03 or 2014)")
    _check_range(found[0], value, name)
    _check_range(found[1], value, name)
    return found


def _check_range(day: date, value: object, name: str) -> None:
    """A RagError naming ``name`` when ``day`` is outside the dates articles can have (the windows
    counted back from it, or a day after it, would leave the calendar)."""
    if not in_range(day):
        shown = value.isoformat() if isinstance(value, date) else value
        raise RagError(f"{name} {shown!r} is outside the dates news articles have: give one from {EARLIEST_DATE.isoformat()} to {latest_date().isoformat()}")


def question_date(as_of: str | date | None) -> date | None:
    """The date a question is asked as of (``as_of``: YYYY-MM-DD or a date), checked; None when not given."""
    if as_of is None or (isinstance(as_of, str) and not as_of.strip()):
        return None
    if isinstance(as_of, date):
        asked = as_of
    else:
        try:
            # the whole value: "2014-03-25junk" is a mistake to point out, not a date to guess at
            asked = date.fromisoformat(as_of.strip()) if isinstance(as_of, str) else None
        except ValueError:
            asked = None
        if asked is None:
            raise RagError(f"as_of must be an ISO date (YYYY-MM-DD), not {as_of!r}")
    _check_range(asked, as_of, "as_of")
    return asked


def article_period(doc_date: str | None) -> tuple[date, date] | None:
    """The days an article's date covers; None when it has none (or one that is no ISO date: unknown)."""
    return iso_period(doc_date[:10]) if doc_date else None


@dataclass(frozen=True)
class DateRange:
    """Publication dates retrieval is limited to (either end may be open)."""

    since: date | None = None
    until: date | None = None
    # an explicit range keeps undated articles out (and the answer says how many); the "latest"
    # rule's window keeps them, as they may well be recent
    keep_undated: bool = False

    def holds(self, doc_date: str | None) -> bool:
        days = article_period(doc_date)
        if days is None:
            return self.keep_undated
        return (self.since is None or days[1] >= self.since) and (self.until is None or days[0] <= self.until)

    def __str__(self) -> str:
        a, b = (human_date(d.isoformat()) if d else None for d in (self.since, self.until))
        if a and b:
            return a if a == b else f"{a} to {b}"
        return f"since {a}" if a else f"until {b}" if b else "any date"


def parse_range(since: str | date | None = None, until: str | date | None = None) -> DateRange | None:
    """The range from ``since`` (its first day) to ``until`` (its last day); None when neither is given.

    "2014" as both means the whole of 2014; "2014-03" the whole of March 2014.
    """
    since = None if since is None or (isinstance(since, str) and not since.strip()) else since
    until = None if until is None or (isinstance(until, str) and not until.strip()) else until
    if since is None and until is None:
        return None
    first = period(since, "since")[0] if since is not None else None
    last = period(until, "until")[1] if until is not None else None
    if first and last and first > last:
        raise RagError(f"since {since} is after until {until}: no date is in that range")
    return DateRange(first, last)


NO_DAY = -1  # the day number of an article without a date (real ones, date.toordinal, start at 1)


@dataclass(frozen=True)
class ArticleDates:
    """Every article's date as day numbers, read once per index generation.

    Date ranges and the "latest" rule then test all articles in one numpy expression, and the
    recency prior looks up the few articles ranked, instead of parsing every date per question.
    """

    ids: list[str]  # article ids, in the order of the arrays
    first: np.ndarray  # first day of the period the date stands for (article_period), or NO_DAY
    last: np.ndarray
    published: np.ndarray  # the day the recency prior counts from (text.as_date: a month is its 15th), or NO_DAY

    @classmethod
    def of(cls, docs: Iterable[Document]) -> ArticleDates:
        ids, first, last, published = [], [], [], []
        for d in docs:
            days, day = article_period(d.date), as_date(d.date)
            ids.append(d.id)
            first.append(days[0].toordinal() if days else NO_DAY)
            last.append(days[1].toordinal() if days else NO_DAY)
            published.append(day.toordinal() if day else NO_DAY)
        return cls(ids, *(np.array(a, dtype=np.int64) for a in (first, last, published)))

    @property
    def dated(self) -> np.ndarray:
        return self.first != NO_DAY

    def holding(self, rng: DateRange) -> np.ndarray:
        """Per article, :meth:`DateRange.holds` of its date."""
        ok = np.ones(len(self.ids), dtype=bool)
        if rng.since is not None:
            ok &= self.last >= rng.since.toordinal()
        if rng.until is not None:
            ok &= self.first <= rng.until.toordinal()
        return np.where(self.dated, ok, rng.keep_undated)

    def newest(self, today: date | None = None) -> date | None:
        """The newest publication date (its last day), ignoring dates after ``today`` (misread or wrong)."""
        today = today or date.today()
        ends = self.last[self.dated & (self.first <= today.toordinal())]
        return min(date.fromordinal(int(ends.max())), today) if len(ends) else None


# The "latest" rule. A question that asks for the newest reports, or names a period counted back
# from now, is read against an anchor date, without the user setting anything:
# - The anchor is ``as_of`` when given, else the newest article date in the index (never after
#   today): an archive's "now" is its newest report. Today's date would put every article of a
#   2017 archive outside "this week"; for a live feed the two are a day or so apart.
# - "this week"/"past week" (7 days), "last week" (14), "this month"/"past month" (31), "last month"
#   (from the 1st of the month before), "this year" (from 1 January): retrieval keeps the articles
#   published in that window up to the anchor (a day's grace for time zones), when the window
#   holds any; undated articles stay in. The articles nearest the anchor also rank first.
# - "latest", "newest", "recent(ly)", "most recent": no window; the articles published in the days
#   before the anchor rank first (the recency prior of rag.index.retrieval). Without ``as_of`` the anchor
#   is the newest date among the articles the question reaches, not the index's: "the latest on X"
#   is the newest report about X, however old.
# An explicit since/until replaces the window. The prompt is not told: the passages are the recent ones.
_WINDOW = re.compile(r"\b(this|past|last) (week|month)\b|\bthis year\b", re.I)
_LATEST = re.compile(r"\b(latest|newest|recent(ly)?)\b", re.I)


def _window(phrase: str, anchor: date) -> date:
    """The first day of the period ``phrase`` ("this week", "last month") names, counted back from ``anchor``."""
    which, unit = phrase.lower().split()
    if unit == "year":
        return date(anchor.year, 1, 1)
    if unit == "week":
        return anchor - timedelta(days=13 if which == "last" else 6)
    if which == "last":
        first_this_month = anchor.replace(day=1)
        return (first_this_month - timedelta(days=1)).replace(day=1)
    return anchor - timedelta(days=30)


@dataclass
class DatePlan:
    """How dates shape one question's retrieval."""

    range: DateRange | None = None  # what retrieval is limited to
    as_of: str | None = None  # the date the recency prior counts back from
    newest_first: bool = False  # no date given: count back from the newest article the question reaches
    notes: list[str] = field(default_factory=list)  # said with the answer
    empty: str | None = None  # why no article can answer: an explicit range that holds none


def plan(question: str, as_of: str | None, explicit: DateRange | None, articles: ArticleDates, today: date | None = None) -> DatePlan:
    """Apply an explicit range, or else the "latest" rule above, to a question over the ``articles``."""
    asked = question_date(as_of)
    as_of = asked.isoformat() if asked else None
    if explicit is not None:
        out = DatePlan(range=explicit, as_of=as_of)
        undated = int((~articles.dated).sum())
        if undated:
            out.notes.append(f"{undated} undated article{' was' if undated == 1 else 's were'} left out of the date range.")
        if not articles.holding(explicit).any():
            out.empty = f"no indexed article was published {_in(explicit)}"
        return out
    window = _WINDOW.search(question)
    if window:
        anchor = asked or articles.newest(today)
        if anchor is not None:
            rng = DateRange(_window(window.group(0), anchor), anchor + timedelta(days=1), keep_undated=True)
            if (articles.dated & articles.holding(rng)).any():
                whose = "" if asked else ", up to the newest article"
                span = DateRange(rng.since, anchor)
                note = f"“{window.group(0)}” read as {span}{whose}."
                return DatePlan(range=rng, as_of=anchor.isoformat(), notes=[note])
    if _LATEST.search(question) and not asked:
        return DatePlan(newest_first=True, notes=["The newest reports on the question are ranked first."])
    return DatePlan(as_of=as_of)


def _in(rng: DateRange) -> str:
    if rng.since and rng.until:
        return f"on {rng}" if rng.since == rng.until else f"between {human_date(rng.since.isoformat())} and {human_date(rng.until.isoformat())}"
    return str(rng)


def select_documents(
    docs: Iterable[Document], sort: str = "date", dates: DateRange | None = None, outlet: str | None = None
) -> tuple[list[Document], int]:
    """The articles to list, filtered by date range and outlet (a case-blind part of its name) and sorted
    by date (oldest first), outlet or title; and how many undated articles the range left out."""
    if sort not in ("date", "outlet", "title"):
        raise RagError(f"cannot sort by {sort!r}: sort by date, outlet or title")
    docs = list(docs)
    undated = 0
    if dates is not None:
        undated = sum(article_period(d.date) is None for d in docs)
        docs = [d for d in docs if dates.holds(d.date)]
    if outlet and outlet.strip():
        want = outlet.strip().casefold()
        docs = [d for d in docs if want in (d.outlet or "").casefold()]
    last = "\U0010ffff"  # what a list sorted by outlet or title does not know goes last
    keys = {
        "date": lambda d: (d.date or "", d.id),
        "outlet": lambda d: ((d.outlet or last).casefold(), d.date or "", d.id),
        "title": lambda d: ((d.title or last).casefold(), d.id),
    }
    return sorted(docs, key=keys[sort]), undated
