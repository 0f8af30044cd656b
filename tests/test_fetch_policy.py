"""The server sends requests others steer only to public addresses, or where the operator allows (issue 33).

Every server here is a real one on 127.0.0.1: the "internal service" a visitor or a feed must not
reach, and the operator's own feeds and endpoint that must still work.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rag import RAG
from rag.index.reader import Index
from rag.index.writer import build
from rag.ingest.feeds import add
from rag.ingest.uploads import Uploads
from rag.settings import Settings
from rag.types import RagError
from ui.app import Handlers

from .test_feeds import Site, article

SECRET = "INTERNAL-ADMIN-PAGE-7731"
QUESTION = "Who cut the ribbon at the Zorblat Bridge?"


class Internal(ThreadingHTTPServer):
    """A service behind the firewall: answers every request with HTTP 404 and a body no visitor may read."""

    daemon_threads = True

    def __init__(self):
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self):
                server.hits.append(self.path)
                body = json.dumps({"error": {"message": SECRET}}).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _reply

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/v1"


@pytest.fixture()
def internal():
    srv = Internal()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def small_index(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("policy")
    (d / "corpus").mkdir()
    (d / "corpus" / "a.txt").write_text(
        "Zorblat Bridge opens\n\nMay 5, 2019\n\nThe Zorblat Bridge over the Vesna river opened to traffic on 4 May 2019. "
        "Mayor Ilse Brandt cut the ribbon at the ceremony.\n"
    )
    build(d / "index", [d / "corpus"])
    return d


def _ask_ui(root: Path, base_url: str, api_key: str = "sk-visitor", **settings: object) -> str:
    """What the chat shows a visitor who asks with the OpenAI-compatible backend at ``base_url``: the error line."""
    rag = RAG.open(root / "index", llm="extractive", **settings)
    handlers = Handlers(rag, Uploads(rag, root / "corpus"))
    conv = None
    for reply in handlers.respond(QUESTION, None, "openai", 3, base_url, "m", api_key):
        conv = reply[1] if isinstance(reply[1], list) else conv
    return conv[-1].error or ""


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "0.0.0.0"])
def test_a_visitor_cannot_make_the_server_post_to_a_local_port(small_index, internal, host):
    error = _ask_ui(small_index, internal.url(host))
    assert "private or local network" in error and "RAG_FETCH_ALLOW_PRIVATE" in error, error
    assert internal.hits == []


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://10.0.0.7:8080/v1", "http://192.168.1.1/v1", "http://[fd00::1]/v1"])
def test_metadata_and_private_network_addresses_are_refused_before_any_connection(small_index, url):
    error = _ask_ui(small_index, url)
    assert "private or local network" in error, error


def test_an_allowed_host_is_reached_but_its_reply_body_is_never_shown(small_index, internal):
    error = _ask_ui(small_index, internal.url(), fetch_allow_private=f"127.0.0.1:{internal.port}")
    assert internal.hits, "the operator allowed this host: the request must be sent"
    assert "HTTP 404" in error and SECRET not in error, error


def test_the_operators_own_endpoint_stays_allowed(small_index, internal):
    # the operator configured it: no visitor key, no allow list needed
    error = _ask_ui(small_index, "", api_key="", openai_base_url=internal.url())
    assert internal.hits and "private or local network" not in error, error
    assert SECRET not in error


@pytest.fixture()
def two_sites():
    """The operator's site, and an internal one on another port of the same machine."""
    mine, other = Site(), Site()
    for s in (mine, other):
        s.route("/robots.txt", "User-agent: *\nAllow: /\n", ctype="text/plain")
    yield mine, other
    for s in (mine, other):
        s.server.shutdown()
        s.server.server_close()


def _feed(site: Site, links: list[str]) -> str:
    items = "".join(f"<item><title>Entry {i}</title><link>{u}</link><guid>g{i}</guid></item>" for i, u in enumerate(links))
    return f"<?xml version='1.0'?><rss version='2.0'><channel><title>Ledger</title><link>{site.base}/</link>{items}</channel></rss>"


def test_feed_links_and_redirects_to_another_local_port_are_refused_unless_allowed(two_sites, tmp_path):
    mine, other = two_sites
    inside = other.route("/admin.html", article(9))
    good = mine.route("/good.html", article(1))
    jump = mine.route("/jump.html", "", status=302, Location=inside)
    feed = mine.route("/feed.xml", _feed(mine, [good, inside, jump]), ctype="application/rss+xml")
    report = add(tmp_path / "index", Settings(), feeds=[feed])
    assert report.fetched == [good], report.errors
    assert other.hits.get("/admin.html", 0) == 0
    assert any(inside in e and "private or local network" in e for e in report.errors), report.errors
    assert any(jump in e and "redirects to" in e for e in report.errors), report.errors
    assert len(Index.open(tmp_path / "index").docs) == 1
    # the operator allows that host: both are fetched (the same page, so stored once)
    report = add(tmp_path / "index", Settings(fetch_allow_private=f"127.0.0.1:{other.server.server_port}"), feeds=[feed])
    assert other.hits.get("/admin.html", 0) >= 1 and not report.errors, report.errors


def test_a_page_the_operator_names_on_a_local_port_is_fetched(two_sites, tmp_path):
    _, other = two_sites
    page = other.route("/story.html", article(4))
    report = add(tmp_path / "index", Settings(), urls=[page])
    assert report.fetched == [page] and not report.errors, report.errors


# ---------------------------------------------------------------- feeds never write over each other
def _atom(site: Site, entries: list[tuple[str, str, str]]) -> str:
    """An Atom feed of (id, link, updated) entries."""
    body = "".join(
        f"<entry><title>Story {i}</title><id>{eid}</id><link href='{link}'/><updated>{upd}</updated></entry>" for i, (eid, link, upd) in enumerate(entries)
    )
    return f"<?xml version='1.0'?><feed xmlns='http://www.w3.org/2005/Atom'><title>Feed</title><id>{site.base}/</id>{body}</feed>"


def test_a_second_feed_never_replaces_the_first_feeds_article(two_sites, tmp_path):
    mine, _ = two_sites
    good = mine.route("/good.html", article(1))
    feed_a = mine.route("/a.xml", _atom(mine, [(good, good, "2024-03-01T09:00:00Z")]), ctype="application/atom+xml")
    report = add(tmp_path / "index", Settings(), feeds=[feed_a])
    assert report.fetched == [good], report.errors
    stored = next(p for p in (tmp_path / "index").rglob("*.html") if ".staging" not in str(p))
    first_text = stored.read_text()
    # feed B claims A's url as its entry <id>, newer, linking to its own page; and names A's url itself,
    # which now serves other text
    other = mine.route("/b-story.html", article(2))
    mine.route("/good.html", article(3))
    feed_b = mine.route("/b.xml", _atom(mine, [(good, other, "2025-01-01T09:00:00Z")]), ctype="application/atom+xml")
    report = add(tmp_path / "index", Settings(), feeds=[feed_b])
    assert stored.read_text() == first_text, "feed B changed feed A's stored article"
    assert report.fetched == [other], (report.fetched, report.errors)
    feed_c = mine.route("/c.xml", _atom(mine, [("urn:c:1", good, "2025-01-01T09:00:00Z")]), ctype="application/atom+xml")
    report = add(tmp_path / "index", Settings(), feeds=[feed_c])
    assert stored.read_text() == first_text, "feed C changed feed A's stored article"
    assert any(good in e and "second feed does not replace it" in e for e in report.errors), report.errors
    docs = Index.open(tmp_path / "index").docs.values()
    assert sum("Town1" in d.text for d in docs) == 1 and sum("Town2" in d.text for d in docs) == 1
    assert not any("Town3" in d.text for d in docs)


# ---------------------------------------------------------------- a total deadline, headers included
class Drip(ThreadingHTTPServer):
    """Sends its status line and headers one byte at a time, each well inside the per-read timeout."""

    daemon_threads = True

    def __init__(self, gap_s: float):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Padding: " + b"x" * 400 + b"\r\n\r\n<p>hi</p>"
                try:
                    for i in range(len(head)):
                        self.wfile.write(head[i : i + 1])
                        self.wfile.flush()
                        time.sleep(gap_s)
                except OSError:
                    pass  # the client hung up: what the deadline is for

            do_POST = do_GET  # an endpoint's chat call drips alike

        super().__init__(("127.0.0.1", 0), Handler)


def test_a_server_dripping_its_headers_is_cut_at_the_total_deadline(tmp_path):
    srv = Drip(gap_s=0.1)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/slow.html"
        # per read, 2 s is plenty; all of the 400 bytes of headers would take 40 s
        report = add(tmp_path / "index", Settings(fetch_timeout_s=2.0, fetch_total_s=1.0), urls=[url])
        assert report.fetched == [] and len(report.errors) == 1, report.errors
        assert "took over 1s in all" in report.errors[0], report.errors
    finally:
        srv.shutdown()
        srv.server_close()


def test_stacked_gzip_is_inflated_within_the_size_limit(two_sites, tmp_path):
    mine, _ = two_sites
    bomb = gzip.compress(gzip.compress(b"<p>" + b" " * 20_000_000 + b"</p>"))  # a few KB, 20 MB inflated
    assert len(bomb) < 50_000
    url = mine.route("/bomb.html", bomb, Content_Encoding="gzip, gzip")
    good = mine.route("/fine.html", gzip.compress(gzip.compress(article(5).encode())), Content_Encoding="gzip, gzip")
    report = add(tmp_path / "index", Settings(max_file_bytes=100_000), urls=[url, good])
    assert report.fetched == [good], report.errors
    assert any(url in e and "over the 100,000-byte limit" in e for e in report.errors), report.errors


# ---------------------------------------------------------------- one lookup: checked and connected to
PUBLIC = "93.184.216.34"  # a public address; nothing here can reach it, so a connection there fails


@pytest.fixture()
def rebinding(monkeypatch):
    """A resolver under an attacker's control: ``rebind.test`` answers a public address once, then 127.0.0.1."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if str(host).rstrip(".").lower() != "rebind.test":
            return real(host, port, *args, **kwargs)
        asked.append(host)
        ip = PUBLIC if len(asked) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_a_visitors_endpoint_that_rebinds_to_loopback_after_the_check_is_not_reached(small_index, internal, rebinding):
    # the first lookup (the UI's check) sees a public address; the connection must not look up again and go to 127.0.0.1
    error = _ask_ui(small_index, f"http://rebind.test:{internal.port}/v1", openai_connect_timeout_s=1.0)
    assert internal.hits == [], "the request went to the address of a second lookup"
    assert rebinding, "the name was never looked up"
    assert error and SECRET not in error, error


def test_a_feed_link_is_connected_to_at_the_address_that_was_checked(two_sites, tmp_path, rebinding):
    mine, other = two_sites
    inside = other.route("/admin.html", article(9))
    steered = inside.replace("127.0.0.1", "rebind.test")
    feed = mine.route("/feed.xml", _feed(mine, [steered]), ctype="application/rss+xml")
    report = add(tmp_path / "index", Settings(fetch_timeout_s=1.0), feeds=[feed])
    assert other.hits.get("/admin.html", 0) == 0 and other.hits.get("/robots.txt", 0) == 0
    assert report.fetched == [] and len(report.errors) == 1, report.errors
    assert len(rebinding) == 1, "each request's host is looked up once, checked and connected to"


def test_the_operators_endpoint_dripping_its_reply_is_cut_at_the_total_deadline(small_index):
    srv = Drip(gap_s=0.1)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        rag = RAG.open(small_index / "index", llm="extractive")
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        t0 = time.monotonic()
        with pytest.raises(RagError, match=r"did not finish its reply within 1 s \(RAG_OPENAI_TOTAL_S\)"):
            rag.ask(QUESTION, llm="openai", openai_base_url=url, openai_timeout_s=2.0, openai_total_s=1.0)
        assert time.monotonic() - t0 < 20, "per read the drip is in time; only the total deadline stops it (40 s)"
    finally:
        srv.shutdown()
        srv.server_close()


def test_fetches_from_one_host_wait_their_turn(two_sites, tmp_path):
    mine, _ = two_sites
    pages = [mine.route(f"/p{i}.html", article(10 + i), delay=0.3) for i in range(6)]
    feed = mine.route("/feed.xml", _feed(mine, pages), ctype="application/rss+xml")
    report = add(tmp_path / "index", Settings(fetch_workers=4, fetch_per_host=2), feeds=[feed])
    assert sorted(report.fetched) == sorted(pages), report.errors
    assert mine.peak == 2, f"{mine.peak} requests at once to one host; the limit is 2"


def test_a_page_of_unclosed_json_ld_scripts_is_read_in_linear_time(two_sites, tmp_path):
    mine, _ = two_sites
    measured = []
    for n in (500, 1_000, 8_000):  # the first warms the path
        page = article(20 + n) + '<script type="application/ld+json">{"datePublished": "2019' * n
        url = mine.route(f"/ld{n}.html", page)
        t0 = time.process_time()
        report = add(tmp_path / f"index{n}", Settings(), urls=[url])
        measured.append(time.process_time() - t0)
        assert report.fetched == [url], report.errors
    # 8x the scripts: linear costs about 8x (plus the fixed cost of a write); quadratic would be 64x
    assert measured[2] < 16 * max(measured[1], 0.05), measured


class KeptAlive(ThreadingHTTPServer):
    """An endpoint on one kept-alive connection: answers its first chat call at once, drips the next one's headers."""

    daemon_threads = True

    def __init__(self):
        self.calls = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a client that pools reuses this connection

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.calls += 1
                if server.calls == 1:
                    body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Mayor Ilse Brandt cut the ribbon."}}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                try:
                    for ch in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + b"x" * 400:
                        self.wfile.write(bytes([ch]))
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:
                    pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_a_second_answer_on_a_kept_connection_is_cut_at_the_deadline_too(small_index):
    """The deadline holds for every request of a kept client, not only the one that opened its connection."""
    srv = KeptAlive()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        rag = RAG.open(small_index / "index", llm="extractive")
        ask = dict(llm="openai", openai_base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", openai_timeout_s=2.0, openai_total_s=1.0)
        rag.ask(QUESTION, **ask)  # answered
        t0 = time.monotonic()
        with pytest.raises(RagError, match="did not finish its reply within 1 s"):
            rag.ask(QUESTION, **ask)
        assert time.monotonic() - t0 < 20
        assert srv.calls == 2
    finally:
        srv.shutdown()
        srv.server_close()
