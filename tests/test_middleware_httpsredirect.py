"""HTTPSRedirectMiddleware: Location from a validated host, path and query kept, ws -> wss."""

from __future__ import annotations

from typing import Any

import pytest

from microasgi import App
from microasgi.middleware import HTTPSRedirectMiddleware, Middleware
from microasgi.testclient import WebSocketDenied
from microasgi.types import Receive, Scope, Send
from tests.helpers import Exchange, MakeClient, http_scope


def redirecting(calls: list[str], **options: Any) -> HTTPSRedirectMiddleware:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["scheme"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"secure"})

    return HTTPSRedirectMiddleware(app, **options)


async def get(host: bytes | None, path: str = "/", query: bytes = b"", **options: Any) -> Exchange:
    calls: list[str] = []
    headers = [] if host is None else [(b"host", host)]
    scope = http_scope("GET", path, headers=headers, query_string=query)
    ex = await Exchange().run(redirecting(calls, **options), scope)
    if ex.status != 200:
        assert calls == []
    return ex


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("host", "path", "query", "options", "location"),
    [
        (b"example.com", "/", b"", {}, b"https://example.com/"),
        (b"example.com:8000", "/a/b", b"x=1&y=2", {}, b"https://example.com/a/b?x=1&y=2"),
        (b"EXAMPLE.com:80", "/", b"", {"https_port": 8443}, b"https://example.com:8443/"),
        (b"[::1]:8000", "/p", b"", {}, b"https://[::1]/p"),
        (
            b"example.com",
            "/caf\u00e9 x",
            b'q=a b&r=\xff"<',
            {},
            b"https://example.com/caf%C3%A9%20x?q=a%20b&r=%FF%22%3C",
        ),
        (b"example.com.", "//evil.com/x", b"", {}, b"https://example.com//evil.com/x"),
    ],
)
async def test_redirect_location(
    host: bytes, path: str, query: bytes, options: dict[str, Any], location: bytes
) -> None:
    ex = await get(host, path, query, **options)
    assert ex.status == 307
    assert ex.header(b"location") == location


@pytest.mark.anyio
@pytest.mark.parametrize(
    "host",
    [
        None,
        b"",
        b"evil.com/@example.com",
        b"example.com@evil.com",
        b"a b",
        b"[::1]evil",
        b"x" * 5000,
    ],
)
async def test_no_redirect_to_an_invalid_host(host: bytes | None) -> None:
    ex = await get(host)
    assert ex.status == 400
    assert ex.header(b"location") is None


@pytest.mark.anyio
async def test_https_passes_through_and_status_is_configurable() -> None:
    calls: list[str] = []
    scope = http_scope(headers=[(b"host", b"example.com")], scheme="https")
    ex = await Exchange().run(redirecting(calls), scope)
    assert (ex.status, ex.body, calls) == (200, b"secure", ["https"])
    ex = await get(b"example.com", status_code=308)
    assert ex.status == 308
    with pytest.raises(ValueError, match="status_code"):
        HTTPSRedirectMiddleware(App(), status_code=200)
    with pytest.raises(ValueError, match="https_port"):
        HTTPSRedirectMiddleware(App(), https_port=0)


def test_head_and_websocket(make_client: MakeClient) -> None:
    app = App(middleware=[Middleware(HTTPSRedirectMiddleware)])

    @app.websocket("/ws")
    async def ws(websocket: Any) -> None:
        raise AssertionError("never reached")  # pragma: no cover

    client = make_client(app, follow_redirects=False)
    response = client.head("/x?y=1")
    assert response.status_code == 307
    assert response.headers["location"] == "https://testserver/x?y=1"
    assert response.content == b""
    with pytest.raises(WebSocketDenied) as info, client.websocket_connect("/ws?room=1"):
        pass  # pragma: no cover
    assert info.value.status_code == 307
    assert info.value.headers["location"] == "wss://testserver/ws?room=1"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "location"), [("http", b"https://a.example/p"), ("websocket", None)]
)
async def test_a_scope_without_a_scheme_is_plain_http(kind: str, location: bytes | None) -> None:
    # ASGI: a missing "scheme" means "http" (or "ws"), not "already secure".
    calls: list[str] = []
    scope = http_scope("GET", "/p", headers=[(b"host", b"a.example")], type=kind)
    del scope["scheme"]
    ex = await Exchange().run(redirecting(calls), scope)
    assert calls == []
    if kind == "http":
        assert (ex.status, ex.header(b"location")) == (307, location)
    else:  # no denial-response extension here: the handshake is closed
        assert ex.sent == [{"type": "websocket.close", "code": 1008, "reason": "Redirecting"}]
