"""The hostile-user probe of issue 33, re-run: one case per thing a hostile user tried, each with the one line they saw.

Each case drives the product as that user did (the real `rag` command, the Python API with the
extractive backend, pages and feeds from real servers on 127.0.0.1), asserts the safe behaviour and
returns the outcome the user saw: the error line, or a short account of what happened.

    python -m tests.test_probe        # every case outside pytest, as a Markdown table for the issue's note

Deeper tests of each behaviour live elsewhere (test_edges, test_mistakes, test_fetch_policy, ...);
this file is the probe's checklist.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rag import RAG, RagError
from rag.index.reader import Index
from rag.index.writer import build
from rag.ingest import feeds
from rag.settings import Settings

from .injection_cases import CLASSES
from .test_cli import rag_cmd
from .test_feeds import Site, article
from .test_fetch_policy import SECRET, Drip, Internal, _ask_ui, _atom, _feed

BODY = (
    "The Zorblat Bridge over the Vesna river opened to traffic on 4 May 2019. Mayor Ilse Brandt cut the ribbon at the ceremony. "
    "The bridge took three years to build and cost 40 million crowns, the city council said.\n"
)
GOOD = "Zorblat Bridge opens\n\nMay 5, 2019\n\n" + BODY
OTHER = "Harbour ferry resumes\n\nJune 2, 2019\n\nThe Vesna harbour ferry resumed service on 1 June 2019 after repairs to its engine, the port authority said.\n"
RIBBON = "Who cut the ribbon at the Zorblat Bridge?"
LATEST = "What is the latest on the Zorblat Bridge?"

Case = Callable[[Path], str]
CASES: list[tuple[str, Case, str | None]] = []  # (name, function, xfail reason or None)


def case(name: str, xfail: str | None = None) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES.append((name, fn, xfail))
        return fn

    return register


# ---------------------------------------------------------------- shared parts
_SHARED: dict[str, object] = {}


def _scratch() -> Path:
    if "dir" not in _SHARED:
        _SHARED["dir"] = Path(tempfile.mkdtemp(prefix="rag-probe-"))
        _TMP_ROOTS.append(str(_SHARED["dir"]))
    return _SHARED["dir"]  # type: ignore[return-value]


def _cached(key: str, make: Callable[[Path], object]) -> object:
    if key not in _SHARED:
        d = _scratch() / key
        d.mkdir()
        _SHARED[key] = make(d)
    return _SHARED[key]


def _make_base(d: Path) -> Path:
    """root/corpus (two articles) and root/index built from it."""
    (d / "corpus").mkdir()
    (d / "corpus" / "a.txt").write_text(GOOD)
    (d / "corpus" / "b.txt").write_text(OTHER)
    report = build(d / "index", [d / "corpus"])
    assert not report.errors and len(report.added) == 2
    return d


def base() -> Path:
    """The shared small corpus and index (read only: a case that changes it works on its own copy)."""
    return _cached("base", _make_base)  # type: ignore[return-value]


def base_copy(tmp: Path) -> Path:
    """A private copy of the shared corpus and index; its sources are re-pointed at the copied corpus."""
    root = tmp / "base"
    shutil.copytree(base(), root, symlinks=True)
    build(root / "index", [root / "corpus"])  # the copy's recorded sources: its own corpus (nothing to embed)
    return root


def _make_hostile(d: Path) -> Path:
    """Articles whose dates no one can compute with: a sidecar, a record field and a page's meta tag."""
    c = d / "corpus"
    c.mkdir()
    (c / "good.txt").write_text(GOOD)
    (c / "side.txt").write_text("Quorn Bridge opens\n\n" + BODY.replace("Zorblat", "Quorn").replace("Ilse Brandt", "Ana Kovac"))
    (c / "side.txt.meta.json").write_text(json.dumps({"date": "99999999999"}))
    (c / "page.html").write_text(
        "<html><head><title>Paxo bridge</title><meta property='article:published_time' content='99999999999'></head>"
        f"<body><article><p>{BODY.replace('Zorblat', 'Paxo').replace('Ilse Brandt', 'Jan Novak')}</p></article></body></html>"
    )
    records = [
        {
            "id": "epoch",
            "title": "Rill bridge",
            "date": 99999999999,
            "text": BODY.replace("Zorblat", "Rill").replace("Ilse Brandt", "Mira Sol"),
        },
        {
            "id": "future",
            "title": "Zorblat Bridge news",
            "date": "9999-12-31",
            "text": "Zorblat Bridge news\n\nThe Zorblat Bridge will be painted green next spring, the council said in a short note.",
        },
    ]
    (c / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    report = build(d / "index", [c])
    assert not report.errors, report.errors
    return d / "index"


def hostile() -> Path:
    return _cached("hostile", _make_hostile)  # type: ignore[return-value]


def _make_warnings(d: Path) -> tuple[Path, subprocess.CompletedProcess]:
    c = d / "corpus"
    c.mkdir()
    (c / "good.txt").write_text(GOOD)
    (c / "amp.html").write_text(
        "<html><head><title>Dam &amp; lock open on the Vesna</title></head><body><article>"
        "<p>The new dam and lock on the Vesna river opened on Tuesday, the water board said.</p></article></body></html>"
    )
    (c / "script.html").write_text(
        "<html><head><title>Vote in Quill</title></head><body><article>"
        "<p>The Quill council held its vote on the harbour plan.<script>steal('cookies')</script> The plan passed by nine votes to two.</p>"
        "</article></body></html>"
    )
    (c / "baddate.txt").write_text("Ferry note\n\nThe Vesna ferry timetable changed in spring, the operator said on its website.\n")
    (c / "baddate.txt.meta.json").write_text(json.dumps({"date": "2022-13-45"}))
    (c / "gone.txt").symlink_to(d / "nowhere.txt")
    p = rag_cmd("index", str(c), "--index", str(d / "index"))
    assert "Traceback" not in p.stderr, p.stderr
    return d / "index", p


def warnings_index() -> tuple[Path, subprocess.CompletedProcess]:
    return _cached("warnings", _make_warnings)  # type: ignore[return-value]


@contextlib.contextmanager
def site() -> Iterator[Site]:
    s = Site()
    s.route("/robots.txt", "User-agent: *\nAllow: /\n", ctype="text/plain")
    try:
        yield s
    finally:
        s.server.shutdown()
        s.server.server_close()


@contextlib.contextmanager
def serving(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def patched(obj: object, name: str, value: object) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def one_line(p: subprocess.CompletedProcess, *expected: str) -> str:
    """The command failed with exactly one error line holding ``expected``; that line (argparse's usage block aside)."""
    assert p.returncode != 0, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and "unexpected" not in p.stderr, p.stderr
    lines = [
        x for x in p.stderr.strip().splitlines() if x.startswith("error:") or ": error:" in x
    ]  # besides argparse's usage block, a "1 error:" heading
    assert len(lines) == 1 and all(x.startswith(("usage:", " ", "1 error")) for x in p.stderr.strip().splitlines() if x not in lines), (
        p.stderr
    )
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def no_traceback(text: str) -> None:
    assert "Traceback" not in text and "unexpected" not in text, text


_TMP_ROOTS: list[str] = []  # the scratch folders, shown as <tmp> in outcomes


def scrub(text: str) -> str:
    for root in sorted(_TMP_ROOTS, key=len, reverse=True):
        text = text.replace(root, "<tmp>")
    return text


def short(text: str, n: int = 70) -> str:
    text = " ".join(scrub(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def ask_cli(index: Path, question: str, *extra: str, env: dict | None = None) -> dict:
    p = rag_cmd("ask", question, "--llm", "extractive", "--json", "--index", str(index), *extra, env=env)
    assert p.returncode == 0, p.stderr
    no_traceback(p.stderr)
    return json.loads(p.stdout)


def refused(line: str) -> str:
    return "refused: " + scrub(line.split("error: ", 1)[-1])


# ================================================================ the earlier probe
@case("mistyped sync path keeps the index")
def mistyped_sync_path(tmp: Path) -> str:
    root = base_copy(tmp)
    idx = root / "index"
    before = set(Index.open(idx).docs)
    lines = []
    for args in (["index", "sync", str(root / "corpus_typo")], ["index", str(root / "corpsu")]):
        lines.append(one_line(rag_cmd(*args, "--index", str(idx)), "no such file or folder", "nothing changed"))
    assert set(Index.open(idx).docs) == before
    return refused(lines[0]) + f" (both forms; {len(before)} articles kept)"


def _damaged(tmp: Path, damage: str) -> str:
    root = base_copy(tmp)
    idx = root / "index"
    current = idx / "CURRENT"
    broken = current if damage == "CURRENT" else idx / current.read_text().strip() / "manifest.json"
    broken.write_bytes(b"\xff\xfe{garbage")
    line = one_line(rag_cmd("list", "--index", str(idx)), "rag index --rebuild")
    p = rag_cmd("index", "--rebuild", "--index", str(idx))
    assert p.returncode == 0 and "2 added" in p.stdout, p.stderr
    assert set(Index.open(idx).docs) == {"a.txt", "b.txt"}
    return f"{short(refused(line), 130)}; then `rag index --rebuild`: {short(p.stdout.splitlines()[-1], 60)}"


@case("garbled manifest, then `rag index --rebuild`")
def garbled_manifest(tmp: Path) -> str:
    return _damaged(tmp, "manifest")


@case("garbled CURRENT, then `rag index --rebuild`")
def garbled_current(tmp: Path) -> str:
    return _damaged(tmp, "CURRENT")


@case("two writers at once")
def two_writers(tmp: Path) -> str:
    root = base_copy(tmp)
    (tmp / "new.txt").write_text(GOOD.replace("Zorblat", "Wexley"))
    with open(root / "index" / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        line = one_line(
            rag_cmd("index", "add", str(tmp / "new.txt"), "--index", str(root / "index")), "another process is updating the index"
        )
    assert set(Index.open(root / "index").docs) == {"a.txt", "b.txt"}
    return refused(line)


@case("read-only index folder")
def read_only_index(tmp: Path) -> str:
    root = base_copy(tmp)
    target = Path("/sys/newsrag-index") if os.geteuid() == 0 else root / "index"  # permissions do not stop root
    if target != Path("/sys/newsrag-index"):
        os.chmod(target, 0o555)
    try:
        (root / "corpus" / "c.txt").write_text(GOOD.replace("Zorblat", "Wexley"))
        line = one_line(rag_cmd("index", str(root / "corpus"), "--index", str(target)), "cannot write to the index folder")
    finally:
        os.chmod(root / "index", 0o755)
    return refused(line)


@case("`rag ask --top-k 0`")
def top_k_zero(tmp: Path) -> str:
    return refused(
        one_line(rag_cmd("ask", RIBBON, "--top-k", "0", "--llm", "extractive", "--index", str(base() / "index")), "top-k", "at least 1")
    )


BILLION_LAUGHS = (
    "<?xml version='1.0'?><!DOCTYPE rss [<!ENTITY lol 'lol'>"
    + "".join(f"<!ENTITY lol{i + 1} '{('&lol' + (str(i) if i else '') + ';') * 10}'>" for i in range(9))
    + "]><rss version='2.0'><channel><title>&lol9;</title><link>{base}/</link>"
    "<item><title>&lol9;</title><link>{good}</link><guid>g1</guid><description>&lol9;</description></item></channel></rss>"
)


@case("XML entity bomb (billion laughs) in a feed")
def billion_laughs(tmp: Path) -> str:
    with site() as s:
        good = s.route("/good.html", article(1))
        feed = s.route("/feed.xml", BILLION_LAUGHS.format(base=s.base, good=good), ctype="application/rss+xml")
        t0 = time.monotonic()
        report = feeds.add(tmp / "index", Settings(), feeds=[feed])
        took = time.monotonic() - t0
    assert took < 20, took
    docs = Index.open(tmp / "index").docs.values() if (tmp / "index" / "CURRENT").exists() else []
    assert all("lollollol" not in (d.text + (d.title or "")) for d in docs)
    what = f"{len(report.fetched)} page fetched" if report.fetched else "nothing indexed"
    return f"harmless in {took:.1f}s: {what}" + (f"; {short(report.errors[0], 60)}" if report.errors else "; no entity expanded")


XXE = (
    "<?xml version='1.0'?><!DOCTYPE rss [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>"
    "<rss version='2.0'><channel><title>Ledger</title><link>{base}/</link>"
    "<item><title>Leak &xxe;</title><link>{good}</link><guid>g1</guid><description>&xxe;</description></item></channel></rss>"
)


@case("XXE (external entity to file:///etc/passwd) in a feed")
def xxe(tmp: Path) -> str:
    with site() as s:
        good = s.route("/good.html", article(2))
        feed = s.route("/feed.xml", XXE.format(base=s.base, good=good), ctype="application/rss+xml")
        report = feeds.add(tmp / "index", Settings(), feeds=[feed])
    docs = list(Index.open(tmp / "index").docs.values()) if (tmp / "index" / "CURRENT").exists() else []
    stored = " ".join(d.text + (d.title or "") + json.dumps(d.meta if hasattr(d, "meta") else {}) for d in docs)
    for f in (tmp / "index").rglob("*"):
        if f.is_file() and f.stat().st_size < 5_000_000:
            assert b"root:x:0:0" not in f.read_bytes(), f
    assert "root:x:0:0" not in stored and not any("root:x" in e for e in report.errors)
    what = f"{len(report.fetched)} page fetched" if report.fetched else "nothing indexed"
    return f"harmless: {what}, /etc/passwd read into nothing" + (f"; {short(report.errors[0], 50)}" if report.errors else "")


@case("`file:` and `gopher:` URLs and redirects to them")
def file_and_gopher(tmp: Path) -> str:
    with site() as s:
        to_file = s.route("/to-file", "", status=302, Location="file:///etc/passwd")
        to_gopher = s.route("/to-gopher", "", status=302, Location="gopher://127.0.0.1:70/1")
        urls = ["file:///etc/passwd", "gopher://127.0.0.1:70/1", to_file, to_gopher]
        p = rag_cmd("index", "add", "--url", *urls, "--index", str(tmp / "index"))
    no_traceback(p.stderr)
    assert p.returncode != 0
    lines = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == len(urls), p.stderr
    for u in urls:
        assert any(u in line and "not an http or https URL" in line for line in lines), (u, p.stderr)
    assert not (tmp / "index" / "CURRENT").exists() or not Index.open(tmp / "index").docs
    return f"refused all {len(urls)}, one line each, e.g. " + short(lines[-1].removeprefix("error: ").replace(s.base, ""), 90)


# ================================================================ this probe's failures
@case("date 99999999999 in a sidecar, a record and a page's article:published_time")
def huge_dates(tmp: Path) -> str:
    idx = hostile()
    docs = Index.open(idx).docs
    assert docs["side.txt"].date is None and docs["page.html"].date is None and docs["records.jsonl#epoch"].date is None
    out = ask_cli(idx, "Who cut the ribbon at the Zorblat Bridge this week?")
    assert not out["abstained"] and "Ilse Brandt" in out["answer"], out["answer"]
    rag = RAG.open(idx, llm="extractive")
    for q in (
        "Who cut the ribbon at the Quorn Bridge last month?",
        "Who cut the ribbon at the Paxo Bridge?",
        "Who cut the ribbon at the Rill Bridge?",
    ):
        a = rag.ask(q)
        assert not a.abstained, (q, a.text)
    return "answered: " + short(out["answer"], 60) + " (and the three undated ones)"


@case("record dated 9999-12-31 asked for the latest")
def far_future_record(tmp: Path) -> str:
    idx = hostile()
    rag = RAG.open(idx, llm="extractive")
    assert rag.index.docs["records.jsonl#future"].date is None
    top = rag.retrieve(LATEST)[0]
    assert top.doc.id != "records.jsonl#future", [p.doc.id for p in rag.retrieve(LATEST)]
    return f"first passage is {top.doc.id} ({top.doc.date}); the 9999-12-31 record is undated"


@case("UI visitor's base URL http://127.0.0.1:PORT/v1")
def ui_local_endpoint(tmp: Path) -> str:
    with serving(Internal()) as internal:
        error = _ask_ui(base(), internal.url())
        assert internal.hits == [], internal.hits
    assert "private or local network" in error and SECRET not in error and "\n" not in error, error
    return "refused, no request sent: " + short(error, 80)


@case("one feed overwriting another's article")
def feed_overwrite(tmp: Path) -> str:
    with site() as s:
        good = s.route("/good.html", article(1))
        feed_a = s.route("/a.xml", _atom(s, [(good, good, "2024-03-01T09:00:00Z")]), ctype="application/atom+xml")
        report = feeds.add(tmp / "index", Settings(), feeds=[feed_a])
        assert report.fetched == [good], report.errors
        s.route("/good.html", article(3))
        feed_c = s.route("/c.xml", _atom(s, [("urn:c:1", good, "2025-01-01T09:00:00Z")]), ctype="application/atom+xml")
        report = feeds.add(tmp / "index", Settings(), feeds=[feed_c])
    docs = Index.open(tmp / "index").docs.values()
    assert sum("Town1" in d.text for d in docs) == 1 and not any("Town3" in d.text for d in docs)
    line = next(e for e in report.errors if "second feed does not replace it" in e)
    assert "\n" not in line
    return "refused: " + short(line.replace(s.base, ""), 90)


@case("server sending headers a byte at a time")
def drip_headers(tmp: Path) -> str:
    with serving(Drip(gap_s=0.1)) as srv:
        url = f"http://127.0.0.1:{srv.server_address[1]}/slow.html"
        t0 = time.monotonic()
        p = rag_cmd("index", "add", "--url", url, "--index", str(tmp / "index"), env={"RAG_FETCH_TOTAL_S": "1", "RAG_FETCH_TIMEOUT_S": "2"})
        took = time.monotonic() - t0
    line = one_line(p, "took over 1s in all")
    assert took < 30, took
    return refused(line.replace(url, "<url>"))


@case("`Content-Encoding: gzip, gzip` bomb")
def gzip_bomb(tmp: Path) -> str:
    bomb = gzip.compress(gzip.compress(b"<p>" + b" " * 20_000_000 + b"</p>"))
    with site() as s:
        url = s.route("/bomb.html", bomb, Content_Encoding="gzip, gzip")
        report = feeds.add(tmp / "index", Settings(max_file_bytes=100_000), urls=[url])
    assert report.fetched == [] and len(report.errors) == 1 and "over the 100,000-byte limit" in report.errors[0], report.errors
    return f"refused ({len(bomb):,} bytes sent): " + short(report.errors[0].replace(url, "<url>"), 80)


@case('280 KB of unclosed `<script type="application/ld+json">`')
def unclosed_json_ld(tmp: Path) -> str:
    page = article(7) + '<script type="application/ld+json">{"datePublished": "2019' * 4_800
    assert 270_000 < len(page) < 300_000
    with site() as s:
        url = s.route("/ld.html", page)
        t0 = time.monotonic()
        report = feeds.add(tmp / "index", Settings(), urls=[url])
        took = time.monotonic() - t0
    assert report.fetched == [url], report.errors
    assert took < 20, took
    return f"indexed in {took:.1f}s"


@case("194 KB gzip of blank lines as a .jsonl.gz record file")
def blank_gzip(tmp: Path) -> str:
    corpus = tmp / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(GOOD)
    data = gzip.compress(b"\n" * 200_000_000, compresslevel=9)
    (corpus / "blank.jsonl.gz").write_bytes(data)
    t0 = time.monotonic()
    p = rag_cmd("index", str(corpus), "--index", str(tmp / "index"))
    took = time.monotonic() - t0
    no_traceback(p.stderr)
    assert took < 60, took
    line = next(x for x in p.stderr.splitlines() if "blank.jsonl.gz" in x)
    assert "blank lines" in line or "no record" in line, p.stderr
    assert set(Index.open(tmp / "index").docs) == {"a.txt"}
    return f"stopped in {took:.0f}s ({len(data) // 1000} KB file): " + short(line.removeprefix("error: "), 80)


def _record(i: int) -> str:
    return json.dumps({"id": f"g{i}", "title": f"Town{i}", "text": f"The council of Town{i} approved {i + 3} footbridges on Tuesday."})


@case("a .jsonl line of 100,000 `[`")
def deep_jsonl(tmp: Path) -> str:
    corpus = tmp / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text(_record(1) + "\n" + "[" * 100_000 + "\n" + _record(2) + "\n")
    report = build(tmp / "index", [corpus])
    assert set(Index.open(tmp / "index").docs) == {"a.jsonl#g1", "a.jsonl#g2"}
    errors = [str(e) for e in report.errors]
    assert len(errors) == 1 and "line 2" in errors[0] and "\n" not in errors[0], errors
    return "row skipped, 2 others indexed: " + short(errors[0], 70)


@case("a 5,000-digit integer in a .json record")
def big_int_json(tmp: Path) -> str:
    corpus = tmp / "corpus"
    corpus.mkdir()
    (corpus / "b.json").write_text(f'[{_record(3)}, {{"id": "x", "n": {"7" * 5000}, "text": "a b"}}, {_record(4)}]')
    report = build(tmp / "index", [corpus])
    assert set(Index.open(tmp / "index").docs) == {"b.json#g3", "b.json#g4"}
    errors = [str(e) for e in report.errors]
    assert len(errors) == 1 and "record 2" in errors[0] and "\n" not in errors[0], errors
    return "record skipped, 2 others indexed: " + short(errors[0], 70)


@case("symlink loop in the corpus")
def symlink_loop(tmp: Path) -> str:
    corpus = tmp / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text(GOOD)
    (corpus / "loop_a.txt").symlink_to(corpus / "loop_b.txt")
    (corpus / "loop_b.txt").symlink_to(corpus / "loop_a.txt")
    (corpus / "self").symlink_to(corpus / "self", target_is_directory=True)
    p = rag_cmd("index", str(corpus), "--index", str(tmp / "index"))
    no_traceback(p.stderr)
    assert list(Index.open(tmp / "index").docs) == ["good.txt"]
    said = [x for x in (p.stdout + p.stderr).splitlines() if "loop_a.txt" in x]
    assert said and "symbolic link loop" in said[0], p.stdout + p.stderr
    return "named, the rest indexed: " + short(said[0].removeprefix("error: "), 70)


@case('`--as-of 9999-12-31` with "this week"')
def as_of_far_future(tmp: Path) -> str:
    p = rag_cmd("ask", "What happened this week?", "--as-of", "9999-12-31", "--llm", "extractive", "--index", str(hostile()))
    return refused(one_line(p, "as_of"))


@case('`--as-of 0001-01-03` with "last month"')
def as_of_year_one(tmp: Path) -> str:
    p = rag_cmd("ask", "What happened last month?", "--as-of", "0001-01-03", "--llm", "extractive", "--index", str(hostile()))
    return refused(one_line(p, "as_of"))


def _store_url(url: str) -> str:
    p = rag_cmd("ask", RIBBON, "--llm", "extractive", "--index", str(base() / "index"), env={"RAG_STORE": "qdrant", "RAG_STORE_URL": url})
    return refused(one_line(p, "RAG_STORE_URL"))


@case("`RAG_STORE_URL=file://x`")
def store_url_file(tmp: Path) -> str:
    return _store_url("file://x")


@case("`RAG_STORE_URL=http://[::1`")
def store_url_bracket(tmp: Path) -> str:
    return _store_url("http://[::1")


@case("`RAG_STORE_URL` with spaces")
def store_url_spaces(tmp: Path) -> str:
    return _store_url("http://local host:6333")


@case('API `rag.ask(q, top_k="3")`')
def api_top_k_string(tmp: Path) -> str:
    rag = RAG.open(base() / "index", llm="extractive")
    try:
        rag.ask(RIBBON, top_k="3")
    except RagError as exc:
        assert "top_k" in str(exc) and "\n" not in str(exc)
        return f"RagError: {exc}"
    raise AssertionError("top_k='3' was accepted")


# ================================================================ the warnings
@case("`&amp;` in an HTML `<title>`")
def amp_title(tmp: Path) -> str:
    idx, _ = warnings_index()
    title = Index.open(idx).docs["amp.html"].title
    assert title == "Dam & lock open on the Vesna", f"the title was cut to {title!r} at the &amp;"
    return f"title kept: {title}"


@case("inline `<script>` inside a `<p>`")
def script_in_paragraph(tmp: Path) -> str:
    idx, _ = warnings_index()
    rag = RAG.open(idx, llm="extractive")
    passages = [p for p in rag.retrieve("How did the Quill council vote on the harbour plan?") if p.doc.id == "script.html"]
    assert passages, "the page was not retrieved"
    text = passages[0].chunk.text
    assert "steal" not in text
    assert "held its vote on the harbour plan." in text and "passed by nine votes to two" in text, text
    return "one passage: " + short(text, 80)


@case("sidecar date `2022-13-45`")
def impossible_sidecar_date(tmp: Path) -> str:
    idx, _ = warnings_index()
    p = rag_cmd("list", "--index", str(idx))
    assert p.returncode == 0, p.stderr
    row = next(r for r in p.stdout.splitlines() if "baddate.txt" in r)
    assert "2022-13-45" not in p.stdout
    return "not listed as given: " + short(row, 80)


@case("dangling symlink in the corpus")
def dangling_symlink(tmp: Path) -> str:
    _, p = warnings_index()
    said = [x for x in (p.stdout + p.stderr).splitlines() if "gone.txt" in x]
    assert said and "link to nothing" in said[0], p.stdout + p.stderr
    return "named: " + short(said[0].removeprefix("error: "), 80)


@case("orphaned generation after a writer killed before the swap")
def orphaned_generation(tmp: Path) -> str:
    root = base_copy(tmp)
    idx = root / "index"
    (tmp / "c.txt").write_text(GOOD.replace("Zorblat", "Wexley"))
    (tmp / "d.txt").write_text(OTHER.replace("harbour", "river"))
    before = {g.name for g in idx.glob("gen-*")}
    p = subprocess.run(
        [sys.executable, "-m", "rag.cli", "index", "add", str(tmp / "c.txt"), "--index", str(idx)],
        env={**os.environ, "RAG_FAULT": "before_swap"},
        capture_output=True,
        timeout=300,
    )
    assert p.returncode == -9, p.stderr
    orphans = {g.name for g in idx.glob("gen-*")} - before
    assert orphans, "the killed writer left no generation: nothing to clean"
    p = rag_cmd("index", "add", str(tmp / "d.txt"), "--index", str(idx))
    assert p.returncode == 0, p.stderr
    left = {g.name for g in idx.glob("gen-*")}
    assert not orphans & left, (orphans, left)
    assert not list(idx.glob(".tmp-*"))
    return f"{', '.join(sorted(orphans))} gone after the next write ({len(left)} generations left)"


@case("`--as-of 2022-05-01junk`")
def as_of_junk(tmp: Path) -> str:
    p = rag_cmd("ask", "What happened this week?", "--as-of", "2022-05-01junk", "--llm", "extractive", "--index", str(base() / "index"))
    return refused(one_line(p, "as_of"))


@case("feed entry and redirect to another 127.0.0.1 port")
def other_local_port(tmp: Path) -> str:
    with site() as mine, site() as other:
        inside = other.route("/admin.html", article(9))
        good = mine.route("/good.html", article(1))
        jump = mine.route("/jump.html", "", status=302, Location=inside)
        feed = mine.route("/feed.xml", _feed(mine, [good, inside, jump]), ctype="application/rss+xml")
        report = feeds.add(tmp / "index", Settings(), feeds=[feed])
        assert report.fetched == [good], report.errors
        assert other.hits.get("/admin.html", 0) == 0
        assert any(inside in e and "private or local network" in e for e in report.errors), report.errors
        assert any(jump in e and "redirects to" in e for e in report.errors), report.errors
        allowed = feeds.add(tmp / "index", Settings(fetch_allow_private=f"127.0.0.1:{other.server.server_port}"), feeds=[feed])
        assert other.hits.get("/admin.html", 0) >= 1 and not allowed.errors, allowed.errors
        line = next(e for e in report.errors if inside in e).replace(inside, "<other port>")
    return "refused: " + short(line, 70) + "; fetched once RAG_FETCH_ALLOW_PRIVATE allows it"


# ================================================================ from the code and notes (item 7)
@case("`--rebuild` while a file fails to load")
def rebuild_keeps_unloadable(tmp: Path) -> str:
    root = base_copy(tmp)
    page = root / "corpus" / "page.html"
    page.write_text("<html><body><p>The Zorblat Bridge over the Vesna river was repainted in May 2020.</p></body></html>")
    p = rag_cmd("index", str(root / "corpus"), "--index", str(root / "index"))
    assert p.returncode == 0 and "1 added" in p.stdout, p.stderr
    page.write_text(page.read_text().replace("</p>", "</p><![foo bar]>"))  # HTML that will not parse
    p = rag_cmd("index", "--rebuild", "--index", str(root / "index"))
    no_traceback(p.stderr)
    assert "page.html" in Index.open(root / "index").docs, "the rebuild dropped the page that failed to load"
    line = next(x for x in p.stderr.splitlines() if "page.html" in x)
    assert "kept the last indexed version" in line, p.stderr
    return "kept: " + short(line.removeprefix("error: "), 80)


@case("a file changing between two reads of one update")
def file_changes_mid_update(tmp: Path) -> str:
    import rag.index.plan as plan

    root = base_copy(tmp)
    target = root / "corpus" / "c.txt"
    tunnel = "Wexley tunnel opens\n\nJune 3, 2021\n\nThe Wexley tunnel under the Orla hills opened on 2 June 2021. "
    target.write_text(tunnel + "Engineer Petra Lind led the works, which took six years.\n")
    real = plan.load_files

    def changing(*args, **kwargs):  # saved again right after the loader read it, before the update reads it to chunk
        loaded = real(*args, **kwargs)
        target.write_text(tunnel + "Engineer Tomas Ruud led the works; they took six years and one month.\n")
        return loaded

    with patched(plan, "load_files", changing):
        try:
            report = build(root / "index", [root / "corpus"])
        except RagError as exc:
            raise AssertionError(f"the update aborted: {exc}") from exc
    answer = RAG.open(root / "index", llm="extractive").ask("Who led the works on the Wexley tunnel?")
    raw = target.read_text()
    for c in answer.citations:  # whatever was indexed, its quotes are the file's own text
        if c.source_file == "c.txt":
            assert c.quote in raw and raw[c.start : c.end] == c.quote, f"cited {c.quote!r}, not in the file as it is"
    assert "Tomas Ruud" in answer.text, f"answered from the text read before the change: {answer.text}"
    said = next(x for x in answer.text.split(". ") if "Tomas Ruud" in x)
    return f"re-read, not aborted ({short(report.summary(), 30)}); answered: {short(said, 60)}"


@case("a broken feed entry on the next poll")
def broken_entry_not_refetched(tmp: Path) -> str:
    with site() as s:
        good = s.route("/good.html", article(1))
        broken = s.route("/broken.html", "<html><body><nav>Home</nav></body></html>")  # no article text
        feed = s.route("/feed.xml", _feed(s, [good, broken]), ctype="application/rss+xml")
        first = feeds.add(tmp / "index", Settings(), feeds=[feed])
        assert first.fetched == [good] and any(broken in e for e in first.errors), first.errors
        feeds.sync(tmp / "index", Settings())
        hits = s.hits.get("/broken.html", 0)
    assert hits == 1, f"the broken entry was fetched {hits} times in two polls"
    return f"fetched once in two polls: {short(next(e for e in first.errors if broken in e).replace(s.base, ''), 60)}"


# ================================================================ planted instructions
@case('page with an "Editor\'s note: the correct answer is…" and a fake [1] quote block')
def planted_instructions(tmp: Path) -> str:
    picked = [c for c in CLASSES if c[1] in ("harwick-dam.txt", "kinsale-lighthouse.txt")]
    assert len(picked) == 2
    corpus = tmp / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(GOOD)
    for _, name, text, *_ in picked:
        (corpus / name).write_text(text)
    build(tmp / "index", [corpus])
    said = []
    for _, _, _, question, right, payload in picked:
        out = ask_cli(tmp / "index", question)
        quotes = " ".join(c["quote"] for c in out["citations"])
        assert not out["abstained"] and right in out["answer"], out["answer"]
        assert payload.lower() not in out["answer"].lower() and payload.lower() not in quotes.lower(), out
        said.append(short(out["answer"], 45))
    return "answered right, planted text neither cited nor answered: " + " / ".join(said)


# ================================================================ pytest, and the table outside it
def _params():
    for _name, fn, xfail in CASES:
        marks = [pytest.mark.xfail(strict=False, reason=xfail)] if xfail else []
        yield pytest.param(fn, id=fn.__name__, marks=marks)


@pytest.fixture(scope="module")
def _scratch_cleanup():
    yield
    if "dir" in _SHARED:
        shutil.rmtree(_SHARED["dir"], ignore_errors=True)


@pytest.mark.parametrize("fn", list(_params()))
def test_probe_case(fn: Case, tmp_path: Path, _scratch_cleanup) -> None:
    _TMP_ROOTS.append(str(tmp_path))
    outcome = scrub(fn(tmp_path))
    print(outcome)
    assert isinstance(outcome, str) and outcome and "\n" not in outcome and "Traceback" not in outcome, outcome


def main() -> int:
    print("| case | outcome | pass/fail |")
    print("|---|---|---|")
    failed = 0
    for name, fn, xfail in CASES:
        tmp = Path(tempfile.mkdtemp(prefix=f"probe-{fn.__name__}-", dir=_scratch()))
        _TMP_ROOTS.append(str(tmp))
        try:
            outcome = scrub(fn(tmp))
            assert "\n" not in outcome and "Traceback" not in outcome, outcome
            verdict = "pass"
        except Exception as exc:  # noqa: BLE001 - each failure is a row of the table
            outcome = short(f"{type(exc).__name__}: {exc}", 160)
            verdict = "fail" + (f" (expected: {xfail})" if xfail else "")
            failed += not xfail
        print(f"| {name} | {outcome.replace('|', '/')} | {verdict} |", flush=True)
    shutil.rmtree(_scratch(), ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
