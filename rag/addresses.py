"""Where the server may send a request that someone else steers: public addresses, and what the operator allows.

A UI visitor's OpenAI-compatible URL, a feed entry's link and a redirect are chosen by people the
operator does not vouch for. Sent to loopback, a private network, link-local (the cloud metadata
service at 169.254.169.254) or another non-public address, they would make this server a way
into services behind its firewall. So such a URL is refused unless its host is one the operator
named: ``RAG_FETCH_ALLOW_PRIVATE`` (a comma-separated list of ``host`` or ``host:port``), or the
origin of a feed or page the operator asked for.

The requests themselves go through :mod:`rag.connect`, which checks and connects with one lookup.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from .types import RagError

ALLOW_SETTING = "RAG_FETCH_ALLOW_PRIVATE"


class PrivateAddress(RagError):
    """A URL whose host is on a non-public network the operator did not allow."""


def origin(url: str) -> str:
    """``host:port`` of an http(s) URL (the scheme's port when none is given), lower-case; "" when it has no host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:  # a bad port or bracket: no origin, so never an allowed one
        return ""
    return f"{normal_host(parts.hostname or '')}:{port}" if parts.hostname else ""


def normal_host(host: str) -> str:
    return host.strip().strip("[]").lower().rstrip(".")


def allowed_origins(spec: str, named: Iterable[str] = ()) -> set[str]:
    """The ``host`` and ``host:port`` entries of ``spec`` (a comma-separated setting) and the origins of the ``named`` URLs."""
    out = {origin(u) for u in named} - {""}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if "://" in item:
            out.add(origin(item))
        elif item.startswith("[") or item.count(":") == 1:  # "[::1]:8080" or "host:8080"
            host, _, port = item.rpartition(":")
            out.add(f"{normal_host(host)}:{port}" if port.isdigit() else normal_host(item))
        else:
            out.add(normal_host(item))  # a bare host (or IPv6 address): any port
    return out - {""}


def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses ``host`` resolves to, in the resolver's order ([] when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(normal_host(host), port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        return []
    out = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # ::ffff:127.0.0.1 is loopback
            ip = ip.ipv4_mapped
        out.append(ip)
    return out


def first_non_public(ips: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> str | None:
    return next((str(ip) for ip in ips if not ip.is_global or ip.is_multicast), None)


def non_public_address(host: str, port: int) -> str | None:
    """The first address ``host`` resolves to that is not public (loopback, private, link-local, reserved...), else None.

    None too when it does not resolve: the connection attempt says so, and reaches nothing.
    """
    return first_non_public(resolve(host, port))


def check_public(url: str, allowed: set[str], what: str = "the URL") -> None:
    """Refuse ``url`` (a PrivateAddress naming it) when its host resolves to a non-public address not in ``allowed``."""
    key = origin(url)
    if not key:
        raise RagError(f"{what} {url!r} is not an http or https URL")
    host, port = key.rsplit(":", 1)
    if key in allowed or host in allowed:
        return
    if non_public_address(host, int(port)) is not None:
        raise refusal(what, url)


def refusal(what: str, url: str) -> PrivateAddress:
    """The one line that refuses ``url``, named as ``what``."""
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in url)  # one line, whatever the URL holds
    return PrivateAddress(
        f"{what} {shown} is on a private or local network: this server does not send requests there "
        f"unless its operator allows that host ({ALLOW_SETTING})"
    )

