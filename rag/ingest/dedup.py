"""Near-duplicate reports: the same story syndicated or re-posted under other names.

Articles are compared on hashed word 5-grams. Indexing marks whole articles that repeat another
(:func:`mark_duplicates`, which also lets copies fill in each other's date and outlet); retrieval
folds passages that repeat one already shown, at ``Settings.dup_threshold``.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Mapping

from ..types import Document

# An article is a copy of another when this share of the shorter one's 5-grams occurs in the other:
# a syndicated copy with its own headline, credit line and page furniture stays well above it,
# while a follow-up report that quotes a paragraph of the first stays below. Passages are folded
# at the lower Settings.dup_threshold because a short passage differs in a few words at its ends.
SAME_REPORT = 0.8


def shingles(text: str, n: int = 5) -> set[int]:
    """Hashed word n-grams, for near-duplicate detection.

    CRC-32, not Python's ``hash``: that one changes from process to process, and an index keeps a
    sample of each article's shingles to find the reports a later article repeats.
    """
    words = re.findall(r"\w+", text.lower())
    if len(words) < n:
        return {zlib.crc32(" ".join(words).encode())} if words else set()
    return {zlib.crc32(" ".join(words[i : i + n]).encode()) for i in range(len(words) - n + 1)}


def containment(a: set[int], b: set[int]) -> float:
    """Share of the smaller set found in the other: 1.0 when one text repeats the other."""
    if not a or not b:
        return 0.0
    return len(a & b) / min(len(a), len(b))


def mark_duplicates(docs: list[Document], threshold: float = SAME_REPORT) -> None:
    """Set ``duplicate_of`` on each document that repeats another.

    The copy kept as canonical is the one whose page states the most (date, outlet, title),
    so citations show a date wherever any copy of the report has one. Candidates come from an
    inverted index over a sample of each article's shingles (an eighth, all of a short one), so
    thousands of articles are not compared pair by pair; each candidate is then checked exactly.
    Then each copy fills in what it does not state from the others (:func:`inherit_metadata`).
    """
    for d in docs:  # values filled in by an earlier marking are not the page's own: judge each copy by what it states
        for name in d.inherited:
            setattr(d, name, None)
        d.inherited = {}
    ordered = sorted(docs, key=lambda d: (-(bool(d.date) + bool(d.outlet) + bool(d.title)), d.id))
    postings: dict[int, list[int]] = {}
    sh: list[set[int]] = []
    for i, d in enumerate(ordered):
        sh.append(shingles(d.text))
        found_by = sample(sh[i])
        d.duplicate_of = None
        candidates = sorted({j for h in found_by for j in postings.get(h, ())})
        for j in candidates:  # earlier (richer) documents first
            if containment(sh[i], sh[j]) >= threshold:
                d.duplicate_of = ordered[j].id
                break
        if d.duplicate_of is None:  # only canonical reports are matched against
            for h in found_by:
                postings.setdefault(h, []).append(i)
    inherit_metadata(docs)


INHERITED = ("date", "outlet", "title", "author")  # what one copy of a report says of all of them (never the url: each copy has its own)


def inherit_metadata(docs: list[Document]) -> None:
    """Fill in each copy's missing metadata from the copy of the same report that states it.

    The canonical copy is asked first, then the others by id. What is filled in is recorded in
    ``Document.inherited`` (field -> the copy it came from), so it can be shown as such.
    """
    copies: dict[str, list[Document]] = {}
    for d in sorted(docs, key=lambda d: (d.duplicate_of is not None, d.id)):
        copies.setdefault(d.duplicate_of or d.id, []).append(d)
    for group in copies.values():
        for name in INHERITED:
            source = next((c for c in group if getattr(c, name)), None)
            if source is None:
                continue
            for d in group:
                if not getattr(d, name):
                    setattr(d, name, getattr(source, name))
                    d.inherited[name] = source.id


def sample(sh: set[int]) -> set[int]:
    """The shingles an article is found by as a candidate copy: an eighth of them, all of a short one."""
    return sh if len(sh) < 64 else {h for h in sh if h % 8 == 0}


def affected(
    seeds: Iterable[str],
    docs: Mapping[str, Document],
    sharing: Callable[[set[int]], Iterable[str]],
    threshold: float = SAME_REPORT,
) -> set[str]:
    """The articles whose duplicate marks may change when ``seeds`` arrive, change or go.

    Marking these alone with :func:`mark_duplicates` gives what marking all of ``docs`` would: they
    are closed under "is a candidate copy of" (a shared shingle sample, then exact containment at
    ``threshold``, the relation :func:`mark_duplicates` follows) and hold every article of each
    report they touch, so nothing outside them can match anything inside. ``docs``: every article
    after the change (the removed ones' copies among the seeds); ``sharing``: the articles whose
    stored shingle sample holds one of the given hashes. Only these articles' texts are shingled,
    so an update costs what its own articles cost, not what the index holds.
    """
    copies: dict[str, list[str]] = {}
    for d in docs.values():
        if d.duplicate_of:
            copies.setdefault(d.duplicate_of, []).append(d.id)

    def report(doc_id: str) -> list[str]:  # every copy of the report an article belongs to
        d = docs[doc_id]
        head = d.duplicate_of if d.duplicate_of in docs else doc_id
        return [head, *copies.get(head, []), *copies.get(doc_id, [])]

    found: set[str] = set()
    todo = [i for s in seeds if s in docs for i in report(s)]
    sh: dict[str, set[int]] = {}
    while todo:
        doc_id = todo.pop()
        if doc_id in found:
            continue
        found.add(doc_id)
        mine = sh.setdefault(doc_id, shingles(docs[doc_id].text))
        for other in set(sharing(sample(mine))) - found:
            if other in docs and containment(mine, sh.setdefault(other, shingles(docs[other].text))) >= threshold:
                todo.extend(report(other))
    return found
