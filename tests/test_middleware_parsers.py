"""The header parsers of the built-in middleware, on any input: properties and linearity.

Every parser here reads what a client sent. Hypothesis feeds them arbitrary text and
checks that they never raise and keep their promises; the whole middleware stack is
fed arbitrary headers and must answer with one of its documented statuses, never a
500. Linearity is checked by counting the Python bytecode operations a parser runs
for an input of size n and of size 8n (deterministic, unlike a clock).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microasgi import App, Request
from microasgi._encodings import parse_accept_encoding
from microasgi.middleware import (
    CompressionMiddleware,
    CORSMiddleware,
    CrossOriginProtectionMiddleware,
    HTTPSRedirectMiddleware,
    Middleware,
    ProxyHeadersMiddleware,
    SessionMiddleware,
    TrustedHostMiddleware,
)
from microasgi.middleware._codecs import _choose, choose_encoding
from microasgi.middleware._headers import split_tokens, with_vary
from microasgi.middleware._hosts import format_netloc, normalise_origin, parse_host
from microasgi.middleware.proxyheaders import parse_forwarded, parse_node
from microasgi.middleware.sessions import SessionSigner
from tests.helpers import Exchange, http_scope
from tests.linearity import assert_linear

text = st.text(max_size=300)
latin1 = st.binary(max_size=300)
OFFERED = ("zstd", "br", "gzip")


# -- properties ------------------------------------------------------------------------


@given(text)
def test_parse_host_is_strict_and_round_trips(value: str) -> None:
    parsed = parse_host(value)
    if parsed is None:
        return
    host, port = parsed
    assert host.isascii() and host == host.lower() and host
    assert not set(host) & set("@ /\\?#%[]\t\r\n")
    assert port is None or 0 <= port <= 65535
    assert parse_host(format_netloc(host, port)) == (host, port)


# Hosts as clients write them, with what parse_host must make of each.
labels = st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True), min_size=1, max_size=5)
names = st.builds(
    lambda parts, dot: (".".join(parts) + dot, ".".join(parts).lower()),
    labels,
    st.sampled_from(["", "."]),
)
addresses = st.one_of(
    st.ip_addresses(v=4).map(lambda ip: (str(ip), str(ip))),
    st.ip_addresses(v=6).map(lambda ip: (f"[{ip.exploded.upper()}]", ip.compressed)),
)
ports = st.one_of(st.none(), st.integers(0, 65535))


@given(st.one_of(names, addresses), ports)
def test_parse_host_accepts_hosts(host: tuple[str, str], port: int | None) -> None:
    written, expected = host
    value = written if port is None else f"{written}:{port}"
    assert parse_host(value) == (expected, port)
    assert parse_host(format_netloc(expected, port)) == (expected, port)


@given(st.one_of(names, addresses), ports, st.data())
def test_a_host_with_a_url_delimiter_anywhere_is_refused(
    host: tuple[str, str], port: int | None, data: st.DataObject
) -> None:
    # What a URL parser would split at, or decode: never part of a host we accept,
    # so our idea of the host and a browser's or a proxy's cannot differ.
    value = host[0] if port is None else f"{host[0]}:{port}"
    char = data.draw(st.sampled_from("@/\\?# %\t\r\n\x00"))
    at = data.draw(st.integers(0, len(value)))
    assert parse_host(value[:at] + char + value[at:]) is None


@given(st.sampled_from(["http", "https", "HTTPS", "ws", "wss"]), names, ports, st.booleans())
def test_normalise_origin_of_origins(
    scheme: str, host: tuple[str, str], port: int | None, slash: bool
) -> None:
    written, expected = host
    value = f"{scheme}://{written}" + ("" if port is None else f":{port}") + "/" * slash
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}[scheme.lower()]
    kept = "" if port in (None, default) else f":{port}"
    assert normalise_origin(value) == f"{scheme.lower()}://{expected}{kept}"


@given(text)
def test_normalise_origin_is_idempotent(value: str) -> None:
    normalised = normalise_origin(value)
    if normalised is not None:
        assert normalise_origin(normalised) == normalised
        assert normalised == normalised.lower()
        assert normalised == "null" or "://" in normalised


@given(
    st.one_of(
        st.text(st.characters(max_codepoint=255), max_size=300),  # what a header decodes to
        st.lists(
            st.sampled_from(
                ["gzip", "br", "zstd", "*", "identity", ";q=0", ";q=0.5", ";q=1", ",", " ", "x"]
            ),
            max_size=30,
        ).map("".join),
    )
)
def test_accept_encoding_weights(value: str) -> None:
    weights = parse_accept_encoding(value)
    assert all(0.0 <= weight <= 1.0 for weight in weights.values())
    chosen = choose_encoding(value.encode("latin-1"), OFFERED)
    weight = {name: weights.get(name, weights.get("*", 0.0)) for name in OFFERED}
    best = max(weight.values())
    if chosen is not None:
        assert weight[chosen] == best > 0  # the heaviest, never one weighted 0
        assert OFFERED.index(chosen) == min(i for i, n in enumerate(OFFERED) if weight[n] == best)
        assert weights.get("identity", 0.0) <= best
    else:  # nothing acceptable, or the client weighs the body as it is higher
        assert best == 0 or weights.get("identity", 0.0) > best


@given(text)
def test_forwarded_and_nodes_never_raise(value: str) -> None:
    for element in parse_forwarded(value):
        assert element is None or all(key == key.lower() for key in element)
    node = parse_node(value)
    if node is not None:
        assert 0 <= node[1] <= 65535


@given(text)
def test_a_session_cookie_cannot_be_forged(value: str) -> None:
    signer = SessionSigner(["a secret"])
    assert signer.unsign(value, None, 0) is None


@given(st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=10), max_size=5))
def test_a_session_survives_signing(session: dict[str, Any]) -> None:
    signer = SessionSigner(["new", "old"])
    payload = base64.urlsafe_b64encode(json.dumps(session).encode()).rstrip(b"=").decode()
    checked = signer.unsign(signer.sign(payload, 1000), 100, 1050)
    assert checked == (payload, 1000, 0)
    assert signer.unsign(signer.sign(payload, 1000), 10, 1050) is None  # expired


vary_names = st.sampled_from(["Origin", "origin", "Accept-Encoding", "Cookie", "*", "", " "])


@given(
    st.lists(st.lists(vary_names, max_size=3).map(", ".join), max_size=3),
    st.lists(st.sampled_from(["Origin", "Accept-Encoding", "Cookie"]), min_size=1, max_size=3),
)
def test_vary_is_merged_once_and_idempotent(app_vary: list[str], names: list[str]) -> None:
    headers = [(b"vary", value.encode()) for value in app_vary]
    merged = with_vary(headers, names)
    assert with_vary(merged, names) == merged
    assert headers == [(b"vary", value.encode()) for value in app_vary]  # not edited in place
    tokens = [t.lower() for k, v in merged if k == b"vary" for t in split_tokens(v)]
    had = {t.lower() for value in app_vary for t in split_tokens(value)}
    if "*" in had:
        assert merged == headers
        return
    for name in {name.lower() for name in names}:
        assert name in tokens
        if name not in had:  # what the app wrote twice stays; what we add is there once
            assert tokens.count(name) == 1


CORS = CORSMiddleware(
    App(),
    allow_origins=["https://a.example", "null"],
    allow_methods=["GET", "POST"],
    allow_headers=["X-A"],
    allow_credentials=True,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(latin1, st.sampled_from([b"https://a.example", b"HTTPS://A.EXAMPLE:443/", b"null"])),
    st.one_of(latin1, st.sampled_from([b"GET", b"post", b"PUT"])),
    st.one_of(st.none(), latin1, st.sampled_from([b"x-a", b"X-A, accept", b"x-b"])),
)
def test_a_preflight_is_all_or_nothing(
    origin: bytes, method: bytes, requested: bytes | None
) -> None:
    headers = [(b"origin", origin), (b"access-control-request-method", method)]
    if requested is not None:
        headers.append((b"access-control-request-headers", requested))
    exchange = anyio.run(Exchange().run, CORS, http_scope("OPTIONS", headers=headers))
    cors = {k: v for k, v in exchange.headers if k.startswith(b"access-control-")}
    assert exchange.status in (200, 400)
    if exchange.status == 400:
        assert cors == {}
    else:
        assert CORS.is_allowed_origin(origin.decode("latin-1"))
        assert cors[b"access-control-allow-origin"] == origin
        assert cors[b"access-control-allow-credentials"] == b"true"


# -- the whole stack on any headers ----------------------------------------------------


def full_stack() -> App:
    app = App(
        middleware=[
            Middleware(ProxyHeadersMiddleware, trusted_proxies="127.0.0.1"),
            Middleware(TrustedHostMiddleware, allowed_hosts=["testserver", "*.example.com"]),
            Middleware(HTTPSRedirectMiddleware),
            Middleware(
                CORSMiddleware, allow_origins=["https://a.example.com"], allow_headers=["x-a"]
            ),
            Middleware(CrossOriginProtectionMiddleware, trusted_origins=["https://b.example.com"]),
            Middleware(SessionMiddleware, secret_key="s"),
            Middleware(CompressionMiddleware, minimum_size=1),
        ]
    )

    @app.route("/", methods=["GET", "POST", "OPTIONS"])
    async def index(request: Request) -> str:
        request.session["seen"] = request.session.get("seen", 0) + 1
        return "hello " * 20

    return app


STACK = full_stack()
HEADER_NAMES = [
    b"host",
    b"origin",
    b"access-control-request-method",
    b"access-control-request-headers",
    b"sec-fetch-site",
    b"accept-encoding",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"forwarded",
    b"cookie",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["GET", "POST", "OPTIONS", "HEAD", "DELETE"]),
    st.sampled_from(["http", "https"]),
    st.lists(st.tuples(st.sampled_from(HEADER_NAMES), latin1), max_size=8),
)
def test_any_headers_get_a_documented_answer(
    method: str, scheme: str, headers: list[tuple[bytes, bytes]]
) -> None:
    scope = http_scope(method, "/", headers=headers, scheme=scheme)

    async def run() -> Exchange:
        return await Exchange().run(STACK, scope)

    exchange = anyio.run(run)
    assert exchange.status in (200, 307, 400, 403), exchange.status


# -- linearity ---------------------------------------------------------------------------


def test_parsers_are_linear() -> None:
    assert_linear(lambda n: "gzip;q=0.5, br;q=0.1, " * n, lambda v: _choose(v, OFFERED), n=200)
    assert_linear(lambda n: ";q=" * n + "," * n, parse_accept_encoding, n=200)
    assert_linear(lambda n: 'for="\\"a,b;c\\\\";proto=https, ' * n, parse_forwarded, n=200)
    assert_linear(lambda n: '"' * n + ";" * n + "," * n, parse_forwarded, n=200)
    assert_linear(lambda n: "a" * n, parse_host, n=200)  # long ones are refused at once
    assert_linear(lambda n: "https://" + "a." * n + "com", normalise_origin, n=200)


def test_stack_parsers_are_linear() -> None:
    proxies = ProxyHeadersMiddleware(App(), trusted_proxies=["10.0.0.0/8", "127.0.0.1"])

    def forwarded_for(n: int) -> dict[str, Any]:
        chain = ", ".join(f"10.0.{i // 250}.{i % 250}" for i in range(n)).encode()
        return http_scope(
            headers=[(b"x-forwarded-for", chain), (b"x-forwarded-proto", b"https, " * n)]
        )

    # 8n addresses stay within the middleware's address caches (1,024), so the timed
    # repeats compare like with like.
    assert_linear(forwarded_for, proxies.apply, n=100)

    sessions = SessionMiddleware(App(), secret_key=["a", "b", "c"])

    def cookies(n: int) -> dict[str, Any]:
        return http_scope(headers=[(b"cookie", b"; ".join([b"session=a.1.b", b"x=y"] * n))])

    assert_linear(cookies, lambda scope: sessions.load(scope, 0), n=200)

    cors = CORSMiddleware(App(), allow_origins=["https://a.example"], allow_headers=["x-a"])

    def preflight(n: int) -> dict[str, Any]:
        requested = b", ".join([b"x-a", b"Accept"] * n)
        headers = [
            (b"origin", b"https://a.example"),
            (b"access-control-request-method", b"GET"),
            (b"access-control-request-headers", requested),
        ]
        return http_scope("OPTIONS", headers=headers)

    async def answer(scope: dict[str, Any]) -> None:
        await cors(scope, Exchange().receive, Exchange().send)

    assert_linear(preflight, lambda scope: anyio.run(answer, scope), n=2000)


def test_the_operation_count_sees_quadratic_work() -> None:
    def quadratic(items: list[int]) -> int:
        return sum(1 for a in items for b in items if a == b)

    try:
        assert_linear(lambda n: list(range(n)), quadratic, n=50)
    except AssertionError:
        return
    raise AssertionError("a quadratic function passed the linearity check")


# -- optional whitespace is a space or a tab -------------------------------------------

# Python's str.strip() also strips these (Unicode whitespace in a latin-1 decoded header);
# HTTP's optional whitespace is only SP and HTAB (RFC 9110 section 5.6.3).
NOT_OWS = ["\x85", "\xa0", "\x1c", "\x1f", "\x0b", "\x0c"]


@given(st.sampled_from(NOT_OWS))
def test_only_spaces_and_tabs_are_optional_whitespace(junk: str) -> None:
    assert split_tokens(f" a\t,{junk}b , c{junk}".encode("latin-1")) == [
        "a",
        f"{junk}b",
        f"c{junk}",
    ]
    assert choose_encoding(f"gzip{junk}".encode("latin-1"), OFFERED) is None
    assert choose_encoding(f"gzip;q=0.5{junk}, br;q=0.1".encode("latin-1"), OFFERED) == "br"
    assert parse_node(f"1.2.3.4{junk}") is None
    assert parse_node(" \t1.2.3.4\t ") == ("1.2.3.4", 0)
    assert parse_forwarded(f"for=1.2.3.4{junk}") == [None]
    signer = SessionSigner(["s"])
    sessions = SessionMiddleware(App(), secret_key="s")
    value = signer.sign("eyJhIjoxfQ", 1000)  # {"a":1}
    for cookie in (f"session{junk}={value}", f"session={value}{junk}"):
        scope = http_scope(headers=[(b"cookie", cookie.encode("latin-1"))])
        assert sessions.load(scope, 1000)[0] == {}
    scope = http_scope(headers=[(b"cookie", f"x=1;\tsession = {value} ".encode())])
    assert sessions.load(scope, 1000)[0] == {"a": 1}
