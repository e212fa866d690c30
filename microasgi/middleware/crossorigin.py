"""CrossOriginProtectionMiddleware: token-free CSRF protection from Fetch metadata."""

from __future__ import annotations

from collections.abc import Sequence

from microasgi.middleware._config import string_list
from microasgi.middleware._headers import get_header
from microasgi.middleware._hosts import DEFAULT_PORTS, normalise_origin, parse_host, request_host
from microasgi.middleware._respond import send_text
from microasgi.types import ASGIApp, Receive, Scope, Send

__all__ = ["SAFE_METHODS", "CrossOriginProtectionMiddleware"]

#: Methods that must not change anything, and so are never refused.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CrossOriginProtectionMiddleware:
    """Refuse (403) requests with an unsafe method that a browser sent from another origin.

    The browser says where a request comes from: ``Sec-Fetch-Site`` (every
    browser since 2023) is ``same-origin`` or ``none`` (typed in, a bookmark)
    for requests that are let through, and ``same-site`` or ``cross-site`` for
    ones that are refused. Without it (an older browser), the ``Origin``
    header must name the host of the request (its Host header, port
    included). A request with neither comes from something that is not a
    browser, or from a same-origin page of a browser that sends neither, and
    is let through: a forged cross-site request always has one of them.

    GET, HEAD and OPTIONS are always let through: they must not change
    anything. `trusted_origins` (``scheme://host[:port]``, normalised as in
    CORSMiddleware) may send unsafe requests from elsewhere (a login page on
    another domain, say); `exempt_paths` are never checked (paths as the app
    sees them, without its root path; one ending in ``*`` is a prefix), for
    webhooks that other sites post to. WebSocket handshakes are GETs and pass
    through: check their Origin in the WebSocket endpoint.
    """

    def __init__(
        self,
        app: ASGIApp,
        trusted_origins: Sequence[str] = (),
        exempt_paths: Sequence[str] = (),
    ) -> None:
        exempt = string_list(exempt_paths, "exempt_paths")
        self.app = app
        self.trusted_origins: set[str] = set()
        for origin in string_list(trusted_origins, "trusted_origins"):
            normalised = normalise_origin(origin.strip())
            if normalised is None or normalised == "null":
                raise ValueError(
                    f"trusted_origins: {origin!r} is not an origin; write scheme://host[:port]"
                )
            self.trusted_origins.add(normalised)
        self.exact_paths = frozenset(p for p in exempt if not p.endswith("*"))
        self.path_prefixes = tuple(p[:-1] for p in exempt if p.endswith("*"))

    def is_exempt(self, scope: Scope, origin: bytes | None) -> bool:
        """Whether a request is let through whatever it says of its origin."""
        if origin is not None:
            normalised = normalise_origin(origin.decode("latin-1"))
            if normalised is not None and normalised in self.trusted_origins:
                return True
        path: str = scope.get("path") or "/"
        root = scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        return path in self.exact_paths or path.startswith(self.path_prefixes)

    def is_cross_origin(self, scope: Scope) -> bool:
        """Whether a request with an unsafe method must be refused."""
        headers = scope["headers"]
        origin = get_header(headers, b"origin")
        site = get_header(headers, b"sec-fetch-site")
        if site is not None:
            if site.strip(b" \t").lower() in (b"same-origin", b"none"):
                return False
        elif origin is None or self.same_host(scope, origin):
            return False  # neither header: not a browser's cross-site request
        return not self.is_exempt(scope, origin)

    @staticmethod
    def same_host(scope: Scope, origin: bytes) -> bool:
        """Whether `origin` names the host (and port) the request was sent to."""
        normalised = normalise_origin(origin.decode("latin-1"))
        host = request_host(scope)
        if normalised is None or normalised == "null" or host is None:
            return False
        scheme, _, netloc = normalised.partition("://")
        origin_host = parse_host(netloc)
        if origin_host is None:
            return False
        default = DEFAULT_PORTS.get(scheme)
        return (origin_host[0], origin_host[1] or default) == (host[0], host[1] or default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in SAFE_METHODS
            and self.is_cross_origin(scope)
        ):
            await send_text(scope, send, 403, "Cross-origin request refused")
            return
        await self.app(scope, receive, send)
