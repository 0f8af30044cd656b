"""Record files: many articles in one ``.jsonl``, ``.json`` or ``.csv`` file (each also gzipped).

This module only reads: it streams a file's records (a 500 MB JSONL is never held whole), says
which of a record's keys hold its text and metadata (the field map), and gives each record a
stable, readable key. Turning a record into a cleaned :class:`~rag.types.Document` is
:mod:`rag.ingest.corpus`'s job, with the same cleaner an article file gets.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ..types import RagError

RECORD_SUFFIXES = (".jsonl", ".json", ".csv", ".jsonl.gz", ".json.gz", ".csv.gz")
SIDECAR_SUFFIX = ".meta.json"  # an article's metadata sidecar, never a record file

FIELDS = ("text", "title", "date", "url", "outlet", "author", "id")
# Names the common news dumps use (news-please, NewsAPI, RSS exports, scraper CSVs); matched
# without regard to case. The first present and non-empty one wins.
DEFAULT_NAMES: dict[str, tuple[str, ...]] = {
    "text": ("text", "body", "content", "article", "maintext"),
    "title": ("title", "headline"),
    "date": ("date", "published", "published_at", "publish_date", "pubdate", "datetime"),
    "url": ("url", "link"),
    "outlet": ("outlet", "source", "publisher", "site", "domain"),
    "author": ("author", "authors", "byline"),
    "id": ("id", "guid", "uuid"),
}
# Keys under which a .json object holds its list of records.
LIST_KEYS = ("articles", "items", "data", "records", "results", "documents", "docs", "entries", "posts", "stories", "news", "rows")

# A key kept as it is in a document id: short, ASCII, no spaces, quotes, "#" or "~" (a hashed key
# has "~", so the two kinds never collide). Anything else is shown as a slug plus a hash: ids appear
# in `rag list`, citations and the UI, and must not carry control or look-alike characters.
_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/?=&%+@,-]{0,99}")


def record_format(path: str | Path) -> str | None:
    """``jsonl``, ``json`` or ``csv`` for a record file's name (gzipped or not), else None."""
    name = Path(path).name.lower()
    if name.endswith(SIDECAR_SUFFIX):
        return None
    for suffix in RECORD_SUFFIXES:
        if name.endswith(suffix):
            return suffix.split(".")[1]
    return None


# ---------------------------------------------------------------- the field map
def parse_fields(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"text=body,date=published_at"`` (or a mapping) as {field: record key}; RagError on an unknown field."""
    if not spec:
        return {}
    pairs: list[tuple[str, str]] = []
    if isinstance(spec, str):
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            field, eq, key = part.partition("=")
            if not eq or not field.strip() or not key.strip():
                raise RagError(f"--fields {spec!r}: expected FIELD=NAME pairs such as text=body,date=published_at")
            pairs.append((field.strip().lower(), key.strip()))
    else:
        pairs = [(str(f).strip().lower(), str(k).strip()) for f, k in spec.items()]
    unknown = [f for f, _ in pairs if f not in FIELDS]
    if unknown:
        raise RagError(f"--fields: no field called {unknown[0]!r}; the fields are {', '.join(FIELDS)}")
    return dict(pairs)


def _lookup(data: dict, name: str) -> tuple[bool, Any]:
    """The value under ``name`` (exact key, else the one key equal to it without regard to case; "a.b" goes into objects)."""
    value: Any = data
    for part in name.split(".") if name not in data else [name]:
        if not isinstance(value, dict):
            return False, None
        if part in value:
            value = value[part]
            continue
        folded = [k for k in value if isinstance(k, str) and k.lower() == part.lower()]
        if len(folded) != 1:
            return False, None
        value = value[folded[0]]
    return True, value


def has_key(data: dict, name: str) -> bool:
    """Whether the record has the key ``name`` (a --fields value), whatever its value."""
    return _lookup(data, name)[0]


def has_text_key(data: dict, fields: Mapping[str, str]) -> bool:
    """Whether the record has a key its text could come from: the mapped one, else a default name."""
    if "text" in fields:
        return has_key(data, fields["text"])
    return any(isinstance(k, str) and k.lower() in DEFAULT_NAMES["text"] for k in data)


def field_values(data: dict, fields: Mapping[str, str]) -> dict[str, Any]:
    """The record's value for each field that it has: the mapped key, else the first default name present and non-empty."""
    out: dict[str, Any] = {}
    lower = {k.lower(): k for k in data if isinstance(k, str)}
    for field in FIELDS:
        if field in fields:
            found, value = _lookup(data, fields[field])
            if found and not _empty(value):
                out[field] = value
            continue
        for name in DEFAULT_NAMES[field]:
            key = lower.get(name)
            if key is not None and not _empty(data[key]):
                out[field] = data[key]
                break
    return out


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or (isinstance(value, str) and not value.strip())


def text_value(value: Any) -> str | None:
    """A text field as one string: a string, or a list of paragraph strings joined by blank lines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "\n\n".join(value)
    return None


def meta_value(field: str, value: Any, limit: int) -> str | None:
    """A metadata field as one line of at most ``limit`` characters (a list of authors joined with ", ")."""
    if isinstance(value, dict):  # {"name": "Reuters", "id": ...}, as NewsAPI gives the source
        value = value.get("name") or value.get("title")
    if isinstance(value, list):
        names = [v.get("name") if isinstance(v, dict) else v for v in value]
        value = ", ".join(str(v) for v in names if isinstance(v, str | int | float) and str(v).strip())
    if field == "date" and isinstance(value, int | float) and not isinstance(value, bool):
        value = _epoch_date(value)
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    # lone surrogates (from "\ud800" in JSON) cannot be written as UTF-8: shown as U+FFFD
    text = " ".join(str(value).encode("utf-8", "replace").decode("utf-8").split())
    text = "".join(c for c in text if c >= " ")
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text or None


def _epoch_date(value: float) -> str | None:
    """A Unix timestamp in seconds or milliseconds (from 1973 to 2286) as an ISO date."""
    seconds = value / 1000 if value >= 1e12 else value
    if not 1e8 <= seconds < 1e10:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC).date().isoformat()


# ---------------------------------------------------------------- record keys
def record_key(values: Mapping[str, Any], text: str) -> str:
    """The record's key within its file: its id, else its url, else a hash of its text; safe to show."""
    return given_key(values) or "text-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def given_key(values: Mapping[str, Any]) -> str | None:
    """The key the record names itself by (its id, else its url), or None when it has neither."""
    for field in ("id", "url"):
        value = values.get(field)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return safe_key(str(value).strip())
    return None


def safe_key(key: str) -> str:
    """``key`` as it is when short plain ASCII; else a readable slug of it and a hash of the whole."""
    if _SAFE_KEY.fullmatch(key):
        return key
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-.")[:40].rstrip("-.")
    digest = hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slug}~{digest}" if slug else digest


# ---------------------------------------------------------------- reading
@dataclass
class Record:
    line: int  # where the record starts in the file (1-based)
    data: Any  # what the line or element holds: a dict when it is a record
    number: int | None = None  # its place in a .json file's list (1-based): a minified file is all one line

    @property
    def where(self) -> str:
        return f"line {self.line}" + (f" (record {self.number})" if self.number is not None else "")


@dataclass
class BadRecord:
    line: int
    problem: str  # what is wrong, e.g. "bad JSON (Expecting value at column 1)"


def iter_records(path: Path, max_record_chars: int) -> Iterator[Record | BadRecord]:
    """The records of a record file, streamed; a problem with one line or row is yielded, not raised.

    Raises RagError when the file cannot be read at all, or from the point where the rest of it
    cannot be (a JSON syntax error in a .json file, a truncated gzip): the records before it have
    been yielded already.
    """
    kind = record_format(path)
    if kind is None:
        raise RagError(f"{path.name}: not a record file ({', '.join(RECORD_SUFFIXES)})")
    reader = {"jsonl": _jsonl, "json": _json, "csv": _csv}[kind]
    try:
        with _open(path) as f:
            yield from reader(f, path, max_record_chars)
    except (OSError, EOFError, zlib.error) as exc:  # unreadable, or gzip data that is corrupt or cut short
        what = "gzip data is corrupt or cut short" if path.name.lower().endswith(".gz") else "cannot be read"
        raise RagError(f"{path.name}: {what} ({getattr(exc, 'strerror', None) or exc})") from exc


@contextmanager
def _open(path: Path) -> Iterator[IO[bytes]]:
    with open(path, "rb") as raw:
        if path.name.lower().endswith(".gz"):
            with gzip.GzipFile(fileobj=raw) as f:  # decompressed as it is read
                yield f
        else:
            yield raw


# Reading between two records is bounded, as one record is: a gzip of 194 KB held 200 MB of blank
# lines and took 127 s to read through, yielding nothing. Past max_bytes of blank lines, or this many
# seconds of reading with no record (bad lines too), the rest of the file is not read.
GAP_SECONDS = 10.0


class _Gap:
    """How far a record file has been read since its last record, in blank bytes and in seconds of reading."""

    def __init__(self, path: Path, max_blank: int):
        self.path, self.max_blank = path, max_blank
        self.blank, self.since = 0, time.monotonic()

    def record(self) -> None:
        self.blank, self.since = 0, time.monotonic()

    def check(self, line: int, blank: int = 0) -> None:
        self.blank += blank
        if self.blank > self.max_blank:
            raise RagError(f"{self.path.name} line {line}: over {self.max_blank:,} bytes of blank lines with no record; the rest is not read")
        if time.monotonic() - self.since > GAP_SECONDS:
            raise RagError(f"{self.path.name} line {line}: {GAP_SECONDS:g} s of reading found no record; the rest is not read")


def _jsonl(f: IO[bytes], path: Path, max_chars: int) -> Iterator[Record | BadRecord]:
    # JSON escapes make a line longer than the text it holds; 4 bytes a character covers UTF-8
    cap = 4 * max_chars + 1_000_000
    n = 0
    gap = _Gap(path, max_chars)
    while True:
        line = f.readline(cap + 1)
        if not line:
            return
        n += 1
        gap.check(n, len(line) if not line.strip() else 0)
        if len(line) > cap and not line.endswith(b"\n"):
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass  # the rest of the over-long line, skipped without holding it
            yield BadRecord(n, f"line is over {cap:,} bytes, too long for one record")
            continue
        if n == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        line = line.rstrip(b"\r\n")  # else a string cut off at the line's end reads as one holding a newline
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield BadRecord(n, f"not UTF-8 text (bad byte at column {exc.start + 1})")
            continue
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            yield BadRecord(n, _json_problem(exc))
            continue
        yield Record(n, data)
        gap.record()  # after the yield: the time the caller takes with the record is not reading


def _json_problem(exc: ValueError | RecursionError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"bad JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})"
    if isinstance(exc, RecursionError):  # "[[[[…" 100,000 deep: the decoder recurses per level
        return "JSON nested too deeply to read"
    if "integer string conversion" in str(exc):  # Python converts at most 4,300 digits (sys.set_int_max_str_digits)
        return "a number too long to read (over 4,300 digits)"
    return f"bad JSON ({exc})"


class _Unreadable(RagError):
    """A value the decoder cannot take though its brackets may be well formed (nested too deeply, a 5,000-digit number)."""


def _csv(f: IO[bytes], path: Path, max_chars: int) -> Iterator[Record | BadRecord]:
    # the limit is process-wide in the csv module; raised once, never lowered under another caller
    csv.field_size_limit(max(csv.field_size_limit(), 4 * max_chars + 1_000_000))
    text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")  # utf-8-sig: Excel's byte-order mark
    reader = csv.reader(text)
    try:
        header = next((row for row in reader if any(c.strip() for c in row)), None)
        if header is None:
            return
        names = [h.strip() for h in header]
        last = reader.line_num
        gap = _Gap(path, max_chars)
        for row in reader:
            start, last = last + 1, reader.line_num
            if not any(c.strip() for c in row):
                gap.check(start, last - start + 1 + sum(map(len, row)))  # a blank row: its line ends and spaces
                continue
            gap.check(start)
            if len(row) > len(names):
                yield BadRecord(start, f"{len(row)} columns, the header has {len(names)} (a comma outside quotes?)")
                continue
            yield Record(start, dict(zip(names, row)))
            gap.record()
    except UnicodeDecodeError as exc:
        raise RagError(f"{path.name} line {reader.line_num + 1}: not UTF-8 text; re-save the file as UTF-8") from exc
    except csv.Error as exc:
        raise RagError(f"{path.name} line {reader.line_num}: bad CSV ({exc})") from exc


_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _JSONStream:
    """One JSON document read piece by piece: the elements of its big list come one at a time.

    Written here because the json module parses whole documents only: this keeps a 500 MB ``.json``
    out of memory with the standard decoder doing each element (ijson would add a dependency for it).
    """

    def __init__(self, f: IO[bytes], path: Path, max_chars: int):
        self.f = io.TextIOWrapper(f, encoding="utf-8-sig")
        self.path = path
        self.cap = 4 * max_chars + 1_000_000
        self.buf, self.pos, self.eof = "", 0, False
        self.line0 = 1  # line number of buf[0]

    def line(self, pos: int | None = None) -> int:
        return self.line0 + self.buf.count("\n", 0, self.pos if pos is None else pos)

    def _more(self, size: int = 1 << 20) -> None:
        self.line0 += self.buf.count("\n", 0, self.pos)
        try:
            chunk = self.f.read(size)
        except UnicodeDecodeError as exc:
            raise RagError(f"{self.path.name} line {self.line()}: not UTF-8 text; re-save the file as UTF-8") from exc
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        self.eof = not chunk

    def peek(self) -> str:
        """The next character after white space, "" at the end."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or self.eof:
                return self.buf[self.pos : self.pos + 1]
            self._more()

    def value(self) -> Any:
        """The next value, read whole: the buffer grows (doubling, so reading stays linear) until it parses."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:  # a number at the buffer's end may go on
                    self.pos = end
                    return value
            except json.JSONDecodeError as exc:
                # only a value cut off by the buffer's end is worth reading more for
                cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(self.buf) - 16
                if self.eof or not cut:
                    raise RagError(
                        f"{self.path.name} line {self.line(exc.pos)}: bad JSON ({exc.msg.removesuffix(' at')}); the rest of the file is not read"
                    ) from exc
            except (ValueError, RecursionError) as exc:
                raise _Unreadable(f"{self.path.name} line {self.line()}: {_json_problem(exc)}") from exc
            if len(self.buf) - self.pos > self.cap:
                raise RagError(f"{self.path.name} line {self.line()}: one value is over {self.cap:,} characters, too long for one record")
            self._more(max(1 << 20, len(self.buf) - self.pos))

    def skip_value(self) -> None:
        """Move past the value that starts here without decoding it: brackets and strings counted in one pass."""
        depth, in_string, escaped, i = 0, False, False, self.pos
        while True:
            if i >= len(self.buf):
                if self.eof:
                    raise RagError(f"{self.path.name} line {self.line()}: bad JSON (a value that never ends); the rest of the file is not read")
                self.pos = i
                self._more()
                i = self.pos
                continue
            c = self.buf[i]
            if in_string:
                escaped, in_string = (False, True) if escaped else (c == "\\", c != '"')
            elif c == '"':
                in_string = True
            elif c in "[{":
                depth += 1
            elif c in "]}":
                if depth == 0:  # the end of the list holding a number
                    break
                depth -= 1
                if depth == 0:
                    i += 1
                    break
            elif depth == 0 and (c == "," or c.isspace()):
                break
            i += 1
        self.pos = i

    def expect(self, chars: str, what: str) -> str:
        c = self.peek()
        if not c or c not in chars:
            raise RagError(f"{self.path.name} line {self.line()}: bad JSON (expected {what}); the rest of the file is not read")
        self.pos += 1
        return c

    def elements(self) -> Iterator[Record]:
        """The elements of the list that starts here."""
        self.expect("[", "a list")
        if self.peek() == "]":
            self.pos += 1
            return
        number = 0
        while True:
            self.peek()  # the record starts here: its line is where it is reported
            number += 1
            line = self.line()
            try:
                yield Record(line, self.value(), number)
            except _Unreadable as exc:  # that record is lost, not the records after it
                self.skip_value()
                yield BadRecord(line, f"record {number}: {str(exc).split(': ', 1)[-1]}")
            if self.expect(",]", '"," or "]" after a record') == "]":
                return


def _json(f: IO[bytes], path: Path, max_chars: int) -> Iterator[Record | BadRecord]:
    s = _JSONStream(f, path, max_chars)
    first = s.peek()
    if first == "[":
        yield from s.elements()
        return
    if first != "{":
        raise RagError(f"{path.name}: holds no JSON list or object of records")
    s.pos += 1
    whole: dict[str, Any] = {}
    if s.peek() == "}":
        s.pos += 1
    else:
        while True:
            key = s.value()
            if not isinstance(key, str):
                raise RagError(f"{path.name} line {s.line()}: bad JSON (an object key that is not a string)")
            s.expect(":", '":" after a key')
            if key.lower() in LIST_KEYS and s.peek() == "[":
                yield from s.elements()  # the list of records, streamed; what follows it is not needed
                return
            whole[key] = s.value()
            if s.expect(",}", '"," or "}"') == "}":
                break
    lists = {k: v for k, v in whole.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
    if len(lists) == 1:
        yield from (Record(1, x, k) for k, x in enumerate(next(iter(lists.values())), 1))
    elif text_value(field_values(whole, {}).get("text")) is not None:
        yield Record(1, whole)  # one article as one object
    else:
        keys = ", ".join(list(whole)[:12]) or "none"
        raise RagError(f"{path.name}: holds an object with no list of records under {'/'.join(LIST_KEYS[:3])}/… (its keys: {keys})")
