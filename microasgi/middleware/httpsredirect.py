"""HTTPSRedirectMiddleware: send plain-HTTP (and ws://) requests to HTTPS (wss://)."""

from __future__ import annotations

from microasgi.middleware._hosts import format_netloc, request_host, request_scheme
from microasgi.middleware._respond import same_target, send_text
from microasgi.types import ASGIApp, Receive, Scope, Send

__all__ = ["HTTPSRedirectMiddleware"]

_SECURE = {"http": "https", "ws": "wss"}
_REDIRECTS = (301, 302, 303, 307, 308)


class HTTPSRedirectMiddleware:
    """Redirect every ``http`` request to ``https`` (and ``ws`` to ``wss``).

    The Location keeps the path and the query and names the same host on
    `https_port` (left out when 443). It is built from the Host header only
    after that header has been validated: a missing or malformed one gets 400,
    never a redirect to wherever it pointed. `status_code` is 307 (the method
    and body are kept) unless you choose another redirect status, e.g. 308
    to let browsers remember it. Requests that arrive over HTTPS pass through;
    a scope without a ``scheme`` is plain HTTP, as ASGI says. Behind a
    TLS-terminating proxy, put ProxyHeadersMiddleware outside this one so the
    scheme the client used is known.
    """

    def __init__(self, app: ASGIApp, https_port: int = 443, status_code: int = 307) -> None:
        if not 0 < https_port < 65536:
            raise ValueError(f"https_port must be a TCP port (1-65535), not {https_port}")
        if status_code not in _REDIRECTS:
            raise ValueError(f"status_code must be one of {_REDIRECTS}, not {status_code}")
        self.app = app
        self.https_port = https_port
        self.status_code = status_code

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_request = scope["type"] in ("http", "websocket")
        secure = _SECURE.get(request_scheme(scope)) if is_request else None
        if secure is None:  # already https or wss, or not a request
            await self.app(scope, receive, send)
            return
        parsed = request_host(scope)
        if parsed is None:
            await send_text(scope, send, 400, "Invalid host header")
            return
        port = None if self.https_port == 443 else self.https_port
        location = same_target(scope, secure, format_netloc(parsed[0], port))
        await send_text(scope, send, self.status_code, "Redirecting", [(b"location", location)])
