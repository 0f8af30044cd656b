"""Requests to checked addresses only, each ended at a total deadline: the HTTP transport fetches and endpoint calls share.

A name checked as public and then looked up again when connecting could answer with 127.0.0.1
the second time (DNS rebinding), so :class:`PinnedTransport` connects to the very address it
checked (:mod:`rag.addresses` says which are allowed). Kept apart from that module because it
imports httpx, which a one-shot ``rag ask`` answered from the index never needs.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx

from . import addresses


class PinnedTransport(httpx.HTTPTransport):
    """An httpx transport that connects only to public addresses, or to the hosts in ``allowed``, looking each name up once.

    Each request's host is resolved here; when any of its addresses is not public and the host
    is not allowed, the request is refused (:class:`rag.addresses.PrivateAddress`) before a connection opens.
    Otherwise it is sent to the first checked address itself, with the name kept for the
    ``Host`` header and TLS (SNI and the certificate check), so a second lookup cannot lead it
    elsewhere. An allowed host is connected to as named. With ``total_s``, a request ends that
    many seconds after it began, headers and body included: httpx's timeouts are per read, and a
    server sending a byte every few seconds would hold it forever.
    """

    def __init__(self, allowed: set[str], what: str = "the URL", total_s: float | None = None, **kwargs) -> None:
        if total_s is not None:
            # a connection per request: the deadline shuts down the socket it saw opened, and a
            # kept-alive one would open none to see (a TCP handshake per answer costs ~1 ms)
            kwargs["limits"] = httpx.Limits(max_keepalive_connections=0)
        super().__init__(**kwargs)
        self.allowed = set(allowed)
        self.what = what
        self.total_s = total_s

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        if f"{addresses.normal_host(host)}:{port}" in self.allowed or addresses.normal_host(host) in self.allowed:
            return self._send(request)
        ips = addresses.resolve(host, port)
        if not ips:
            raise httpx.ConnectError(f"{host} does not resolve to any address", request=request)
        if addresses.first_non_public(ips) is not None:
            raise addresses.refusal(self.what, str(request.url.copy_with(query=None, fragment=None)))
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=str(ips[0])),
            headers=request.headers,  # Host: the name, as httpx set it when the request was built
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": host},
        )
        return self._send(pinned)

    def _send(self, request: httpx.Request) -> httpx.Response:
        if self.total_s is None:
            return super().handle_request(request)
        deadline = Deadline(self.total_s, request.extensions.get("trace"))
        request.extensions = {**request.extensions, "trace": deadline.trace}
        try:
            response = super().handle_request(request)
        except BaseException as exc:
            deadline.cancel()
            if deadline.expired.is_set() and isinstance(exc, httpx.HTTPError):
                raise DeadlinePassed(f"no reply within {self.total_s:g} s in all", request=request) from exc
            raise
        response.stream = _Ending(response.stream, deadline, request)
        return response


class Deadline:
    """A wall-clock limit on requests that httpx's per-read timeouts cannot give: at ``seconds`` it shuts their sockets down.

    Pass :meth:`trace` as the requests' ``trace`` extension, so the sockets they open are seen
    (``chain``: another trace callback to call too). Shutting a socket down ends a read blocked
    on it in another thread, which is how a reply dripping a byte every few seconds is stopped.
    """

    def __init__(self, seconds: float, chain=None) -> None:
        self.seconds = seconds
        self.chain = chain
        self.opened: list[socket.socket] = []
        self.expired = threading.Event()
        self.timer = threading.Timer(seconds, self._cut)
        self.timer.daemon = True
        self.timer.start()

    def trace(self, event: str, info: dict) -> None:
        if self.chain is not None:
            self.chain(event, info)
        if event == "connection.connect_tcp.complete" and info.get("return_value") is not None:
            sock = info["return_value"].get_extra_info("socket")
            if sock is not None:
                self.opened.append(sock)
                if self.expired.is_set():
                    _shut(sock)

    def _cut(self) -> None:
        self.expired.set()
        for sock in self.opened:
            _shut(sock)

    def cancel(self) -> None:
        self.timer.cancel()


class DeadlinePassed(httpx.ReadTimeout):
    """A request cut at its total deadline (a timeout, so callers that handle timeouts handle it)."""


class _Ending(httpx.SyncByteStream):
    """A response body that stops its request's deadline timer when it is closed, and names the deadline when it cut the body."""

    def __init__(self, stream: httpx.SyncByteStream, deadline: Deadline, request: httpx.Request) -> None:
        self.stream, self.deadline, self.request = stream, deadline, request

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.stream
        except httpx.HTTPError as exc:
            if self.deadline.expired.is_set():
                raise DeadlinePassed(f"no complete reply within {self.deadline.seconds:g} s in all", request=self.request) from exc
            raise

    def close(self) -> None:
        self.deadline.cancel()
        self.stream.close()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed already: the request ended on its own
