"""Load article files and record files, strip news-page boilerplate, extract metadata; copies are marked by :mod:`rag.dedup`.

Cleaning never rewrites text: it decides which spans of the raw file are article content
(``Document.segments``), so every sentence and quote maps back to exact character offsets
of ``open(path).read()`` (for a record of a ``.jsonl``/``.json``/``.csv`` file: of its text
field's string, kept in the index as the record's raw text). No library does offset-preserving boilerplate removal for news
pages (trafilatura and friends return new strings), hence the hand-written rules below.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from . import hostile, records
from .dedup import mark_duplicates
from .settings import Settings
from .text import DATE_DMY, DATE_ISO, DATE_MDY, EARLIEST_DATE, has_index_words, latest_date, parse_date, sane_date
from .types import SEGMENT_SEPARATOR, Document, RagError, display_text

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")
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


class LoadError(str):
    """One line of a load's report, ``"<where>: <reason>"``: the file (or record of one) refused, and why.

    A str, so that a report prints, joins and compares as the lines it holds; ``where`` says which
    file or record a line is about, so nothing parses the line back.
    """

    where: str
    reason: str

    def __new__(cls, where: str, reason: str) -> LoadError:
        line = super().__new__(cls, f"{where}: {reason}")
        line.where, line.reason = where, reason
        return line

    def __reduce__(self) -> tuple:  # a str subclass with fields: copy and pickle need the two parts
        return LoadError, (self.where, self.reason)

    def amended(self, note: str) -> LoadError:
        """The same line with ``note`` added to its reason."""
        return LoadError(self.where, self.reason + note)


# A reader's RagError starts with the name of the file it refuses, and for a line of a record file
# with "<name> line N"; this is where such a message becomes a LoadError.
def _refused(exc: RagError, name: str) -> LoadError:
    text = str(exc)
    found = re.match(rf"{re.escape(name)}(?: line \d+)?(?=: )", text)
    if found is None:
        return LoadError(name, text)
    return LoadError(found.group(), text[found.end() + 2 :])


@dataclass
class LoadResult:
    documents: list[Document]
    errors: list[LoadError]  # one line each: a file (or a record of one) that was refused, and why
    raws: dict[str, str] = field(default_factory=dict)  # records' raw texts by document id (an article's is its file)
    # record file name -> ids of its records that did not load, or None when one could not even be
    # identified (bad JSON, a cut-off file): their last indexed versions are kept
    failed: dict[str, set[str] | None] = field(default_factory=dict)


def read_text(path: Path, max_bytes: int) -> str:
    """The file's text exactly as ``open(path).read()`` returns it (UTF-8, universal newlines).

    A file that starts with a UTF-16 byte-order mark is decoded as UTF-16 (what
    ``open(path, encoding="utf-16").read()`` returns); the index keeps this text, so quotes and
    spans refer to it. A UTF-8 byte-order mark stays in the text, as ``open`` keeps it.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RagError(f"{path.name}: cannot read ({exc.strerror})") from exc
    if len(data) > max_bytes:
        raise RagError(f"{path.name}: file is {len(data):,} bytes, over the {max_bytes:,}-byte limit")
    text = _utf16(data)
    if text is None:
        if b"\x00" in data:  # a NUL anywhere (one C-level scan): text files have none
            raise RagError(f"{path.name}: binary file, not a text article")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RagError(f"{path.name}: not UTF-8 text (bad byte at offset {exc.start}); re-save it as UTF-8") from exc
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise RagError(f"{path.name}: empty file")
    return text


def _utf16(data: bytes) -> str | None:
    """The text of a file with a UTF-16 byte-order mark, or None when it is not such a file."""
    if not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or data.startswith(codecs.BOM_UTF32_LE):
        return None
    try:
        text = data.decode("utf-16")
    except UnicodeDecodeError:
        return None  # judged as bytes: binary, or not UTF-8
    return None if "\x00" in text else text


def iter_article_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[LoadError]]:
    """Article files under the given files/folders, and an error line for each path that is not one."""
    files: list[Path] = []
    errors: list[LoadError] = []
    for p in map(Path, paths):
        if p.is_dir():
            found, skipped = _folder_files(p)
            files.extend(found)
            errors.extend(LoadError(str(f.relative_to(p)), why) for f, why in skipped)
        elif p.is_file():
            if _indexable(p.name):
                files.append(p)
            else:
                errors.append(
                    LoadError(
                        p.name,
                        f"unsupported file type {p.suffix or '(none)'}; use .txt, .md or .html articles, "
                        "or .jsonl, .json or .csv records (each may be .gz)",
                    )
                )
        else:
            errors.append(LoadError(str(p), "no such file or folder"))
    return files, errors


def _indexable(name: str) -> bool:
    return Path(name).suffix.lower() in SUFFIXES or records.record_format(name) is not None


def _folder_files(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Article files under ``folder`` (hidden ones left out), and the links skipped, each with why.

    A symbolic link is followed only when its target lies inside ``folder``: a link to
    ``/etc/hostname`` or to another folder would put files the corpus does not hold into the index.
    A link that loops or leads nowhere is named, not a reason to stop the whole folder.
    """
    root = folder.resolve()
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []

    def target(p: Path) -> Path | None:
        try:
            return p.resolve(strict=True)
        except RuntimeError:  # Python 3.11 reports a link loop so, later versions as OSError (ELOOP)
            skipped.append((p, "is a symbolic link loop; skipped"))
        except FileNotFoundError:
            skipped.append((p, "is a link to nothing (its target is gone); skipped"))
        except OSError as exc:
            skipped.append((p, f"cannot be read ({exc.strerror or exc}); skipped"))
        return None

    for dirpath, dirnames, filenames in os.walk(folder):  # does not descend into linked folders
        here = Path(dirpath)
        # an index folder inside the corpus holds .jsonl files of chunks, never articles
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (here / d / "CURRENT").is_file())
        for d in dirnames:
            if (here / d).is_symlink() and (t := target(here / d)) is not None and not t.is_relative_to(root):
                skipped.append((here / d, f"links outside {folder}; skipped"))
        for name in sorted(filenames):
            f = here / name
            if name.startswith(".") or not _indexable(name):
                continue
            t = target(f) if f.is_symlink() else f.resolve()
            if t is None:
                continue
            if not t.is_relative_to(root):
                skipped.append((f, f"links outside {folder}; skipped"))
            elif f.is_file():
                files.append(f)
    return sorted(files), skipped


def load_documents(
    paths: Iterable[str | Path], max_bytes: int = Settings.max_file_bytes, mark: bool = True, fields: Mapping[str, str] | None = None
) -> LoadResult:
    """Load and clean every article under ``paths``; bad files are reported, not fatal.

    ``mark=False`` leaves duplicate marking to a caller that merges these with other documents;
    ``fields`` is the field map of record files (see :func:`rag.records.parse_fields`).
    """
    files, errors = iter_article_files(paths)
    loaded = load_files(files, max_bytes, mark, {f: fields for f in files} if fields else None)
    loaded.errors = errors + loaded.errors
    return loaded


def load_files(
    files: list[Path],
    max_bytes: int = Settings.max_file_bytes,
    mark: bool = True,
    fields: Mapping[Path, Mapping[str, str] | None] | None = None,
    loaded: Mapping[Path, LoadResult] | None = None,
) -> LoadResult:
    """Load and clean files already listed (by :func:`iter_article_files`); bad files are reported, not fatal.

    ``fields`` gives a record file its field map; ``max_bytes`` limits an article file, or each
    record's text in a record file. ``loaded``: files already loaded elsewhere (:func:`load_file`
    on a cluster's workers), taken as they are; the others are loaded here.
    """
    result = LoadResult([], [])
    seen: dict[str, Path] = {}
    for f in files:
        is_records = records.record_format(f) is not None
        if f.name in seen:
            result.errors.append(LoadError(str(f), f"same file name as {seen[f.name]}; document ids are file names, rename one"))
            if is_records:
                result.failed[f.name] = None
            continue
        part = loaded[f] if loaded is not None and f in loaded else load_file(f, max_bytes, (fields or {}).get(f))
        if is_records or part.documents:  # an article file that was refused leaves its name to a later one
            seen[f.name] = f
        result.documents.extend(part.documents)
        result.errors.extend(part.errors)
        result.raws.update(part.raws)
        result.failed.update(part.failed)
    if mark:
        mark_duplicates(result.documents)
    return result


def load_file(f: Path, max_bytes: int = Settings.max_file_bytes, fields: Mapping[str, str] | None = None) -> LoadResult:
    """One article or record file loaded and cleaned; a refusal is reported in the result, never raised."""
    is_records = records.record_format(f) is not None
    try:
        return load_record_file(f, max_bytes, fields) if is_records else LoadResult([load_document(f, max_bytes)], [])
    except RagError as exc:
        return LoadResult([], [_refused(exc, f.name)])
    except Exception as exc:  # noqa: BLE001 - one file that trips the parser must not stop the rest
        error = LoadError(f.name, f"cannot be read as an article ({type(exc).__name__}: {exc})")
        return LoadResult([], [error], failed={f.name: None} if is_records else {})


def load_document(path: str | Path, max_bytes: int = Settings.max_file_bytes) -> Document:
    """Read one article file and clean it; raises RagError when the file cannot be used."""
    path = Path(path)
    raw = read_text(path, max_bytes)
    is_html = path.suffix.lower() in (".html", ".htm")
    return _document(path.name, path, raw, *clean_article(raw, path.name, is_html, _sidecar(path)))


def _document(
    doc_id: str, path: Path, raw: str, segments: list[tuple[int, int]], text: str, meta: Mapping[str, str], **record: object
) -> Document:
    """A cleaned article (a file, or a record of one when ``record`` gives its key), hashed by its raw text."""
    return Document(
        id=doc_id,
        path=str(path.resolve()),
        content_hash=hashlib.sha256(raw.encode("utf-8")).hexdigest(),
        title=meta.get("title") or None,
        outlet=meta.get("outlet") or None,
        author=meta.get("author") or None,
        date=meta.get("date") or None,
        url=meta.get("url") or None,
        segments=segments,
        text=text,
        **record,
    )


def clean_article(raw: str, name: str, is_html: bool, given: Mapping[str, str]) -> tuple[list[tuple[int, int]], str, dict[str, str]]:
    """The kept spans of an article's raw text, its cleaned text, and its metadata.

    ``given`` (a sidecar, a record's fields) overrides what the text states; RagError, starting
    with ``name``, when nothing of the article is left to index.
    """
    blocks, meta = _html_blocks(raw, name) if is_html else _text_blocks(raw)
    segments, found = clean_blocks(raw, blocks)
    for k, v in found.items():
        meta.setdefault(k, v)
    meta.update(given)
    for key in hostile.planted_fields(meta):  # every citation shows these: read like the text (see rag.hostile)
        del meta[key]
    if meta.get("date") and sane_date(meta["date"]) is None:  # Document keeps it undated; the operator hears why
        where = "its sidecar or record field" if given.get("date") == meta["date"] else "the page's own date"
        log.warning("%s: date %r from %s is no date from %s to %s; indexed as undated", name, meta["date"], where, EARLIEST_DATE, latest_date())
    if not meta.get("outlet"):
        meta["outlet"] = _outlet(raw)
    shown = [display_text(raw[s:e], is_html) for s, e in segments]
    # text planted to steer a model is no article text: it never reaches the index (see rag.hostile)
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


# ---------------------------------------------------------------- record files
_MAX_RECORD_ERRORS = 100  # lines per file; a file of a million bad lines is summed up, not printed whole
# Tags that mark a record's text field as an HTML page or fragment; plain news prose with one "<b>"
# in it does not count.
_HTML_TAG = re.compile(
    r"<(?:!doctype html|/?(?:html|head|body|p|div|br|span|a|h[1-6]|li|ul|ol|article|section|strong|em|b|i|blockquote|figure|img|table|tr|td)\b[^<>]{0,500}>)",
    re.I,
)


def looks_like_html(text: str) -> bool:
    """A record's text that is marked up: two or more HTML tags in its first 100,000 characters."""
    found = _HTML_TAG.finditer(text, 0, 100_000)
    return next(found, None) is not None and next(found, None) is not None


def load_record_file(path: Path, max_bytes: int = Settings.max_file_bytes, fields: Mapping[str, str] | None = None) -> LoadResult:
    """Every record of a .jsonl/.json/.csv file (each may be gzipped) as a Document; bad records are reported, not fatal.

    A record's raw text is its text field's string (newlines made "\\n", as a text file's are),
    cleaned as a .txt file is, or as an .html file when it is marked up. Its id is
    ``<file name>#<key>`` (:func:`rag.records.record_key`). ``max_bytes`` limits each record's text.
    """
    fields = records.parse_fields(fields)
    out = LoadResult([], [])
    failed: set[str] | None = set()
    n_bad = 0
    first_line: dict[str, str] = {}  # record key -> where it was first seen ("line 3")
    keys: dict[str, None] = {}  # the keys records have, in order of appearance (for error lines)
    mapped: set[str] = set()  # fields of the map some record has
    has_text_field = False
    n_objects = 0

    def refuse(line: LoadError, key: str | None) -> None:
        nonlocal failed, n_bad
        n_bad += 1
        if n_bad <= _MAX_RECORD_ERRORS:
            out.errors.append(line)
        if key is None:
            failed = None
        elif failed is not None:
            failed.add(f"{path.name}#{key}")

    try:
        for item in records.iter_records(path, max_bytes):
            label = f"{path.name} {item.where}" if isinstance(item, records.Record) else f"{path.name} line {item.line}"
            if isinstance(item, records.BadRecord):
                refuse(LoadError(label, item.problem), None)
                continue
            if not isinstance(item.data, dict):
                refuse(LoadError(label, f"a JSON {_json_kind(item.data)}, not an object with the article's fields"), None)
                continue
            n_objects += 1
            for k in item.data:
                if len(keys) < 60:
                    keys.setdefault(str(k))
            mapped.update(f for f, name in fields.items() if records.has_key(item.data, name))
            values = records.field_values(item.data, fields)
            has_text_field = has_text_field or records.has_text_key(item.data, fields)
            try:
                raw = _record_text(values.get("text"), label, max_bytes, fields)
            except RagError as exc:
                refuse(_refused(exc, label), records.given_key(values))
                continue
            key = records.record_key(values, raw)
            if key in first_line:
                n_bad += 1
                if n_bad <= _MAX_RECORD_ERRORS:
                    out.errors.append(LoadError(label, f"same id as {first_line[key]} ({key}); kept the first"))
                continue
            first_line[key] = item.where
            try:
                out.documents.append(_record_document(path, key, raw, values, label))
                out.raws[f"{path.name}#{key}"] = raw
            except RagError as exc:
                refuse(_refused(exc, label), key)
            except Exception as exc:  # noqa: BLE001 - one record that trips the parser must not stop the rest
                refuse(LoadError(label, f"cannot be read as an article ({type(exc).__name__}: {exc})"), key)
    except RagError as exc:  # the file, or the rest of it, cannot be read
        out.errors.append(_refused(exc, path.name))
        failed = None
    have = ", ".join(keys) or "none"
    missing = [f for f in fields if f not in mapped]
    if n_objects and missing:
        f = missing[0]
        line = LoadError(path.name, f'no record has the field "{fields[f]}" (--fields {f}={fields[f]}); its records have: {have}')
        return LoadResult([], [line], failed={path.name: None})
    if n_objects and not has_text_field:
        names = ", ".join(records.DEFAULT_NAMES["text"])
        line = LoadError(path.name, f"no record has a text field ({names}); its records have: {have}; name it with --fields text=NAME")
        return LoadResult([], [line], failed={path.name: None})
    if not n_objects and not out.errors:
        out.errors.append(LoadError(path.name, "no records in the file"))
        failed = None
    if n_bad > _MAX_RECORD_ERRORS:
        out.errors.append(LoadError(f"{path.name} (more)", f"{n_bad - _MAX_RECORD_ERRORS:,} more bad records skipped, not listed one by one"))
    if failed is None or failed:
        out.failed[path.name] = failed
    return out


def _record_text(value: object, label: str, max_bytes: int, fields: Mapping[str, str]) -> str:
    """A record's raw text: its text field's string with newlines as a text file has them; RagError when it has none."""
    text = records.text_value(value)
    if text is None or not text.strip():
        where = f'field "{fields["text"]}"' if "text" in fields else f"fields {', '.join(records.DEFAULT_NAMES['text'])}"
        raise RagError(f"{label}: no text (nothing in its {where})")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate, from an escape such as "\ud800" in JSON
        raise RagError(f"{label}: text is not valid Unicode (a lone surrogate at character {exc.start + 1})") from exc
    if size > max_bytes:
        raise RagError(f"{label}: text is {size:,} bytes, over the {max_bytes:,}-byte limit for one article")
    if "\x00" in text:  # as a text file with a NUL is refused as binary
        raise RagError(f"{label}: text holds NUL characters, not article text")
    return text


def _record_document(path: Path, key: str, raw: str, values: Mapping[str, object], label: str) -> Document:
    """A record cleaned as an article file is; its fields give the metadata, as a sidecar does."""
    given: dict[str, str] = {}
    for name in ("title", "outlet", "author", "date", "url"):
        value = records.meta_value(name, values.get(name), SIDECAR_FIELDS[name])
        if value and name == "date":
            value = hostile.meta_date(value)  # prose in a date field is no date
        if value:
            given[name] = value
    is_html = looks_like_html(raw)
    return _document(f"{path.name}#{key}", path, raw, *clean_article(raw, label, is_html, given), record=key, html=is_html)


_SIDECAR_BYTES = 64_000
SIDECAR_FIELDS = {"title": 500, "outlet": 200, "author": 200, "date": 40, "url": 2_000}  # longest value allowed


def _sidecar(path: Path) -> dict[str, str]:
    """Metadata a curator gives in ``<file>.meta.json`` for what the text does not state.

    A sidecar that is not a JSON object of short one-line strings refuses its article, with a
    line naming the article and the sidecar: metadata shown with every citation must be right.
    """
    side = path.with_name(path.name + ".meta.json")
    if not side.is_file():
        return {}

    def bad(problem: str) -> RagError:
        return RagError(f"{path.name}: sidecar {side.name} {problem}; fix or remove it")

    try:
        if side.stat().st_size > _SIDECAR_BYTES:
            raise bad(f"is over {_SIDECAR_BYTES:,} bytes")
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise bad(f"is not valid JSON ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict):
        raise bad(f'holds a JSON {_json_kind(data)}, not an object such as {{"date": "2013-08"}}')
    meta: dict[str, str] = {}
    for key, limit in SIDECAR_FIELDS.items():
        value = data.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise bad(f'gives "{key}" as a JSON {_json_kind(value)}; it must be a string')
        if len(value) > limit or any(ch < " " for ch in value):
            raise bad(f'gives a "{key}" that is not one line of at most {limit:,} characters')
        if value.strip():
            meta[key] = value.strip()
    return meta


def _json_kind(value: object) -> str:
    kinds = {list: "array", dict: "object", str: "string", bool: "boolean", int: "number", float: "number"}
    return kinds.get(type(value), "value")


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
        self.hidden: list[str | int] | None = None  # [tag, depth] of the hidden element being skipped

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
                if key in names and val:
                    self.meta.setdefault(field, html.unescape(val))
        if tag == "link" and (a.get("rel") or "") == "canonical" and a.get("href"):
            self.meta.setdefault("url", a["href"])
        self._hide(tag, a)
        if tag in _SKIP_TAGS:
            self._flush()  # a text run never spans hidden content such as a script
            self.skip += 1
        if tag == "title":
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
            self._flush()
            self.skip -= 1
        if tag == "title":
            self.in_title = False
        if tag in _BLOCK_TAGS:
            self._flush()

    def _text(self, raw_len: int) -> None:
        start = self._offset()
        if self.in_title:
            self.meta.setdefault("title", html.unescape(self.raw[start : start + raw_len]).strip())
            return
        if self.skip:
            return
        if self.cur is None:
            self.cur = [start, start + raw_len]
        else:
            self.cur[1] = start + raw_len

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
    meta = p.meta
    hostile.settle_date(meta)  # the date field read as a date; prose in it is none
    # split multi-line text runs into lines so the line rules below apply to them too
    blocks = []
    for s, e in p.blocks:
        for m in re.finditer(r"[^\n]+", raw[s:e]):
            a, b = s + m.start(), s + m.end()
            while a < b and raw[a].isspace():
                a += 1
            while b > a and raw[b - 1].isspace():
                b -= 1
            if a < b:
                blocks.append((a, b))
    return blocks, meta


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
