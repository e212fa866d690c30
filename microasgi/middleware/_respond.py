"""How a built-in middleware answers by itself (a refusal, a redirect, a preflight).

Raw ASGI messages, so the middleware need nothing from the response layer
above them.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote_from_bytes

from microasgi.datastructures import quote_path
from microasgi.types import Scope, Send

__all__ = ["same_target", "send_text"]

# What may stay as it is in a query string; anything else (spaces, non-ASCII bytes)
# is percent-encoded, so a Location header is always plain ASCII.
_QUERY_SAFE = "!$&'()*+,/:;=?@-._~%"

_TEXT = (b"content-type", b"text/plain; charset=utf-8")


async def send_text(
    scope: Scope,
    send: Send,
    status: int,
    text: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with a short text/plain response and `headers`.

    For a WebSocket handshake: a denial response where the server offers them
    (``websocket.http.response``), else a close (policy violation, 1008) that
    the server turns into a 403.
    """
    body = text.encode("utf-8")
    raw = [_TEXT, (b"content-length", str(len(body)).encode()), *headers]
    if scope["type"] == "websocket":
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": status, "headers": raw})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": text[:120]})
        return
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def same_target(scope: Scope, scheme: str, netloc: str) -> bytes:
    """An absolute URL to the path and query of this request on `scheme://netloc`.

    `netloc` must come from a validated host: the result goes in a Location header.
    """
    path = quote_path(scope.get("path") or "/")
    query = scope.get("query_string") or b""
    url = f"{scheme}://{netloc}{path}"
    if query:
        url += "?" + quote_from_bytes(query, safe=_QUERY_SAFE)
    return url.encode("ascii")
