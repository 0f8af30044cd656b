"""One bounded HTTP fetch: timeouts, a total deadline, a size limit read as a stream, bounded decompression, robots.txt.

Every fetch is bounded (timeouts, a total deadline, a size limit read as a stream, a redirect
limit, http and https only) and honours the host's robots.txt; where a fetch may go is
:mod:`rag.addresses`.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx

from .. import __version__, addresses, connect
from ..settings import Settings

USER_AGENT = f"newsrag/{__version__} (offline news question answering; fetches the feeds and pages its user adds)"
ROBOTS_AGENT = "newsrag"  # the name robots.txt rules address
_HTML_TYPES = {"text/html", "application/xhtml+xml"}
_ROBOTS_BYTES = 500_000  # what Google reads of a robots.txt; rules past it are ignored there too


class _Refused(Exception):
    """A fetch that did not give a usable reply; the message is the problem, without the url."""

    def __init__(self, problem: str, status: int | None = None, by_policy: bool = False) -> None:
        super().__init__(problem)
        self.status = status
        # refused by the operator's rules (scheme, network, robots.txt), not a broken page: a poll
        # does not remember it as failing, so a rule changed takes effect at once
        self.by_policy = by_policy


@dataclass
class Fetched:
    url: str  # after redirects
    content_type: str
    charset: str | None
    body: bytes


# ---------------------------------------------------------------- fetching
class Fetcher:
    """One HTTP client with the limits of ``settings``, and the robots.txt rules of each host it visits."""

    def __init__(self, settings: Settings, named: Iterable[str] = ()) -> None:
        self.settings = settings
        # the feeds and pages the operator names may be on a private network, with what their
        # links stay on; anything else there (another port, a redirect away) only when allowed
        self.allowed = addresses.allowed_origins(settings.fetch_allow_private, named)
        self.client = httpx.Client(
            timeout=httpx.Timeout(settings.fetch_timeout_s),
            follow_redirects=False,  # followed by hand: each hop is checked for scheme and robots.txt
            headers={"User-Agent": USER_AGENT},
            # each hop's address checked and connected to with one lookup; a connection per request:
            # the total deadline (get) cuts the socket it saw opened, and a pooled one would open none to see
            transport=connect.PinnedTransport(self.allowed, limits=httpx.Limits(max_keepalive_connections=0)),
        )
        self._robots: dict[str, RobotFileParser | _Refused] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}  # host -> its fetches at once
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def get(self, url: str, kind: str = "page") -> Fetched:
        """GET ``url`` (kind "page", "feed" or "robots") within the limits; raises _Refused with the problem.

        The whole fetch, headers and redirects included, ends at ``fetch_total_s``: httpx's timeouts
        are per read, so a server sending its headers a byte every few seconds would hold it forever.
        At the deadline a timer shuts the sockets down, which ends a read blocked in another thread.
        """
        deadline = connect.Deadline(self.settings.fetch_total_s)
        try:
            return self._get(url, kind, deadline.trace)
        except _Refused:
            if deadline.expired.is_set():
                raise _Refused(f"took over {self.settings.fetch_total_s:g}s in all; stopped") from None
            raise
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            if deadline.expired.is_set():
                raise _Refused(f"took over {self.settings.fetch_total_s:g}s in all; stopped") from exc
            return self._failed(exc)
        finally:
            deadline.cancel()

    def _failed(self, exc: BaseException) -> Fetched:
        """Raise the _Refused line for an HTTP client error (anything else as it is)."""
        if isinstance(exc, httpx.TimeoutException):
            raise _Refused(f"timed out (no reply within {self.settings.fetch_timeout_s:g}s)") from exc
        if isinstance(exc, httpx.ConnectError):
            raise _Refused(f"cannot connect ({exc})") from exc
        if isinstance(exc, httpx.HTTPError | httpx.InvalidURL):
            raise _Refused(f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
        raise exc

    def _get(self, url: str, kind: str, trace: Callable[[str, dict], None]) -> Fetched:
        deadline = time.monotonic() + self.settings.fetch_total_s
        accept = {
            "page": "text/html,application/xhtml+xml",
            "feed": "application/rss+xml,application/atom+xml,application/xml;q=0.9,*/*;q=0.5",
        }
        for hop in range(self.settings.fetch_max_redirects + 1):
            try:
                check_url(url)
                if kind != "robots":
                    self._check_robots(url)
                got = self._hop(url, kind, accept.get(kind, "*/*"), deadline, trace)
            except _Refused as exc:
                raise _Refused(f"redirects to {url}: {exc}" if hop else str(exc), exc.status, by_policy=exc.by_policy) from None
            if isinstance(got, Fetched):
                return got
            url = got
        raise _Refused(f"more than {self.settings.fetch_max_redirects} redirects")

    def _hop(self, url: str, kind: str, accept: str, deadline: float, trace: Callable[[str, dict], None]) -> Fetched | str:
        """One request: what it fetched, or the URL it redirects to."""
        headers = {"Accept": accept, "Accept-Encoding": _ACCEPT_ENCODING}
        try:
            with self._slot(url), self.client.stream("GET", url, headers=headers, extensions={"trace": trace}) as r:
                if r.is_redirect:
                    return urldefrag(urljoin(url, r.headers["location"])).url
                if r.status_code >= 400:
                    raise _Refused(f"HTTP {r.status_code} {r.reason_phrase}".strip(), r.status_code)
                ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
                if kind == "page" and ctype and ctype not in _HTML_TYPES:
                    raise _Refused(f"serves {ctype}, not an HTML page")
                body = self._read(r, deadline, _ROBOTS_BYTES if kind == "robots" else self.settings.max_file_bytes)
                return Fetched(str(r.url), ctype, r.charset_encoding, body)
        except addresses.PrivateAddress as exc:
            raise _Refused(f"is on a private or local network not allowed by the operator ({addresses.ALLOW_SETTING})", by_policy=True) from exc
        except (UnicodeError, ValueError) as exc:  # a host name IDNA cannot encode, say "xn--"
            raise _Refused(f"is not a valid URL ({exc})") from exc

    def _slot(self, url: str) -> threading.BoundedSemaphore:
        """The host's share of the fetches at once (``fetch_per_host``): many workers must not all hit one site."""
        host = (urlsplit(url).hostname or "").lower()
        with self._lock:
            return self._slots.setdefault(host, threading.BoundedSemaphore(self.settings.fetch_per_host))

    def _read(self, r: httpx.Response, deadline: float, limit: int) -> bytes:
        """The body, read as a stream so that an endless or huge reply stops at the limit, not in memory.

        Decompressed here, each layer at most ``limit`` bytes per piece read: httpx inflates each
        piece whole, and 1.7 KB of ``Content-Encoding: gzip, gzip`` would fill gigabytes first.
        """
        length = r.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise _Refused(f"is {int(length):,} bytes, over the {limit:,}-byte limit")
        layers = _decompressors(r.headers.get("content-encoding", ""))
        body = bytearray()
        for part in r.iter_raw():
            try:
                for d in layers:
                    part = d.decompress(part, limit - len(body) + 1)  # more than room left: over the limit
            except zlib.error as exc:
                raise _Refused(f"sent compressed data that is corrupt ({exc})") from exc
            body += part
            if len(body) > limit:
                raise _Refused(f"is over the {limit:,}-byte limit; stopped reading")
            if time.monotonic() > deadline:
                raise _Refused(f"took over {self.settings.fetch_total_s:g}s; stopped reading")
        return bytes(body)

    def _check_robots(self, url: str) -> None:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            lock = self._locks.setdefault(origin, threading.Lock())
        with lock:  # one robots.txt request per host, however many pages wait on it
            if origin not in self._robots:
                try:
                    self._robots[origin] = self._read_robots(origin)
                except _Refused as exc:
                    self._robots[origin] = exc  # an unreachable host costs its timeout once, not once per page
        rules = self._robots[origin]
        if isinstance(rules, _Refused):
            raise _Refused(str(rules), rules.status, by_policy=rules.by_policy)
        if not rules.can_fetch(ROBOTS_AGENT, url):
            raise _Refused(f"disallowed by {origin}/robots.txt", by_policy=True)

    def _read_robots(self, origin: str) -> RobotFileParser:
        rp = RobotFileParser(f"{origin}/robots.txt")
        try:
            got = self.get(f"{origin}/robots.txt", "robots")
        except _Refused as exc:
            # the conventions of RFC 9309: no robots.txt (4xx) allows everything, an unavailable
            # one (5xx, no reply) allows nothing for now
            if exc.status and 400 <= exc.status < 500:
                rp.allow_all = True
                return rp
            if exc.status is None:
                raise  # no reply at all (cannot connect, timed out): the page would get none either
            raise _Refused(f"{origin}/robots.txt answered {exc}, so nothing there may be fetched for now") from exc
        rp.parse(got.body.decode("utf-8", errors="replace").splitlines())
        return rp


_ACCEPT_ENCODING = "gzip, deflate"  # what _decompressors undoes (httpx would also offer br or zstd when installed)


def _decompressors(header: str) -> list:
    """zlib decompressors for a Content-Encoding list, in the order they undo it (the last applied first)."""
    out = []
    for name in reversed([n.strip().lower() for n in header.split(",") if n.strip()]):
        if name in ("gzip", "x-gzip"):
            out.append(zlib.decompressobj(16 + zlib.MAX_WBITS))
        elif name == "deflate":
            out.append(zlib.decompressobj())
        elif name != "identity":
            raise _Refused(f"sent content encoded as {name!r}, which is not read (only {_ACCEPT_ENCODING})")
    return out


def check_url(url: str) -> None:
    """Only http and https: a feed must not make us read ``file:///etc/passwd`` or speak another protocol."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - read for its check: a port past 65535 or not a number raises
    except ValueError as exc:  # an unclosed [ or a bad port
        raise _Refused(f"is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _Refused("not an http or https URL; only web pages and feeds are fetched", by_policy=True)
