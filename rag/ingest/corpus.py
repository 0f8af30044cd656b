"""Load article files and record files into Documents; cleaning is :mod:`rag.ingest.cleaning`, copies are marked by :mod:`rag.ingest.dedup`."""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..settings import Settings
from ..types import Document, RagError
from . import hostile, records
from .cleaning import clean_article
from .dedup import mark_duplicates

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")


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
    ``fields`` is the field map of record files (see :func:`rag.ingest.records.parse_fields`).
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
    ``<file name>#<key>`` (:func:`rag.ingest.records.record_key`). ``max_bytes`` limits each record's text.
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
