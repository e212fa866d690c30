"""TrustedHostMiddleware: names, wildcards, ports, IPv6, hostile Host headers, www redirect."""

from __future__ import annotations

import pytest

from microasgi import App, Request
from microasgi.middleware import Middleware, TrustedHostMiddleware
from microasgi.testclient import WebSocketDenied
from microasgi.types import Receive, Scope, Send
from tests.helpers import Exchange, MakeClient, http_scope

ALLOWED = ["example.com", "*.example.org", "127.0.0.1", "::1", "[2001:db8::2]", "www.shop.test"]


def host_app(calls: list[str], **options: object) -> TrustedHostMiddleware:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    options.setdefault("allowed_hosts", ALLOWED)
    return TrustedHostMiddleware(app, **options)  # type: ignore[arg-type]


async def request(
    headers: list[tuple[bytes, bytes]], **options: object
) -> tuple[Exchange, list[str]]:
    calls: list[str] = []
    ex = await Exchange().run(host_app(calls, **options), http_scope(headers=headers))
    return ex, calls


@pytest.mark.anyio
@pytest.mark.parametrize(
    "host",
    [
        b"example.com",
        b"EXAMPLE.com",
        b"example.com:8000",
        b"example.com.",  # the root's trailing dot: the same name
        b"example.com.:443",
        b"example.com:",  # an empty port is allowed by RFC 3986
        b"api.example.org",
        b"a.b.example.org:1",
        b"127.0.0.1:65535",
        b"[::1]",
        b"[::1]:8000",
        b"[0:0::1]:8000",
        b"[2001:DB8::2]",
        b"www.shop.test",
    ],
)
async def test_allowed_hosts(host: bytes) -> None:
    ex, calls = await request([(b"host", host)])
    assert (ex.status, calls) == (200, ["http"])


@pytest.mark.anyio
@pytest.mark.parametrize(
    "host",
    [
        b"example.org",  # "*.example.org" is for subdomains only
        b"evilexample.org",
        b"example.com.evil",
        b"evil.com",
        b"127.0.0.2",
        b"[::2]",
        b"",
        b" ",
        b"example.com ",
        b" example.com",
        b"exa mple.com",
        b"example.com..",
        b"example..com",
        b".example.com",
        b"user@example.com",
        b"example.com@evil.com",
        b"example.com:80@evil.com",
        b"example.com/evil",
        b"example.com\\evil",
        b"example.com:99999",
        b"example.com:8o",
        b"example.com:-1",
        b"example.com:80:80",
        b"::1",  # an IPv6 address must be bracketed
        b"[::1]evil",
        b"[::1]:80evil",
        b"[::1",
        b"[::g]",
        b"[fe80::1%25eth0]",
        b"[127.0.0.1]",
        b"example.com\x00",
        b"ex\xe4mple.com",
        b"\xe2\x84\xaaexample.com",  # KELVIN SIGN, lower() would make it a "k"
        b"a" * 10_000,
    ],
)
async def test_refused_hosts_get_400_and_never_reach_the_app(host: bytes) -> None:
    ex, calls = await request([(b"host", host)])
    assert ex.status == 400
    assert ex.body == b"Invalid host header"
    assert calls == []


@pytest.mark.anyio
async def test_missing_or_repeated_host_is_refused() -> None:
    for headers in ([], [(b"host", b"example.com"), (b"host", b"example.com")]):
        ex, calls = await request(headers)
        assert (ex.status, calls) == (400, [])


@pytest.mark.anyio
async def test_www_redirect_keeps_port_path_and_query() -> None:
    scope = http_scope(
        "GET",
        "/a b/ü",
        headers=[(b"host", b"SHOP.test:8080")],
        query_string=b"q=1&r=a b\xff",
        scheme="https",
    )
    calls: list[str] = []
    ex = await Exchange().run(host_app(calls), scope)
    assert ex.status == 307
    assert ex.header(b"location") == b"https://www.shop.test:8080/a%20b/%C3%BC?q=1&r=a%20b%FF"
    assert calls == []
    ex, calls = await request([(b"host", b"shop.test")], www_redirect=False)
    assert (ex.status, calls) == (400, [])


@pytest.mark.anyio
async def test_wildcard_allows_everything() -> None:
    for options in ({"allowed_hosts": ["*"]}, {"allowed_hosts": None}):
        ex, calls = await request([(b"host", b"anything @ all")], **options)
        assert (ex.status, calls) == (200, ["http"])


@pytest.mark.parametrize(
    ("hosts", "error"),
    [
        (["example.*"], ValueError),
        (["*example.com"], ValueError),
        (["a.*.example.com"], ValueError),
        (["example.com:8000"], ValueError),
        (["exa mple.com"], ValueError),
        ("example.com", TypeError),
    ],
)
def test_bad_patterns_are_refused_when_built(hosts: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        TrustedHostMiddleware(App(), allowed_hosts=hosts)  # type: ignore[arg-type]


def test_through_an_app(make_client: MakeClient) -> None:
    app = App(middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=["testserver"])])

    @app.get("/")
    async def index(request: Request) -> str:
        return request.url.hostname

    @app.websocket("/ws")
    async def ws(websocket: object) -> None:
        raise AssertionError("never reached")  # pragma: no cover

    client = make_client(app)
    assert client.get("/").text == "testserver"
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400
    with (
        pytest.raises(WebSocketDenied) as info,
        client.websocket_connect("/ws", headers={"Host": "evil.example"}),
    ):
        pass  # pragma: no cover
    assert (info.value.status_code, info.value.body) == (400, b"Invalid host header")
