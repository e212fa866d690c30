"""TrustedHostMiddleware: answer only for the host names the app is served under."""

from __future__ import annotations

from collections.abc import Sequence

from microasgi.middleware._config import string_list
from microasgi.middleware._hosts import (
    format_netloc,
    parse_host_pattern,
    request_host,
    request_scheme,
)
from microasgi.middleware._respond import same_target, send_text
from microasgi.types import ASGIApp, Receive, Scope, Send

__all__ = ["TrustedHostMiddleware"]


class TrustedHostMiddleware:
    """Refuse requests whose Host header is not one of `allowed_hosts` (400).

    Patterns are host names (``example.com``), subdomain wildcards
    (``*.example.com``: any name ending in ``.example.com``, not the bare
    domain), IP addresses (``127.0.0.1``, ``::1`` or ``[::1]``), or ``*``
    for any host. The port of the Host header is checked for syntax but not
    compared, and one trailing dot (``example.com.``) is the same name. A
    Host header that is missing, repeated, or not a host (user info ``@``,
    spaces, an unbracketed or malformed IPv6 address, ``[::1]evil``) gets 400.

    With `www_redirect` (the default), a request for ``example.com`` when
    only ``www.example.com`` is allowed is redirected there (307), with the
    path and query kept. WebSocket handshakes are refused the same way.
    """

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Sequence[str] | None = None,
        www_redirect: bool = True,
    ) -> None:
        patterns = ["*"] if allowed_hosts is None else string_list(allowed_hosts, "allowed_hosts")
        self.app = app
        self.allowed_hosts = [pattern.lower() for pattern in patterns]
        self.www_redirect = www_redirect
        self.allow_any = "*" in patterns
        self.hosts: set[str] = set()
        suffixes: list[str] = []  # ".example.com" for "*.example.com"
        for pattern in patterns:
            if pattern == "*":
                continue
            if pattern.startswith("*."):
                name = parse_host_pattern(pattern[2:], option="allowed_hosts")
                suffixes.append("." + name)
            elif "*" in pattern:
                raise ValueError(
                    f"allowed_hosts: {pattern!r}: a wildcard may only be a whole first label, "
                    "as in '*.example.com'"
                )
            else:
                self.hosts.add(parse_host_pattern(pattern, option="allowed_hosts"))
        self.suffixes = tuple(suffixes)

    def is_allowed(self, host: str) -> bool:
        """Whether a parsed host name (see `parse_host`) is allowed."""
        return self.allow_any or host in self.hosts or host.endswith(self.suffixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        parsed = request_host(scope)
        if parsed is not None and self.is_allowed(parsed[0]):
            await self.app(scope, receive, send)
            return
        if parsed is not None and self.www_redirect and "www." + parsed[0] in self.hosts:
            host, port = parsed
            location = same_target(scope, request_scheme(scope), format_netloc("www." + host, port))
            await send_text(scope, send, 307, "Redirecting", [(b"location", location)])
            return
        await send_text(scope, send, 400, "Invalid host header")
