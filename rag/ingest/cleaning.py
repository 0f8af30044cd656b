"""Cleaning an article: its text blocks (HTML or plain), news-page boilerplate dropped, metadata found, planted text kept out.

Cleaning never rewrites text: it decides which spans of the raw file are article content
(``Document.segments``), so every sentence and quote maps back to exact character offsets
of ``open(path).read()`` (for a record of a ``.jsonl``/``.json``/``.csv`` file: of its text
field's string, kept in the index as the record's raw text). No library does offset-preserving boilerplate removal for news
pages (trafilatura and friends return new strings), hence the hand-written rules below.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping
from html.parser import HTMLParser

from ..text import DATE_DMY, DATE_ISO, DATE_MDY, EARLIEST_DATE, has_index_words, latest_date, parse_date, sane_date
from ..types import SEGMENT_SEPARATOR, RagError, display_text, unshown_elements
from . import hostile

log = logging.getLogger(__name__)

_TIME = r"(\d{1,2}:\d{2}(\s?[ap]\.?m\.?)?|\d{1,2}\s?[ap]\.?m\.?)"

# A line that is nothing but a date (and time): the article's dateline. Its runs of spaces are
# possessive (``\s*+``): with plain ``\s*`` next to ``\s*`` a date followed by a long run of
# spaces takes cubic time.
_DATELINE = re.compile(
    rf"^\s*((Updated|Published|Posted)[:\s]++)?({DATE_MDY.pattern}|{DATE_DMY.pattern}|{DATE_ISO.pattern})"
    rf"(\s*+(,|at|-|\|)?\s*+{_TIME})?\s*+(\w{{2,4}})?\s*+$",
    re.IGNORECASE,
)

# Lines that are page furniture, never article text.
_BOILERPLATE_LINE = [
    # the day the page was viewed, e.g. "Sunday, November 28th | 25 Kislev 5782"
    re.compile(r"^\s*(Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day,\s+\w+\s+\d{1,2}(st|nd|rd|th)?\s*\|", re.I),
    re.compile(r"^\s*Cookie (Settings|Policy|Preferences)\s*$", re.I),
    re.compile(r"^\s*Share (this|on)\b.*$", re.I),
    re.compile(r"^\s*Let your voice be heard!?\s*$", re.I),
    re.compile(r"^\s*Join (the|our) [\w ]{2,40}$", re.I),
    re.compile(r"reCAPTCHA", re.I),
    re.compile(r"\(\s*photo credit:[^)]{0,300}\)\s*$", re.I),
    re.compile(r"^[^.!?]{0,200}\.\s*(Photo|Image|Picture)( credit)?:\s*[^.]{1,80}\.?\s*$", re.I),
    re.compile(r"^\s*\d+\s+min(ute)?s?\s+read\.?\s*$", re.I),
    re.compile(r"^\s*[\w.&' -]{2,60} contributed to this (report|story|article)\.?\s*$", re.I),
    re.compile(r"^\s*(Advertisement|Sponsored|Subscribe( now)?|Sign up for [\w ]++|Read more|Click here.*)\s*$", re.I),
    re.compile(r"^\s*(Facebook|Twitter|Email|Print|WhatsApp|LinkedIn)(\s+(Facebook|Twitter|Email|Print|WhatsApp|LinkedIn))*\s*$", re.I),
    # a kicker in capitals asking a question ("WILL THE EU continue to ...?"): a promo, not the story
    re.compile(r"^\s*[A-Z]{2,}\s+[A-Z]{2,}\s.*\?\s*$"),
]
# All of the above in one pattern, one scan per line. Each rule is written so that no line makes
# it backtrack more than a bounded amount (``[^)]{0,300}``, no nested repeats): lines can be
# megabytes long.
_BOILERPLATE_ANY = re.compile("|".join(f"(?{'i' if rx.flags & re.I else ''}:{rx.pattern})" for rx in _BOILERPLATE_LINE))
_CREDIT_LINE = re.compile(r"\s*\(\s*photo credit", re.I)  # the line after a photo's caption
_AUTHOR_LINE = re.compile(r"^\s*(avatar\s+)?by\s+([A-Z][\w.'-]+(\s+[A-Z][\w.'-]+){0,3})\s*$", re.I)

# Multi-line blocks: (first line, last line, most lines the block may span).
_APPEAL_START = re.compile(r"^\s*Dear (Reader|Readers|Subscriber)s?,?\s*$", re.I)
_APPEAL_END = re.compile(r"(Editor-in-Chief|Editor in Chief|\bCEO\b|Publisher)\s*$", re.I)
_TEASER_HEAD = re.compile(
    r"^\s*(Related (Content|coverage|Articles|Stories|News)|More (from|on) [\w ]++|Recommended|You may also like|Read also|Most (Read|Popular))\s*:?\s*$",
    re.I,
)

# Outlet names the page itself gives away (furniture, copyright lines). Extend as needed.
_OUTLET_PATTERNS = [
    (re.compile(r"\bThe Jerusalem Post\b|\bJerusalem Post Group\b"), "The Jerusalem Post"),
    (re.compile(r"\bAlgemeiner\b"), "The Algemeiner"),
    (re.compile(r"\bTimes of Israel\b"), "The Times of Israel"),
    (re.compile(r"(?:©|Copyright(?: ©)?)\s*(?:\d{4}\s*)?([A-Z][\w&.' -]{2,40}?)(?:\.|,|\s+All rights)", re.M), 1),
]


def clean_article(raw: str, name: str, is_html: bool, given: Mapping[str, str]) -> tuple[list[tuple[int, int]], str, dict[str, str]]:
    """The kept spans of an article's raw text, its cleaned text, and its metadata.

    ``given`` (a sidecar, a record's fields) overrides what the text states; RagError, starting
    with ``name``, when nothing of the article is left to index.
    """
    blocks, meta = _html_blocks(raw, name) if is_html else _text_blocks(raw)
    segments, found = clean_blocks(raw, blocks)
    if is_html and "title" in found:  # a headline line is raw HTML: "Tom &amp; Jerry" reads "Tom & Jerry"
        found["title"] = display_text(found["title"], True).strip()
    for k, v in found.items():
        meta.setdefault(k, v)
    meta.update(given)
    for key in hostile.planted_fields(meta):  # every citation shows these: read like the text (see rag.ingest.hostile)
        del meta[key]
    if meta.get("date") and sane_date(meta["date"]) is None:  # Document keeps it undated; the operator hears why
        where = "its sidecar or record field" if given.get("date") == meta["date"] else "the page's own date"
        log.warning("%s: date %r from %s is no date from %s to %s; indexed as undated", name, meta["date"], where, EARLIEST_DATE, latest_date())
    if not meta.get("outlet"):
        meta["outlet"] = _outlet(raw)
    shown = [display_text(raw[s:e], is_html) for s, e in segments]
    # text planted to steer a model is no article text: it never reaches the index (see rag.ingest.hostile)
    planted = hostile.dropped_paragraphs(shown)
    segments = [seg for k, seg in enumerate(segments) if k not in planted]
    shown = [t for k, t in enumerate(shown) if k not in planted]
    if not segments:
        why = "its text addresses an AI model, not readers" if planted else "no article text found after cleaning"
        raise RagError(f"{name}: {why}")
    text = SEGMENT_SEPARATOR.join(shown)
    if not has_index_words(text):
        raise RagError(f"{name}: no words to index (only numbers, punctuation or single letters)")
    return segments, text, meta


# ---------------------------------------------------------------- blocks
def _text_blocks(raw: str) -> tuple[list[tuple[int, int]], dict[str, str]]:
    """Non-empty lines of a text or markdown file as (start, end) spans; YAML front matter as metadata."""
    meta: dict[str, str] = {}
    pos = 1 if raw.startswith("\ufeff") else 0  # a UTF-8 byte-order mark, kept so offsets match open()
    if raw.startswith("---\n", pos):
        end = raw.find("\n---", pos + 4)
        if end != -1:
            for line in raw[pos + 4 : end].splitlines():
                if ":" in line:
                    k, v = line.split(":", 1)
                    k = k.strip().lower()
                    k = {"source": "outlet", "publisher": "outlet", "published": "date"}.get(k, k)
                    if k in ("title", "outlet", "author", "date", "url"):
                        meta[k] = v.strip().strip("\"'")
            pos = raw.find("\n", end + 4) + 1 or len(raw)
    hostile.settle_date(meta)  # the date field read as a date; prose in it is none
    blocks = []
    for m in re.finditer(r"[^\n]+", raw[pos:]):
        s, e = m.start() + pos, m.end() + pos
        # strip surrounding blanks and markdown heading/quote markers from the span
        while s < e and raw[s] in " \t#>":
            s += 1
        while e > s and raw[e - 1] in " \t":
            e -= 1
        if s < e:
            blocks.append((s, e))
    return blocks, meta


_BLOCK_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "div", "section", "article", "td", "br", "tr", "figcaption", "pre", "title"}
_SKIP_TAGS = {"script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg", "button", "select", "template", "iframe", "figcaption"}
# Skipped elements that may sit inside a paragraph without ending it (a browser shows none of them
# and runs the text on): the text on both sides stays one segment, and the element in it reads as
# nothing (rag.types.display_text). The other skipped elements are page furniture and end a block.
_INLINE_SKIP_TAGS = {"script", "style", "noscript"}
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# inline styles that keep an element off the screen: text a reader never sees is no article text
_HIDDEN_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*(hidden|collapse)|(font-size|opacity|max-height|height)\s*:\s*0+(\.0+)?\s*(px|pt|em|rem|%)?\s*(;|!|$)", re.I
)


def _is_hidden(attrs: dict[str, str | None]) -> bool:
    """An element a browser does not show (``hidden``, a hiding inline style) or hides from readers (``aria-hidden``)."""
    style = attrs.get("style") or ""
    return "hidden" in attrs or (attrs.get("aria-hidden") or "").strip().lower() == "true" or bool(_HIDDEN_STYLE.search(style))


class _HTMLBlocks(HTMLParser):
    """Text runs of an HTML page as raw-offset spans, broken at block elements."""

    def __init__(self, raw: str) -> None:
        super().__init__(convert_charrefs=False)
        self.raw = raw
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", raw)]
        self.blocks: list[tuple[int, int]] = []
        self.cur: list[int] | None = None
        self.skip = 0
        self.meta: dict[str, str] = {}
        self.in_title = False
        # raw (start, end of its first text run, end) of the <title> being read: its text comes in
        # runs, one per entity ("Tom", "&amp;", " Jerry"), and is read whole at </title>
        self.title_span: list[int] | None = None
        self.hidden: list[str | int] | None = None  # [tag, depth] of the hidden element being skipped
        # the text run goes on past an inline skipped element (a <script> in a <p>) only when
        # words follow it in the same block, not for the blanks before the block's end
        self.after_inline_skip = False

    def _offset(self) -> int:
        line, col = self.getpos()
        return self.line_starts[line - 1] + col

    def _flush(self) -> None:
        if self.cur is not None:
            s, e = self.cur
            while s < e and (self.raw[s].isspace() or self.raw[s] == "\ufeff"):  # or a byte-order mark
                s += 1
            while e > s and self.raw[e - 1].isspace():
                e -= 1
            if s < e:
                self.blocks.append((s, e))
        self.cur = None
        self.after_inline_skip = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "meta":
            key = (a.get("property") or a.get("name") or "").lower()
            val = a.get("content") or ""
            for names, field in (
                (("og:title", "twitter:title"), "title"),
                (("og:site_name", "publisher", "application-name"), "outlet"),
                (("article:published_time", "date", "pubdate", "publishdate", "dc.date"), "date"),
                (("author", "article:author"), "author"),
                (("og:url",), "url"),
            ):
                if key in names and val:  # HTMLParser has decoded the attribute's entities already
                    self.meta.setdefault(field, val)
        if tag == "link" and (a.get("rel") or "") == "canonical" and a.get("href"):
            self.meta.setdefault("url", a["href"])
        self._hide(tag, a)
        if tag in _SKIP_TAGS:
            if tag not in _INLINE_SKIP_TAGS or self.skip:
                self._flush()  # a text run never spans page furniture such as a <nav>
            self.skip += 1
        if tag == "title" and not self.skip:  # an <svg>'s <title> names an icon, not the page
            self.in_title = True
        if tag in _BLOCK_TAGS:
            self._flush()

    def _hide(self, tag: str, attrs: dict[str, str | None]) -> None:
        """Skip a hidden element's content up to its matching end tag (same-name elements inside it nest)."""
        if self.hidden and self.hidden[1] == 1 and ((tag == self.hidden[0] and tag in ("p", "li")) or (self.hidden[0] == "p" and tag in _BLOCK_TAGS)):
            self._unhide()  # a <p> or <li> left open ends where the next block starts, as in a browser
        if self.hidden is None:
            if tag not in _VOID_TAGS and _is_hidden(attrs):
                self._flush()
                self.hidden = [tag, 1]
                self.skip += 1
        elif tag == self.hidden[0]:
            self.hidden[1] += 1

    def _unhide(self) -> None:
        self._flush()
        self.hidden = None
        self.skip -= 1

    def handle_endtag(self, tag: str) -> None:
        if self.hidden and tag == self.hidden[0]:
            self.hidden[1] -= 1
            if not self.hidden[1]:
                self._unhide()
        if tag in _SKIP_TAGS and self.skip:
            self.skip -= 1
            if tag not in _INLINE_SKIP_TAGS or self.skip:
                self._flush()
            else:
                self.after_inline_skip = self.cur is not None
        if tag == "title" and self.in_title:
            self.in_title = False
            self._title(-1)
        if tag in _BLOCK_TAGS:
            self._flush()

    def _text(self, raw_len: int) -> None:
        start = self._offset()
        if self.in_title:
            if self.title_span is None:
                self.title_span = [start, start + raw_len, start + raw_len]
            self.title_span[2] = start + raw_len
            return
        if self.skip:
            return
        if self.after_inline_skip:
            if not self.raw[start : start + raw_len].strip():
                return
            self.after_inline_skip = False
        if self.cur is None:
            self.cur = [start, start + raw_len]
        else:
            self.cur[1] = start + raw_len

    def _title(self, end: int) -> None:
        """The page's title from the <title> just read, its runs whole (``end`` -1), or only its first run (1).

        An unclosed <title> runs to the end of the page: only its first run is taken then.
        """
        if self.title_span is not None:
            s, e = self.title_span[0], self.title_span[end]
            title = " ".join(html.unescape(self.raw[s:e]).split())
            if title:
                self.meta.setdefault("title", title)
        self.title_span = None

    def handle_data(self, data: str) -> None:
        self._text(len(data))

    def handle_entityref(self, name: str) -> None:
        self._text(len(name) + 2 if self.raw[self._offset() + len(name) + 1 : self._offset() + len(name) + 2] == ";" else len(name) + 1)

    def handle_charref(self, name: str) -> None:
        self._text(len(name) + 3)


# A "<" that cannot open a tag, comment or declaration ("a < b"). HTMLParser hands each one to
# handle_data on its own, a call per character on a page of "<<<<"; the parser is fed a copy with
# these as spaces (same length, so offsets hold, and text either way), read as one run.
_LONE_LT = re.compile(r"<(?=[^A-Za-z/!?])")


def _html_blocks(raw: str, name: str) -> tuple[list[tuple[int, int]], dict[str, str]]:
    p = _HTMLBlocks(raw)
    try:
        p.feed(_LONE_LT.sub(" ", raw))
        if p.rawdata.lstrip().startswith("<"):
            # unterminated markup at the end ("<?...", "<!--..."): close() would hand it over as
            # text, while a browser hides it
            p.rawdata = ""
        p.close()
    except Exception as exc:  # HTMLParser raises bare AssertionError on some malformed markup
        raise RagError(f"{name}: cannot parse HTML ({exc})") from exc
    p._flush()
    if p.in_title:
        p._title(1)
    meta = p.meta
    hostile.settle_date(meta)  # the date field read as a date; prose in it is none
    # split multi-line text runs into lines so the line rules below apply to them too
    blocks = []
    for s, e in p.blocks:
        run = _unshown_as_blanks(raw[s:e])
        for m in re.finditer(r"[^\n]+", run):
            a, b = m.start(), m.end()
            while a < b and run[a].isspace():
                a += 1
            while b > a and run[b - 1].isspace():
                b -= 1
            if a < b:
                blocks.append((s + a, s + b))
    return blocks, meta


def _unshown_as_blanks(run: str) -> str:
    """``run`` with each element in it that reads as nothing (a <script> kept in a paragraph) as spaces.

    Its lines are found in this copy: a line break in a script's code is no line of text, and a
    script that starts or ends a line is trimmed off it like the blanks.
    """
    parts, pos = [], 0
    for a, b in unshown_elements(run):
        parts += [run[pos:a], " " * (b - a)]
        pos = b
    return "".join(parts) + run[pos:] if parts else run


# ---------------------------------------------------------------- cleaning
def _is_headline(line: str) -> bool:
    return 3 <= len(line) <= 200 and not re.search(r"[.!?…\"”]\s*$", line) and len(line.split()) >= 3


def clean_blocks(raw: str, blocks: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], dict[str, str]]:
    """Keep the blocks that are article text; return them and the metadata found in the header."""
    meta: dict[str, str] = {}
    keep: list[tuple[int, int]] = []
    lines = [raw[s:e] for s, e in blocks]
    body_started = False
    i = 0
    while i < len(blocks):
        line = lines[i]
        # subscription appeal: "Dear Reader, ..." through the signatures
        if _APPEAL_START.match(line):
            j = next((k for k in range(i + 1, min(i + 40, len(lines))) if _APPEAL_END.search(lines[k])), None)
            if j is not None:
                # take consecutive signature lines too ("Name, CEO" then "Name, Editor-in-Chief")
                while j + 1 < len(lines) and _APPEAL_END.search(lines[j + 1]):
                    j += 1
                i = j + 1
                continue
        # teasers for other stories: the heading, then short lines and "..." snippets
        if _TEASER_HEAD.match(line):
            i += 1
            while i < len(lines) and (len(lines[i]) < 120 or re.search(r"(\.\.\.|…)\s*$", lines[i])):
                if _is_body_paragraph(lines[i]):
                    break
                i += 1
            continue
        if _BOILERPLATE_ANY.search(line):
            i += 1
            continue
        if _DATELINE.match(line):
            if len(keep) <= 3 and "date" not in meta:  # the header zone: title, standfirst, dateline
                meta["date"] = parse_date(line) or ""
            i += 1
            continue
        m = _AUTHOR_LINE.match(line)
        if m and not body_started:
            meta.setdefault("author", m.group(2))
            i += 1
            continue
        # a short caption line followed by its photo credit
        if len(line) < 80 and i + 1 < len(lines) and _CREDIT_LINE.match(lines[i + 1]):
            i += 1
            continue
        if not body_started and "title" not in meta and _is_headline(line):
            meta["title"] = line.strip()
            i += 1
            continue
        keep.append(blocks[i])
        body_started = True
        i += 1
    if not meta.get("date"):
        meta.pop("date", None)
    return keep, meta


def _is_body_paragraph(line: str) -> bool:
    return len(line) >= 150 and re.search(r"[.!?\"”]\s*$", line) is not None


def _outlet(raw: str) -> str | None:
    for rx, name in _OUTLET_PATTERNS:
        m = rx.search(raw)
        if not m:
            continue
        if isinstance(name, int):
            return m.group(name).strip()
        return name
    return None
