"""CORSMiddleware: Cross-Origin Resource Sharing (the Fetch standard's CORS protocol)."""

from __future__ import annotations

import re
from collections.abc import Collection

from microasgi.middleware._config import string_list, token_list
from microasgi.middleware._headers import OWS, RawHeaders, get_header, split_tokens, with_vary
from microasgi.middleware._hosts import normalise_origin
from microasgi.middleware._respond import send_text
from microasgi.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ALL_METHODS", "SAFELISTED_HEADERS", "CORSMiddleware"]

#: What ``allow_methods=["*"]`` stands for.
ALL_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY")
#: Request headers a browser may always send without asking (CORS-safelisted).
SAFELISTED_HEADERS = ("Accept", "Accept-Language", "Content-Language", "Content-Type")

_PREFLIGHT_VARY = ("Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")
_PRIVATE_NETWORK = "Access-Control-Request-Private-Network"


class CORSMiddleware:
    """Answer CORS preflights and add the CORS headers to every response.

    `allow_origins` lists the origins allowed (``"*"``: any, without
    credentials), compared after normalisation (scheme and host in lower
    case, no default port, no trailing slash); `allow_origin_regex` must
    match a whole (normalised) origin. ``Origin: null`` is only allowed when
    ``"null"`` is listed. ``allow_origins=["*"]`` with ``allow_credentials=True``
    is refused with a ValueError: it would let every website act with your
    users' cookies.

    A preflight (``OPTIONS`` with ``Origin`` and
    ``Access-Control-Request-Method``) is answered here without reaching the
    app: 200 with the allowing headers, or 400 with none of them. Every other
    response (errors included) gets the CORS headers when its origin is
    allowed, and ``Vary: Origin`` merged into its Vary whenever the answer
    depends on the origin. WebSocket scopes pass through untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        allow_origins: Collection[str] = (),
        allow_methods: Collection[str] = ("GET",),
        allow_headers: Collection[str] = (),
        allow_credentials: bool = False,
        allow_origin_regex: str | None = None,
        allow_private_network: bool = False,
        expose_headers: Collection[str] = (),
        max_age: int = 600,
    ) -> None:
        origins = string_list(allow_origins, "allow_origins")
        methods = [m.upper() for m in token_list(allow_methods, "allow_methods")]
        headers = token_list(allow_headers, "allow_headers")
        exposed = token_list(expose_headers, "expose_headers")
        self.app = app
        self.allow_all_origins = "*" in origins
        if self.allow_all_origins and allow_credentials:
            raise ValueError(
                'CORSMiddleware: allow_origins=["*"] with allow_credentials=True would let '
                "every website send requests with your users' cookies and read the answers. "
                "List the origins that need credentials (allow_origins=[...] or "
                "allow_origin_regex=...), or set allow_credentials=False."
            )
        self.allow_origins: set[str] = set()
        for origin in origins:
            if origin == "*":
                continue
            normalised = normalise_origin(origin.strip())
            if normalised is None:
                raise ValueError(
                    f"CORSMiddleware: {origin!r} is not an origin; write scheme://host[:port] "
                    "(no path), e.g. 'https://app.example.com'"
                )
            self.allow_origins.add(normalised)
        self.allow_origin_regex = re.compile(allow_origin_regex) if allow_origin_regex else None
        self.allow_credentials = allow_credentials
        self.allow_private_network = allow_private_network
        self.allow_methods = frozenset(ALL_METHODS if "*" in methods else methods)
        self.allow_all_headers = "*" in headers
        names: dict[str, str] = {}  # lower case -> as written (the first spelling wins)
        for name in (*SAFELISTED_HEADERS, *headers):
            if name != "*":
                names.setdefault(name.lower(), name)
        allowed = sorted(names.values(), key=str.lower)
        self.allow_headers = frozenset(names)

        # Everything that does not depend on the request, encoded once.
        simple: RawHeaders = []
        if self.allow_all_origins:
            simple.append((b"access-control-allow-origin", b"*"))
        if allow_credentials:
            simple.append((b"access-control-allow-credentials", b"true"))
        if exposed:
            simple.append((b"access-control-expose-headers", ", ".join(exposed).encode()))
        self._simple_headers = simple
        preflight: RawHeaders = [
            (b"access-control-allow-methods", ", ".join(sorted(self.allow_methods)).encode()),
            (b"access-control-max-age", str(int(max_age)).encode()),
        ]
        if not self.allow_all_headers:
            preflight.append((b"access-control-allow-headers", ", ".join(allowed).encode()))
        if allow_credentials:
            preflight.append((b"access-control-allow-credentials", b"true"))
        self._preflight_headers = preflight
        vary = _PREFLIGHT_VARY + ((_PRIVATE_NETWORK,) if allow_private_network else ())
        self._preflight_vary = (b"vary", ", ".join(vary).encode())

    def is_allowed_origin(self, origin: str) -> bool:
        """Whether `origin` (as the request sent it) may read responses."""
        if origin == "null":
            # Sandboxed documents and some redirects send "null": allowed by "*" (which
            # never carries credentials) or by "null" listed, never by a regex.
            return self.allow_all_origins or "null" in self.allow_origins
        if self.allow_all_origins:
            return True
        normalised = normalise_origin(origin)
        if normalised is None:
            return False
        if normalised in self.allow_origins:
            return True
        return self.allow_origin_regex is not None and bool(
            self.allow_origin_regex.fullmatch(normalised)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_headers = scope["headers"]
        raw_origin = get_header(request_headers, b"origin")
        if raw_origin is not None and scope["method"] == "OPTIONS":
            requested_method = get_header(request_headers, b"access-control-request-method")
            if requested_method is not None:
                await self.preflight(scope, send, raw_origin, requested_method)
                return
        if self.allow_all_origins:
            added = self._simple_headers  # the same for everybody: no Vary needed
        elif raw_origin is not None and self.is_allowed_origin(raw_origin.decode("latin-1")):
            added = [(b"access-control-allow-origin", raw_origin), *self._simple_headers]
        else:
            added = []

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or ())
                if added and get_header(headers, b"access-control-allow-origin") is None:
                    headers.extend(added)  # an app that set its own CORS headers keeps them
                if not self.allow_all_origins:
                    headers = with_vary(headers, ("Origin",))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def preflight(
        self, scope: Scope, send: Send, raw_origin: bytes, requested_method: bytes
    ) -> None:
        """Answer a preflight request: 200 allowing it, or 400 without any CORS header."""
        request_headers = scope["headers"]
        failures = []
        if not self.is_allowed_origin(raw_origin.decode("latin-1")):
            failures.append("origin")
        if requested_method.decode("latin-1").strip(OWS).upper() not in self.allow_methods:
            failures.append("method")
        requested = get_header(request_headers, b"access-control-request-headers")
        names = split_tokens(requested.lower()) if requested else []
        if not self.allow_all_headers and any(name not in self.allow_headers for name in names):
            failures.append("headers")
        private = get_header(request_headers, b"access-control-request-private-network")
        if private is not None and not self.allow_private_network:
            failures.append("private-network")
        if failures:
            text = "Disallowed CORS " + ", ".join(failures)
            await send_text(scope, send, 400, text, [self._preflight_vary])
            return
        origin = b"*" if self.allow_all_origins else raw_origin
        headers = [(b"access-control-allow-origin", origin), *self._preflight_headers]
        if self.allow_all_headers and requested:
            headers.append((b"access-control-allow-headers", requested))
        if private is not None:
            headers.append((b"access-control-allow-private-network", b"true"))
        headers.append(self._preflight_vary)
        await send_text(scope, send, 200, "OK", headers)
