"""ProxyHeadersMiddleware: trusted peers only, rightmost untrusted address, X-Forwarded-* and
RFC 7239 Forwarded, garbage."""

from __future__ import annotations

from typing import Any

import pytest

from microasgi import App, Request
from microasgi.middleware import Middleware, ProxyHeadersMiddleware
from microasgi.middleware.proxyheaders import parse_forwarded, parse_node
from microasgi.types import Receive, Scope, Send
from tests.helpers import Exchange, MakeClient, http_scope

TRUSTED = ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]


async def through(
    headers: list[tuple[bytes, bytes]],
    *,
    peer: tuple[str, int] | None = ("127.0.0.1", 5000),
    kind: str = "http",
    **options: Any,
) -> Scope:
    """The scope the app sees after the middleware."""
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(dict(scope))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    options.setdefault("trusted_proxies", TRUSTED)
    scope = http_scope(headers=[(b"host", b"internal:8000"), *headers], client=peer)
    if kind == "websocket":
        scope.update(type="websocket", scheme="ws")
    await Exchange().run(ProxyHeadersMiddleware(app, **options), scope)
    return seen[0]


def host_of(scope: Scope) -> bytes:
    hosts = [v for k, v in scope["headers"] if k == b"host"]
    assert len(hosts) == 1
    return hosts[0]


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("1.2.3.4", ("1.2.3.4", 0)),
        (" 1.2.3.4:8080 ", ("1.2.3.4", 8080)),
        ("2001:DB8::1", ("2001:db8::1", 0)),
        ("[2001:db8::1]", ("2001:db8::1", 0)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
        ("1.2.3.4:_hidden", ("1.2.3.4", 0)),
        ("unknown", None),
        ("_obfuscated", None),
        ("1.2.3.4:99999", None),
        ("1.2.3.4:x", None),
        ("[2001:db8::1", None),
        ("[2001:db8::1]x", None),
        ("1.2.3", None),
        ("", None),
        ("1.2.3.4" + " " * 100, ("1.2.3.4", 0)),
        ("a" * 10_000, None),
    ],
)
def test_parse_node(text: str, node: tuple[str, int] | None) -> None:
    assert parse_node(text) == node


@pytest.mark.parametrize(
    ("value", "elements"),
    [
        ("for=1.2.3.4", [{"for": "1.2.3.4"}]),
        ('For="[2001:db8::1]:4711";Proto=https', [{"for": "[2001:db8::1]:4711", "proto": "https"}]),
        (
            "for=1.1.1.1, for=2.2.2.2;host=a.example",
            [{"for": "1.1.1.1"}, {"for": "2.2.2.2", "host": "a.example"}],
        ),
        ('for="a,b;c=d", for=x', [{"for": "a,b;c=d"}, {"for": "x"}]),
        ('for="\\"x\\\\"', [{"for": '"x\\'}]),
        (";for=1.2.3.4;;", [{"for": "1.2.3.4"}]),
        ("for=1.2.3.4;for=5.6.7.8", [None]),  # a repeated parameter
        ("for", [None]),
        ("=x", [None]),
        ("for=[::1]", [None]),  # brackets must be quoted
        ('for="unbalanced', [None]),
        ('for="a"b', [None]),
        ("for=a b", [None]),
        ("", [{}]),
    ],
)
def test_parse_forwarded(value: str, elements: list[dict[str, str] | None]) -> None:
    assert parse_forwarded(value) == elements


@pytest.mark.anyio
async def test_untrusted_peer_changes_nothing() -> None:
    headers = [
        (b"x-forwarded-for", b"6.6.6.6"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"evil.example"),
    ]
    for peer in (("192.0.2.1", 1), None, ("not an ip", 1)):
        scope = await through(headers, peer=peer)
        assert scope["client"] == peer
        assert scope["scheme"] == "http"
        assert host_of(scope) == b"internal:8000"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        (b"1.1.1.1", ("1.1.1.1", 0)),
        (b"1.1.1.1:1234", ("1.1.1.1", 1234)),
        (b"6.6.6.6, 1.1.1.1", ("1.1.1.1", 0)),  # the client forged the first one
        (b"6.6.6.6, 1.1.1.1, 10.0.0.5", ("1.1.1.1", 0)),  # through a trusted proxy
        (b"10.0.0.9, 10.0.0.5", ("10.0.0.9", 0)),  # all trusted: the leftmost
        (b"[2001:db8::7]:99, 1.1.1.1", ("1.1.1.1", 0)),
        (b"1.1.1.1, 2001:db9::1", ("2001:db9::1", 0)),
        (b"1.1.1.1, unknown", ("127.0.0.1", 5000)),  # not an address: the peer stays
        (b"1.1.1.1, garbage, 10.0.0.5", ("127.0.0.1", 5000)),
        (b"", ("127.0.0.1", 5000)),
        (b" , ,", ("127.0.0.1", 5000)),
    ],
)
async def test_rightmost_untrusted_address_is_the_client(
    forwarded_for: bytes, client: tuple[str, int]
) -> None:
    scope = await through([(b"x-forwarded-for", forwarded_for)])
    assert scope["client"] == client


@pytest.mark.anyio
async def test_several_header_lines_are_one_list() -> None:
    scope = await through([(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"1.1.1.1")])
    assert scope["client"] == ("1.1.1.1", 0)


@pytest.mark.anyio
async def test_scheme_and_host() -> None:
    scope = await through(
        [
            (b"x-forwarded-for", b"1.1.1.1"),
            (b"x-forwarded-proto", b"HTTPS"),
            (b"x-forwarded-host", b"Public.Example:8443"),
        ]
    )
    assert scope["scheme"] == "https"
    assert host_of(scope) == b"public.example:8443"
    scope = await through([(b"x-forwarded-proto", b"https")], kind="websocket")
    assert scope["scheme"] == "wss"
    # Garbage is ignored.
    scope = await through(
        [(b"x-forwarded-proto", b"javascript"), (b"x-forwarded-host", b"evil.example/@x")]
    )
    assert scope["scheme"] == "http"
    assert host_of(scope) == b"internal:8000"


@pytest.mark.anyio
async def test_proto_and_host_of_the_same_hop() -> None:
    # One value per address: the values at the client's position.
    scope = await through(
        [
            (b"x-forwarded-for", b"6.6.6.6, 1.1.1.1, 10.0.0.5"),
            (b"x-forwarded-proto", b"http, https, http"),
            (b"x-forwarded-host", b"forged.example, real.example, inner.example"),
        ]
    )
    assert scope["scheme"] == "https"
    assert host_of(scope) == b"real.example"
    # Otherwise the last value, from the nearest proxy.
    scope = await through(
        [(b"x-forwarded-for", b"1.1.1.1, 10.0.0.5"), (b"x-forwarded-proto", b"https")]
    )
    assert scope["scheme"] == "https"


@pytest.mark.anyio
async def test_forwarded_header() -> None:
    value = (
        b"for=6.6.6.6;proto=http, "
        b'for="[2001:db9::1]:4711";proto=https;host=real.example, '
        b"for=10.0.0.5"
    )
    scope = await through([(b"forwarded", value)], header="forwarded")
    assert scope["client"] == ("2001:db9::1", 4711)
    assert scope["scheme"] == "https"
    assert host_of(scope) == b"real.example"
    # Garbage in the element of the client: nothing from it counts.
    scope = await through(
        [(b"forwarded", b"for=1.1.1.1;for=2.2.2.2;proto=https")], header="forwarded"
    )
    assert (scope["client"], scope["scheme"]) == (("127.0.0.1", 5000), "http")


@pytest.mark.anyio
async def test_only_the_chosen_kind_of_header_counts() -> None:
    both = [(b"forwarded", b"for=2.2.2.2;proto=https"), (b"x-forwarded-for", b"1.1.1.1")]
    scope = await through(both)
    assert (scope["client"], scope["scheme"]) == (("1.1.1.1", 0), "http")
    scope = await through(both, header="forwarded")
    assert (scope["client"], scope["scheme"]) == (("2.2.2.2", 0), "https")


@pytest.mark.anyio
async def test_trust_everybody_and_unix_sockets() -> None:
    scope = await through([(b"x-forwarded-for", b"1.1.1.1")], peer=None)
    assert scope["client"] is None  # no address: trusted only by "*"
    scope = await through([(b"x-forwarded-for", b"1.1.1.1")], peer=None, trusted_proxies="*")
    assert scope["client"] == ("1.1.1.1", 0)
    scope = await through([(b"x-forwarded-for", b"1.1.1.1")], trusted_proxies="10.0.0.1, 127.0.0.1")
    assert scope["client"] == ("1.1.1.1", 0)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        ProxyHeadersMiddleware(App(), trusted_proxies=["localhost"])
    with pytest.raises(ValueError, match="header"):
        ProxyHeadersMiddleware(App(), header="x-real-ip")  # type: ignore[arg-type]


def test_request_sees_the_client_and_url(make_client: MakeClient) -> None:
    app = App(middleware=[Middleware(ProxyHeadersMiddleware, trusted_proxies="*")])

    @app.get("/")
    async def index(request: Request) -> dict[str, Any]:
        return {"client": list(request.client or ()), "url": str(request.url)}

    response = make_client(app).get(
        "/?a=1",
        headers={
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "www.example.com",
        },
    )
    assert response.json() == {"client": ["203.0.113.9", 0], "url": "https://www.example.com/?a=1"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("::ffff:10.0.0.2", ["10.0.0.0/8"]),  # IPv4 through a dual-stack socket (host "::")
        ("::ffff:127.0.0.1", ["127.0.0.1"]),
        ("10.0.0.2", ["::ffff:10.0.0.2"]),  # configured as mapped, seen as IPv4
        ("fe80::1%eth0", ["fe80::1"]),  # a link-local peer comes with its zone
        ("fe80::1%eth0", ["fe80::/10"]),
        ("fe80::1", ["fe80::1%eth0"]),
    ],
)
async def test_mapped_and_zoned_peers_are_the_addresses_they_name(
    peer: str, trusted: list[str]
) -> None:
    scope = await through(
        [(b"x-forwarded-for", b"203.0.113.9")], peer=(peer, 5000), trusted_proxies=trusted
    )
    assert scope["client"] == ("203.0.113.9", 0)


@pytest.mark.anyio
async def test_a_mapped_client_address_is_a_hop_like_its_ipv4() -> None:
    # A trusted proxy written in its mapped form is skipped like the plain one.
    scope = await through([(b"x-forwarded-for", b"203.0.113.9, ::ffff:10.0.0.7")])
    assert scope["client"] == ("203.0.113.9", 0)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("proto", "kind", "scheme"),
    [
        (b"wss", "websocket", "wss"),  # Traefik says ws/wss for WebSocket requests
        (b"ws", "websocket", "ws"),
        (b"WSS", "http", "https"),
        (b"ws", "http", "http"),
    ],
)
async def test_websocket_schemes_from_the_proxy(proto: bytes, kind: str, scheme: str) -> None:
    scope = await through([(b"x-forwarded-proto", proto)], kind=kind)
    assert scope["scheme"] == scheme
