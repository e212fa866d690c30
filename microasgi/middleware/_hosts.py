"""Host headers and origins, parsed strictly and the same way by every middleware.

One parser decides what a host is, so TrustedHost, HTTPSRedirect, the proxy
headers, CORS and cross-origin protection cannot disagree about a hostile
value. Each parse is linear in its input and refuses anything longer than a
host can be.
"""

from __future__ import annotations

import ipaddress
import re

from microasgi.middleware._headers import get_headers
from microasgi.types import Scope

__all__ = [
    "DEFAULT_PORTS",
    "MAX_HOST_LENGTH",
    "Host",
    "format_netloc",
    "normalise_origin",
    "parse_host",
    "parse_host_pattern",
    "request_host",
    "request_scheme",
]

#: A longer Host header (or origin) is refused without looking further:
#: a DNS name has at most 253 characters, a port 5 more.
MAX_HOST_LENGTH = 270

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# Labels of letters, digits, "-" and "_" (some internal names have one) separated by
# single dots, with at most one trailing dot (the root: "example.com." is example.com).
_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")

Host = tuple[str, int | None]
"""A parsed host: the name in lower case without a trailing dot (an IPv6 address
in its compressed form, without brackets), and the port if one was given."""


def parse_host(value: str) -> Host | None:
    """Parse ``host[:port]`` as in a Host header (RFC 9110 section 7.2); None if invalid.

    IPv6 addresses must be bracketed (``[::1]:8000``); no user info (``@``), spaces,
    percent-encoding, paths or empty names. An empty port (``example.com:``) is
    allowed by RFC 3986 and means no port.
    """
    if not value or len(value) > MAX_HOST_LENGTH or not value.isascii():
        return None
    if value[0] == "[":
        end = value.find("]")
        if end < 0:
            return None
        try:
            address = ipaddress.IPv6Address(value[1:end])
        except ValueError:
            return None
        if address.scope_id is not None:
            return None  # a zone ("%eth0") has no place in a Host header
        host, rest = address.compressed, value[end + 1 :]
        if rest and rest[0] != ":":
            return None  # "[::1]evil"
        port_text = rest[1:]
    else:
        name, _, port_text = value.partition(":")
        lowered = name.lower()
        if not _NAME.fullmatch(lowered) or ":" in port_text:
            return None
        host = lowered[:-1] if lowered.endswith(".") else lowered
    if not port_text:
        return host, None
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        return None
    port = int(port_text)
    if port > 65535:
        return None
    return host, port


def request_host(scope: Scope) -> Host | None:
    """The parsed Host header of a request; None when it is missing, repeated or invalid."""
    values = get_headers(scope["headers"], b"host")
    return parse_host(values[0].decode("latin-1")) if len(values) == 1 else None


def request_scheme(scope: Scope) -> str:
    """The scheme of a request; ASGI says a scope without one is plain ``http`` (``ws``)."""
    scheme: str | None = scope.get("scheme")
    return scheme or ("ws" if scope["type"] == "websocket" else "http")


def format_netloc(host: str, port: int | None = None) -> str:
    """``host[:port]`` for a URL, an IPv6 address in brackets."""
    netloc = f"[{host}]" if ":" in host else host
    return netloc if port is None else f"{netloc}:{port}"


def parse_host_pattern(pattern: str, *, option: str) -> str:
    """A configured host name (no port) as `parse_host` would give it; ValueError if invalid.

    ``::1`` and ``[::1]`` are both accepted for an IPv6 address.
    """
    text = pattern.strip()
    if ":" in text and not text.startswith("["):
        try:
            return ipaddress.IPv6Address(text).compressed
        except ValueError:
            pass
    parsed = parse_host(text)
    if parsed is None:
        raise ValueError(f"{option}: {pattern!r} is not a host name or IP address")
    host, port = parsed
    if port is not None:
        raise ValueError(
            f"{option}: {pattern!r} has a port; hosts are matched by name, "
            "whatever the port: write it without one"
        )
    return host


def normalise_origin(value: str) -> str | None:
    """An origin as ``scheme://host[:port]``: scheme and host in lower case, the default
    port of the scheme and one trailing slash dropped. None if `value` is not an origin
    (a path, a query, user info, no host, ...). ``null`` stays ``null``.
    """
    if value == "null":
        return value
    if len(value) > MAX_HOST_LENGTH + 20:
        return None
    scheme, sep, rest = value.partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME.fullmatch(scheme):
        return None
    if rest.endswith("/"):
        rest = rest[:-1]
    parsed = parse_host(rest)
    if parsed is None:
        return None
    host, port = parsed
    if port == DEFAULT_PORTS.get(scheme):
        port = None
    return f"{scheme}://{format_netloc(host, port)}"
