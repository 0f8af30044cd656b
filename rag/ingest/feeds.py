"""Fetch RSS/Atom feeds and web pages into the index's own folder, as .html articles with sidecars.

A fetched page is stored as the server sent it (decoded to UTF-8) under
``<index>/fetched/<host>/<slug>-<hash>.html``, with a ``.meta.json`` sidecar holding the url it
came from and what the feed says of it. From there the ordinary file pipeline takes over: the
same offset-keeping HTML cleaner and planted-text check at load, quotes that are exact slices of
the stored file, re-embedding by content hash. The sidecars are also the record of what was
fetched: the entry ids, urls and text hashes that a re-poll skips without fetching again.
Each fetch goes through :mod:`rag.ingest.fetch`; a page or feed that fails gives one line naming
its url, and the others go on. A feed entry whose page failed is remembered in
``fetched/.failed.json`` and not asked for again until a back-off has passed (:class:`_Failures`).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import feedparser

from ..files import published
from ..index import layout, writer
from ..settings import Settings
from ..text import parse_date
from ..types import Document, RagError
from . import hostile
from .corpus import SIDECAR_FIELDS, load_document
from .fetch import Fetched, Fetcher, _Refused, check_url

_STAGING = ".staging"  # a dot-folder: folder walks skip it, so a page being checked is never indexed
_FAILURES = ".failed.json"  # a dot-file: folder walks skip it
RETRY_AFTER_S = 3600.0  # a feed entry whose page failed is asked for again after an hour, then two, four...
MAX_RETRY_AFTER_S = 86400.0  # ...and at least once a day
_clock = time.time  # the time failures are judged by: a test moves it on


@dataclass
class Entry:
    """A page to fetch: a feed's entry, or a url given by hand, with what the feed says of it."""

    url: str
    feed: str | None = None
    id: str | None = None  # the feed's guid (RSS) or id (Atom)
    updated: str | None = None  # as the feed gives it; a change means the entry was revised
    title: str | None = None
    author: str | None = None
    date: str | None = None
    outlet: str | None = None  # the feed's own title


@dataclass
class FetchReport:
    """What a run fetched and skipped, its problems (one line each, naming the url), and the index update."""

    feeds: list[str] = field(default_factory=list)  # feeds read as RSS or Atom this run
    entries: int = 0  # pages asked for: feed entries and urls
    fetched: list[str] = field(default_factory=list)  # urls stored, new or changed
    skipped: list[str] = field(default_factory=list)  # urls not fetched again, or whose text was already stored
    failing: list[str] = field(default_factory=list)  # feed entries' urls not asked for: their page failed at a recent poll
    errors: list[str] = field(default_factory=list)
    index: index.UpdateReport | None = None

    @property
    def all_errors(self) -> list[str]:
        """The fetch problems, then the files the index update refused."""
        return self.errors + (self.index.errors if self.index else [])

    def summary(self) -> str:
        return (
            f"{len(self.feeds)} feed{'s' * (len(self.feeds) != 1)} read, {self.entries} pages asked for: "
            f"{len(self.fetched)} fetched, {len(self.skipped)} already indexed, {len(self.errors)} failed"
            + (f", {len(self.failing)} skipped as failing before" if self.failing else "")
        )


# ---------------------------------------------------------------- feeds
def read_feed(fetcher: Fetcher, url: str) -> list[Entry]:
    """The entries of an RSS or Atom feed, parsed by feedparser from the bytes our client fetched."""
    got = fetcher.get(url, "feed")
    # feedparser never fetches: its own client would bypass our limits and robots.txt
    d = feedparser.parse(got.body, response_headers={"content-location": got.url, "content-type": got.content_type or "application/xml"})
    if not d.get("version") and not d.entries:
        if got.content_type and "xml" not in got.content_type:
            why = f"the server sent {got.content_type}"
        else:  # said to be XML: the parser's reason is the useful part
            why = " ".join(str(d.get("bozo_exception") or "no feed elements").split())
        raise _Refused(f"not an RSS or Atom feed ({why})")
    outlet = _one_line(d.feed.get("title"))
    entries = []
    for e in d.entries:
        link = e.get("link") or next((ln.get("href") for ln in e.get("links", []) if ln.get("href")), None)
        author = (e.get("author_detail") or {}).get("name") or e.get("author")
        when = e.get("published_parsed") or e.get("updated_parsed")
        entries.append(
            Entry(
                url=urldefrag(urljoin(got.url, link)).url if link else "",
                feed=url,
                id=e.get("id") or None,
                updated=e.get("updated") or None,
                title=_one_line(e.get("title")),
                author=_one_line(author),
                date=time.strftime("%Y-%m-%d", when) if when else None,
                outlet=outlet,
            )
        )
    return entries


# ---------------------------------------------------------------- what was fetched before
@dataclass
class _Seen:
    """The sidecars under ``fetched/``: entry ids and urls to their record, text hashes to file names."""

    by_key: dict[tuple[str, str], dict] = field(default_factory=dict)  # (feed or "" for a url given by hand, id or url)
    by_text: dict[str, str] = field(default_factory=dict)
    by_file: dict[str, dict] = field(default_factory=dict)  # the record of each stored page

    @classmethod
    def scan(cls, folder: Path) -> _Seen:
        seen = cls()
        for side in sorted(folder.glob("*/*.html.meta.json")):
            try:
                rec = json.loads(side.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # the loader reports a damaged sidecar with its article
            if isinstance(rec, dict):
                seen.add({**rec, "file": str(side.with_name(side.name.removesuffix(".meta.json")))})
        return seen

    def add(self, rec: dict) -> None:
        # an article is known by its source, the feed it came from and its url: a feed's <id> is
        # whatever the feed claims, and one naming another feed's url must not reach that article
        source = rec.get("feed") if isinstance(rec.get("feed"), str) else ""
        for key in ("entry_id", "fetched_from", "url"):
            if isinstance(rec.get(key), str):
                self.by_key[(source, rec[key])] = rec
        if isinstance(rec.get("file"), str):
            self.by_file[rec["file"]] = rec
        if isinstance(rec.get("text_sha256"), str) and Path(rec["file"]).exists():
            self.by_text.setdefault(rec["text_sha256"], rec["file"])

    def record(self, entry: Entry) -> dict | None:
        source = entry.feed or ""
        return (entry.id and self.by_key.get((source, entry.id))) or self.by_key.get((source, entry.url))


def _known(rec: dict | None, entry: Entry) -> bool:
    """An entry fetched before that the feed does not say was revised (or that was removed on purpose)."""
    if rec is None:
        return False
    if not Path(rec["file"]).exists():
        return True  # removed with `rag index remove`: its sidecar stays so that it is not fetched back
    return entry.updated is None or rec.get("entry_updated") == entry.updated


@dataclass
class _Failures:
    """The feed entries whose page could not be fetched or stored: when, why, and how many polls in a row.

    Kept in ``fetched/.failed.json``, beside the sidecars that record the entries fetched. A broken
    link is not asked for at every poll: only after a back-off (RETRY_AFTER_S, doubled at each
    failure up to MAX_RETRY_AFTER_S), or at once when the feed revises the entry or links it elsewhere.
    A url given by hand is always fetched: its user asks for it now.
    """

    path: Path
    records: dict[str, dict] = field(default_factory=dict)
    changed: bool = False

    @classmethod
    def read(cls, folder: Path) -> _Failures:
        path = folder / _FAILURES
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}  # none yet, or damaged: every entry is tried again
        records = {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}
        return cls(path, records)

    @staticmethod
    def _key(entry: Entry) -> str:
        return f"{entry.feed} {entry.id or entry.url}"

    def _same(self, entry: Entry) -> dict | None:
        """The entry's failure record, if the feed still lists it as it did then."""
        rec = self.records.get(self._key(entry))
        if rec is None or rec.get("url") != entry.url or rec.get("entry_updated") != entry.updated:
            return None
        return rec if isinstance(rec.get("tries"), int) and isinstance(rec.get("failed_at"), int | float) else None

    def waiting(self, entry: Entry, now: float) -> bool:
        """True for an entry that failed too recently to be asked for again."""
        rec = self._same(entry) if entry.feed else None
        return rec is not None and now < rec["failed_at"] + retry_after(rec["tries"])

    def failed(self, entry: Entry, problem: str, now: float) -> None:
        if not entry.feed:
            return
        rec = self._same(entry)
        tries = rec["tries"] + 1 if rec else 1
        self.records[self._key(entry)] = {
            "url": entry.url,
            "entry_updated": entry.updated,
            "failed_at": now,
            "tries": tries,
            "error": problem,
        }
        self.changed = True

    def keep_listed(self, feed: str, entries: list[Entry]) -> None:
        """Forget the failures of entries ``feed`` no longer lists: the file stays as small as the feeds."""
        listed = {self._key(e) for e in entries}
        for key in [k for k in self.records if k.startswith(f"{feed} ") and k not in listed]:
            del self.records[key]
            self.changed = True

    def fetched(self, entry: Entry) -> None:
        if self.records.pop(self._key(entry), None) is not None:
            self.changed = True

    def save(self) -> None:
        if self.changed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write(self.path, json.dumps(self.records, indent=1, ensure_ascii=False).encode("utf-8"))


def retry_after(tries: int) -> float:
    """Seconds before an entry whose page failed ``tries`` polls in a row is asked for again."""
    return min(RETRY_AFTER_S * 2 ** min(max(tries - 1, 0), 30), MAX_RETRY_AFTER_S)


# ---------------------------------------------------------------- storing
def _file_for(folder: Path, url: str) -> Path:
    """``<folder>/<host>/<slug>-<hash>.html``: the name a citation shows, unique across hosts (ids are file names)."""
    parts = urlsplit(url)
    host = re.sub(r"[^a-z0-9.-]+", "_", (parts.hostname or "host") + (f"_{parts.port}" if parts.port else ""))
    last = parts.path.rstrip("/").rsplit("/", 1)[-1]
    last = re.sub(r"\.(s?html?|php|aspx?|jsp)$", "", last, flags=re.I)
    slug = re.sub(r"[^a-z0-9]+", "-", last.lower()).strip("-")[:60].strip("-") or "page"
    return folder / host / f"{slug}-{hashlib.sha1(url.encode('utf-8')).hexdigest()[:10]}.html"


_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([\w.:-]{1,40})""", re.I)


def _decode(got: Fetched) -> str:
    """The page as text: a byte-order mark, else the charset the server or the page declares, else UTF-8."""
    body = got.body
    if body.startswith(codecs.BOM_UTF8):
        charset, body = "utf-8", body[3:]
    elif body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        charset = "utf-16"
    else:
        m = _META_CHARSET.search(body[:4096])
        charset = got.charset or (m.group(1).decode("ascii") if m else "utf-8")
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    try:
        text = body.decode(charset)
    except UnicodeDecodeError as exc:
        raise _Refused(f"is not valid {charset} text (bad byte at offset {exc.start})") from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as open() reads the stored file back


_SCRIPT_TAG = re.compile(r"<script\b([^>]{0,400})>", re.I)
_LD_TYPE = re.compile(r"""type\s*=\s*["']?application/ld\+json""", re.I)
_MAX_JSON_LD = 5  # a page states its article once; more blocks are not read


def _json_ld_blocks(raw: str) -> Iterator[str]:
    """The bodies of the page's ``application/ld+json`` scripts, in one pass over the page.

    A regular expression with a lazy ``(.*?)</script>`` rescans the rest of the page for every
    unclosed script, quadratic in their number (280 KB of them took 49 s); here each script's end
    is looked for once, from where the last one ended, and an unclosed one ends the search.
    """
    lower = raw.lower()
    pos, n = 0, 0
    while n < _MAX_JSON_LD and (m := _SCRIPT_TAG.search(raw, pos)):
        end = lower.find("</script", m.end())
        if end < 0:
            return  # nothing after an unclosed script is a script
        if _LD_TYPE.search(m.group(1)):
            n += 1
            yield raw[m.end() : end]
        pos = end


def _json_ld(raw: str) -> dict[str, str]:
    """datePublished and the author's name from the page's JSON-LD, where it states them simply."""
    found: dict[str, str] = {}
    for block in _json_ld_blocks(raw):
        try:
            data = json.loads(block)
        except ValueError:
            continue
        items = data if isinstance(data, list) else data.get("@graph", [data]) if isinstance(data, dict) else []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            if isinstance(item.get("datePublished"), str) and (d := parse_date(item["datePublished"])):
                found.setdefault("date", d)
            author = item.get("author")
            author = author[0] if isinstance(author, list) and author else author
            name = author.get("name") if isinstance(author, dict) else author
            if isinstance(name, str) and name.strip():
                found.setdefault("author", name.strip())
    return found


def _one_line(value: object) -> str | None:
    """A feed's value as a sidecar takes it: one line, no control characters."""
    if not isinstance(value, str):
        return None
    return " ".join(re.sub(r"[\x00-\x08\x0e-\x1f\x7f]", "", value).split()) or None


def _sidecar(doc: Document, entry: Entry, got: Fetched, raw: str) -> dict[str, str]:
    """What the citation shows beyond the page itself: the url it came from, and what the page does not state.

    The page's own metadata wins (meta tags, <title>, its dateline), as for any .html file; then
    its JSON-LD; then the feed entry. The url is always the one fetched (after redirects): a
    page's canonical link can claim any site. Feed values that address a model are dropped.
    """
    meta: dict[str, str] = {}
    if len(got.url) <= SIDECAR_FIELDS["url"]:
        meta["url"] = got.url
    ld = _json_ld(raw)
    offered = {
        "title": [entry.title],
        "outlet": [entry.outlet],
        "author": [ld.get("author"), entry.author],
        "date": [ld.get("date"), entry.date],
    }
    for key, values in offered.items():
        value = next((_one_line(v) for v in values if _one_line(v)), None)
        if getattr(doc, key) or not value or hostile.is_injection(value):
            continue
        meta[key] = value[: SIDECAR_FIELDS[key]]
    return meta


def _write(path: Path, data: bytes) -> None:
    with published(path) as tmp:
        tmp.write_bytes(data)


def _store(folder: Path, entry: Entry, got: Fetched, seen: _Seen, report: FetchReport, max_bytes: int) -> None:
    """Check the page with the product's own loader, then store it with its sidecar (or say why not)."""
    raw = _decode(got)
    rec = seen.record(entry)
    target = Path(rec["file"]) if rec else _file_for(folder, got.url)
    owner = seen.by_file.get(str(target))
    if entry.feed and owner is not None and owner.get("feed") != entry.feed and target.exists():
        # the same url from a second feed: the first feed's article stays as it was fetched
        raise _Refused(f"already indexed from {owner.get('feed') or 'a url given by hand'}; a second feed does not replace it")
    staging = folder / _STAGING / target.name
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_text(raw, encoding="utf-8")
    try:
        # the same load path as any .html file: cleaning, metadata, planted text left out
        doc = load_document(staging, max_bytes)
    except RagError as exc:
        raise _Refused(str(exc).removeprefix(f"{staging.name}: ")) from exc
    finally:
        staging.unlink(missing_ok=True)
    text_hash = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
    same = seen.by_text.get(text_hash)
    if same is not None:  # the same article at another url, or unchanged since the last fetch
        report.skipped.append(entry.url)
        return
    meta = {
        **_sidecar(doc, entry, got, raw),
        "fetched_from": entry.url,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "text_sha256": text_hash,
        **{k: v for k, v in (("feed", entry.feed), ("entry_id", entry.id), ("entry_updated", entry.updated)) if v},
    }
    if not entry.feed and owner is not None and isinstance(owner.get("feed"), str):
        # a feed's page fetched again by hand stays that feed's: its next poll still knows it
        meta.update({k: owner[k] for k in ("feed", "entry_id", "entry_updated") if isinstance(owner.get(k), str)})
    target.parent.mkdir(parents=True, exist_ok=True)
    # the page first: a crash before its sidecar leaves an article the next poll completes, never
    # a sidecar that marks as seen an entry that was not stored
    _write(target, raw.encode("utf-8"))
    _write(target.with_name(target.name + ".meta.json"), json.dumps(meta, indent=1, ensure_ascii=False).encode("utf-8"))
    seen.add({**meta, "file": str(target)})
    report.fetched.append(entry.url)


# ---------------------------------------------------------------- runs
def fetch(root: str | Path, settings: Settings, feeds: Iterable[str] = (), urls: Iterable[str] = ()) -> FetchReport:
    """Fetch the feeds' new entries and the given pages into ``<root>/fetched/``; the index is not touched.

    A feed entry fetched before is skipped unless the feed says it was revised, and one whose page
    failed recently until its back-off has passed (:class:`_Failures`); a url given by hand is
    fetched again (and re-indexed only if its text changed).
    """
    folder = Path(root) / layout.FETCHED_DIR
    report = FetchReport()
    seen = _Seen.scan(folder)
    failures = _Failures.read(folder)
    now = _clock()
    feeds, urls = list(feeds), list(urls)
    fetcher = Fetcher(settings, [*feeds, *urls])
    try:
        todo: list[Entry] = []
        planned: set[str] = set()
        for feed in dict.fromkeys(feeds):
            try:
                check_url(feed)
                entries = read_feed(fetcher, feed)
            except _Refused as exc:
                report.errors.append(f"{feed}: {exc}")
                continue
            report.feeds.append(feed)
            folder.mkdir(parents=True, exist_ok=True)
            failures.keep_listed(feed, entries)
            for e in entries:
                report.entries += 1
                if not e.url:  # no page, no article: its summary is not indexed either (see below)
                    report.errors.append(f"{feed}: entry {e.title or e.id or '(untitled)'!r} has no link; skipped")
                elif e.url in planned or (e.id and e.id in planned):
                    report.skipped.append(e.url)  # listed twice in the feed
                elif _known(seen.record(e), e):
                    report.skipped.append(e.url)
                elif failures.waiting(e, now):
                    report.failing.append(e.url)
                else:
                    todo.append(e)
                planned.update(k for k in (e.url, e.id) if k)
        for url in dict.fromkeys(urls):
            report.entries += 1
            todo.append(Entry(url=urldefrag(url.strip()).url))

        def get(e: Entry) -> Fetched | _Refused:
            try:
                return fetcher.get(e.url, "page")
            except _Refused as exc:
                return exc

        # Fetched at once (a slow server costs its timeout once, not per page), stored in order:
        # the first of two entries with the same text is the one kept.
        with ThreadPoolExecutor(max(1, settings.fetch_workers)) as pool:
            results = list(pool.map(get, todo))
        # A page that cannot be fetched is an error even when its feed entry carries a summary or
        # content: a summary is a teaser cut to fit, not the report a citation should quote, and an
        # entry stored from it would count as fetched, so the full page would never replace it.
        # Left unstored, the entry is tried again after a back-off (_Failures).
        for e, got in zip(todo, results):
            try:
                if isinstance(got, _Refused):
                    raise got
                _store(folder, e, got, seen, report, settings.max_file_bytes)
                failures.fetched(e)
            except _Refused as exc:
                report.errors.append(f"{e.url}: {exc}")
                if not exc.by_policy:
                    failures.failed(e, str(exc), now)
            except OSError as exc:  # this machine's disk, not the page: tried again at the next poll
                report.errors.append(f"{e.url}: cannot store the page in {folder}/ ({exc.strerror or exc})")
            except Exception as exc:  # noqa: BLE001 - one page that trips the parser must not stop the rest
                report.errors.append(f"{e.url}: cannot be read as an article ({type(exc).__name__}: {exc})")
                failures.failed(e, f"cannot be read as an article ({type(exc).__name__})", now)
        try:
            failures.save()
        except OSError as exc:
            report.errors.append(f"{failures.path}: cannot record the failing entries ({exc.strerror or exc}); they are tried again at the next poll")
    finally:
        fetcher.close()
    # a url is named as given, and one from a feed or the command line may hold a line break
    report.errors = [_CONTROL_CHARS.sub(lambda m: repr(m.group())[1:-1], e) for e in report.errors]
    return report


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def add(
    root: str | Path,
    settings: Settings | None = None,
    *,
    feeds: Iterable[str] = (),
    urls: Iterable[str] = (),
    paths: Iterable[str | Path] = (),
    progress: bool = False,
    fields: str | Mapping[str, str] | None = None,
) -> FetchReport:
    """``rag index add --feed URL --url URL... [PATH...]``: fetch, then add the pages (and ``paths``) to the index.

    The feeds read as RSS or Atom are recorded among the index's sources, so that a later sync
    polls them again. Nothing indexed is dropped, whatever fails.
    """
    settings = settings or Settings.from_env()
    root = Path(root)
    report = fetch(root, settings, feeds, urls)
    given = [*paths] + ([root / layout.FETCHED_DIR] if (root / layout.FETCHED_DIR).is_dir() else [])
    if given:
        report.index = writer.update(root, settings, add=given, feeds=report.feeds, progress=progress, fields=fields)
    return report


def sync(
    root: str | Path,
    settings: Settings | None = None,
    *,
    paths: Iterable[str | Path] | None = None,
    rebuild: bool = False,
    allow_remove: bool = False,
    progress: bool = False,
    fields: str | Mapping[str, str] | None = None,
) -> FetchReport:
    """``rag index [sync]``: without named paths, poll the recorded feeds first; then sync as :func:`rag.index.writer.update`.

    A feed that cannot be read this time keeps its pages: they are files under ``fetched/``,
    which every sync indexes.
    """
    settings = settings or Settings.from_env()
    followed = layout.recorded_feeds(root) if paths is None else []
    report = fetch(root, settings, followed) if followed else FetchReport()
    report.index = writer.update(root, settings, sync=paths, rebuild=rebuild, allow_remove=allow_remove, progress=progress, fields=fields)
    return report
