"""ProxyHeadersMiddleware: the client, scheme and host a trusted proxy reports."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Literal

from microasgi.middleware._headers import (
    OWS,
    TOKEN_CHARS,
    collect_headers,
    get_headers,
    split_tokens,
)
from microasgi.middleware._hosts import format_netloc, parse_host
from microasgi.types import ASGIApp, Receive, Scope, Send

__all__ = ["ProxyHeadersMiddleware", "parse_forwarded", "parse_node"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# X-Forwarded-Proto -> (the scheme of an http scope, of a websocket scope). Proxies
# say http/https, some (Traefik) ws/wss for a WebSocket request.
_PLAIN, _SECURE = ("http", "ws"), ("https", "wss")
_SCHEMES = {"http": _PLAIN, "ws": _PLAIN, "https": _SECURE, "wss": _SECURE}
_X_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
# Strings longer than an IPv6 address with a port are never addresses.
_MAX_NODE = 64


def _plain(address: IPAddress) -> IPAddress:
    """The host `address` names: an IPv4-mapped IPv6 address (``::ffff:10.0.0.1``, what a
    dual-stack socket reports for an IPv4 peer) is its IPv4 address, a zone (``%eth0``)
    is dropped."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(int(address))
    return address


def parse_node(text: str) -> tuple[str, int] | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``,
    ``[2001:db8::1]:80``) as (address, port), port 0 when not given. None for
    anything else: ``unknown``, an obfuscated ``_name``, garbage."""
    text = text.strip(OWS)
    if not text or len(text) > _MAX_NODE:
        return None
    return _parse_node(text)


@functools.lru_cache(maxsize=1024)  # proxies send the same few addresses again and again
def _parse_node(text: str) -> tuple[str, int] | None:
    port_text = ""
    if text[0] == "[":
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and rest[0] != ":"):
            return None
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    port = 0
    if port_text.isascii() and port_text.isdigit() and len(port_text) <= 5:
        port = int(port_text)
        if port > 65535:
            return None
    elif port_text and not port_text.startswith("_"):
        return None  # an obfuscated port ("_abc") is allowed and means unknown
    return str(address), port


def _tokens(values: Iterable[bytes]) -> list[str]:
    """The comma-separated items of header values, in order."""
    return [token for value in values for token in split_tokens(value)]


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """`text` split at each `separator` outside a quoted string (linear)."""
    if '"' not in text:
        return text.split(separator)
    parts: list[str] = []
    start, quoted, escaped = 0, False, False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == separator:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _unquote(value: str) -> str | None:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        if "\\" not in inner:
            return None if '"' in inner else inner
        out, escaped = [], False
        for char in inner:
            if escaped:
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                return None
            else:
                out.append(char)
        return None if escaped else "".join(out)
    return value if value and TOKEN_CHARS.issuperset(value) else None


def parse_forwarded(value: str) -> list[dict[str, str] | None]:
    """The elements of a Forwarded header (RFC 7239), one per proxy, oldest first.

    Each is a dict of its parameters (names in lower case, values unquoted),
    or None when it does not parse (a bad pair, a repeated parameter,
    unbalanced quotes): such an element can say nothing trustworthy.
    """
    elements: list[dict[str, str] | None] = []
    for raw_element in _split_outside_quotes(value, ","):
        element: dict[str, str] | None = {}
        for pair in _split_outside_quotes(raw_element, ";"):
            pair = pair.strip(OWS)
            if not pair:
                continue
            key, sep, raw = pair.partition("=")
            key = key.lower()
            parsed = _unquote(raw) if sep and key and TOKEN_CHARS.issuperset(key) else None
            if parsed is None or element is None or key in element:
                element = None
                break
            element[key] = parsed
        elements.append(element)
    return elements


class ProxyHeadersMiddleware:
    """Take the client address, scheme and host from the headers a trusted proxy sets.

    Only when the peer (``scope["client"]``) is one of `trusted_proxies`
    (addresses and networks such as ``"10.0.0.0/8"``, as a list or a
    comma-separated string; ``"*"`` trusts every peer, including ones without
    an address such as a Unix socket). Otherwise nothing changes. An IPv4-mapped
    IPv6 address is compared as its IPv4 address, and without its zone.

    `header` says what your proxy sets: ``"x-forwarded"`` (X-Forwarded-For,
    -Proto and -Host, the default) or ``"forwarded"`` (RFC 7239). The other
    kind is ignored: a proxy that manages one of them passes the other on as
    the client wrote it.

    The list of addresses is read from the right (the nearest proxy) and the
    first one that is not a trusted proxy is the client; if every one is
    trusted, the leftmost. An entry that is not an address (``unknown``,
    garbage) stops the walk: the client stays the peer. The scheme and host
    come from the same hop (the same Forwarded element, or the
    X-Forwarded-Proto/-Host value at the same position when there are as many
    values as addresses, else the last value); a scheme other than http,
    https, ws or wss, or a host that does not parse, is ignored.
    """

    def __init__(
        self,
        app: ASGIApp,
        trusted_proxies: str | Sequence[str] = ("127.0.0.1", "::1"),
        *,
        header: Literal["x-forwarded", "forwarded"] = "x-forwarded",
    ) -> None:
        if header not in ("x-forwarded", "forwarded"):
            raise ValueError(f"header must be 'x-forwarded' or 'forwarded', not {header!r}")
        entries = (
            split_tokens(trusted_proxies)
            if isinstance(trusted_proxies, str)
            else [entry.strip() for entry in trusted_proxies]
        )
        self.app = app
        self.header = header
        self.trust_all = "*" in entries
        self.addresses: set[IPAddress] = set()
        self.networks: list[IPNetwork] = []
        for entry in entries:
            if entry == "*":
                continue
            try:
                if "/" in entry:
                    self.networks.append(ipaddress.ip_network(entry, strict=False))
                else:
                    self.addresses.add(_plain(ipaddress.ip_address(entry)))
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {entry!r} is not an IP address or network"
                ) from None
        self.is_trusted = functools.lru_cache(maxsize=1024)(self._is_trusted)

    def _is_trusted(self, address: str) -> bool:
        if self.trust_all:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        plain = _plain(ip)
        return plain in self.addresses or any(
            ip in network or plain in network for network in self.networks
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            if self.trust_all if not peer else self.is_trusted(str(peer[0])[:_MAX_NODE]):
                self.apply(scope)
        await self.app(scope, receive, send)

    def apply(self, scope: Scope) -> None:
        """Rewrite `scope` from the forwarding headers (the peer is trusted)."""
        headers = scope["headers"]
        if self.header == "forwarded":
            text = ",".join(v.decode("latin-1") for v in get_headers(headers, b"forwarded"))
            elements = parse_forwarded(text) if text else []
            nodes = [(e or {}).get("for") for e in elements]
            index = self.client_index(nodes)
            element = elements[index] if index is not None else None
            proto = element.get("proto") if element else None
            host = element.get("host") if element else None
        else:
            found = collect_headers(headers, _X_FORWARDED)
            if not found:
                return
            values = {name: _tokens(found.get(name, ())) for name in _X_FORWARDED}
            nodes = [*values[b"x-forwarded-for"]]
            index = self.client_index(nodes)
            proto = self.value_at(values[b"x-forwarded-proto"], index, len(nodes))
            host = self.value_at(values[b"x-forwarded-host"], index, len(nodes))
        if index is not None:
            client = parse_node(nodes[index] or "")
            if client is not None:
                scope["client"] = client
        schemes = _SCHEMES.get(proto.lower()) if proto else None
        if schemes is not None:
            scope["scheme"] = schemes[scope["type"] == "websocket"]
        parsed = parse_host(host.strip(OWS)) if host else None
        if parsed is not None:
            netloc = format_netloc(*parsed).encode("latin-1")
            others = [(k, v) for k, v in headers if k.lower() != b"host"]
            scope["headers"] = [(b"host", netloc), *others]

    @staticmethod
    def value_at(values: list[str], index: int | None, count: int) -> str | None:
        """The value of hop `index` when there is one value per address, else the last."""
        if not values:
            return None
        return values[index] if index is not None and len(values) == count else values[-1]

    def client_index(self, nodes: list[str | None]) -> int | None:
        """Where the client is in `nodes`: the rightmost entry that is not a trusted proxy."""
        for index in range(len(nodes) - 1, -1, -1):
            node = parse_node(nodes[index] or "")
            if node is None or not self.is_trusted(node[0]):
                return index
        return 0 if nodes else None
