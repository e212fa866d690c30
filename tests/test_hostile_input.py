"""Hostile input, round two: the request-path parsers an attacker reaches first.

Each hole found by trying microasgi as an attacker would has a test here that
failed before its fix; then the class is closed with property-based tests
(hypothesis) and linearity checks (tests/linearity.py) for every parser on the
request path: the URL and Host, the path and its convertors, the query string,
headers, cookies, JSON, urlencoded and multipart bodies.
"""

from __future__ import annotations

import http.cookies
import json
import math
import re
import socket
import tracemalloc
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microasgi import App, HTTPException, RedirectResponse, Request, WebSocket
from microasgi._forms import UrlencodedParser, parse_form
from microasgi._json import InvalidJSON, decode_json
from microasgi._paths import _Pattern
from microasgi.datastructures import URL, Headers, QueryParams
from microasgi.middleware import Middleware
from microasgi.requests import parse_cookies
from microasgi.types import ASGIApp, Receive, Scope, Send
from tests.helpers import MakeClient, body_messages, free_port, http_scope, run_app
from tests.linearity import assert_linear
from tests.test_integration_uvicorn import run_server

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- 1. the URL's string form keeps the validated host ------------------------------------


class ToHTTPS:
    """A middleware of the kind that made hole 1 an open redirect."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["scheme"] == "http":
            url = Request(scope).url.replace(scheme="https")
            await RedirectResponse(str(url), status_code=308)(scope, receive, send)
            return
        await self.app(scope, receive, send)


HOSTILE_TARGETS = ["@evil.com", "//evil.com", "http://evil.com/x", "evil.com", "//evil.com/a?b"]


def redirect_app() -> App:
    app = App(middleware=[Middleware(ToHTTPS)])

    @app.get("/")
    async def index() -> str:
        return "ok"

    return app


@pytest.mark.anyio
@pytest.mark.parametrize("target", HOSTILE_TARGETS)
async def test_url_of_a_hostile_target_keeps_the_host(target: str) -> None:
    path, _, query = target.partition("?")
    scope = http_scope(
        "GET",
        path,
        raw_path=path.encode(),
        query_string=query.encode(),
        headers=[(b"host", b"good.example")],
    )
    exchange = await run_app(redirect_app(), scope)
    assert exchange.status == 308
    location = (exchange.header(b"location") or b"").decode()
    assert urlsplit(location).hostname == "good.example", location
    assert location.startswith("https://good.example/")


def raw_request(port: int, request: bytes) -> bytes:
    """Send `request` as is over a socket and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.fixture(scope="module")
def redirect_server() -> Iterator[int]:
    port = free_port()
    # h11: it passes these targets through (httptools, uvicorn's default when installed,
    # answers them 400 itself before the app sees them).
    with run_server(redirect_app(), port, http="h11"):
        yield port


@pytest.mark.integration
@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_url_of_a_hostile_target_keeps_the_host_under_uvicorn(
    redirect_server: int, target: str
) -> None:
    answer = raw_request(
        redirect_server,
        f"GET {target} HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n".encode(),
    )
    head = answer.split(b"\r\n\r\n")[0].decode("latin-1").lower()
    assert head.startswith("http/1.1 308")
    location = re.search(r"^location: (.*)$", head, re.M)
    assert location is not None
    assert urlsplit(location.group(1)).hostname == "good.example", location.group(1)


@given(
    path=st.text(max_size=60),
    host=st.binary(max_size=40),
    query=st.binary(max_size=40),
    scheme=st.sampled_from(["http", "https", "ws", "wss"]),
)
@FAST
def test_url_never_names_another_host(path: str, host: bytes, query: bytes, scheme: str) -> None:
    scope = {
        "type": "http",
        "scheme": scheme,
        "path": path,
        "query_string": query,
        "headers": [(b"host", host)],
        "server": ("server.example", 8080),
    }
    url = URL.from_scope(scope)
    text = str(url)
    parts = urlsplit(text)
    expected = url.hostname.lower() or None
    assert parts.hostname == expected, (text, url.netloc)
    assert url.netloc in (host.decode("latin-1"), "server.example:8080")
    assert str(url.replace(scheme="https")).startswith(f"https://{url.netloc}/")


# -- 2. mixed path segments are linear; the path has a length cap ---------------------------


def mixed_app(**options: Any) -> App:
    app = App(**options)

    @app.get("/{slug}-{ref}.html")
    async def two(slug: str, ref: str) -> dict[str, str]:
        return {"slug": slug, "ref": ref}

    @app.get("/three/{a}-{b}-{c}")
    async def three(a: str, b: str, c: str) -> list[str]:
        return [a, b, c]

    return app


def test_a_long_segment_of_separators_is_matched_in_linear_time() -> None:
    two, three = _Pattern("{slug}-{ref}.html"), _Pattern("{a}-{b}-{c}")
    assert_linear(lambda n: "-" * n + ".html", two.match, 4000)
    assert_linear(lambda n: "-" * n, three.match, 4000)
    assert_linear(lambda n: "a-" * n + "b.html", two.match, 4000)


@pytest.mark.anyio
async def test_a_60_kb_segment_is_answered() -> None:
    app = mixed_app(max_path_length=100_000)  # past the cap: the matcher itself
    exchange = await run_app(app, http_scope("GET", "/" + "-" * 60_000 + ".html"), timeout=5)
    assert json.loads(exchange.body) == {"slug": "-" * 59_998, "ref": "-"}  # as a regex would
    exchange = await run_app(app, http_scope("GET", "/three/" + "-" * 60_000), timeout=5)
    assert [len(value) for value in json.loads(exchange.body)] == [59_996, 1, 1]
    exchange = await run_app(app, http_scope("GET", "/three/" + "-" * 60_000 + "x"), timeout=5)
    assert json.loads(exchange.body)[1:] == ["-", "x"]
    for path in ("/" + "-" * 60_000 + ".html", "/three/" + "-" * 60_000):
        exchange = await run_app(mixed_app(), http_scope("GET", path))
        assert exchange.status == 414  # the default cap answers before any matching
    exchange = await run_app(app, http_scope("GET", "/a-b-c.html"))
    assert json.loads(exchange.body) == {"slug": "a-b", "ref": "c"}


separator_free = st.text(alphabet=st.characters(blacklist_characters="-./"), min_size=1, max_size=8)


@given(st.lists(separator_free, min_size=1, max_size=4), st.sampled_from(["-", ".", "--", "x."]))
@FAST
def test_mixed_segment_returns_the_values_it_was_built_from(values: list[str], sep: str) -> None:
    if any(sep in value for value in values):
        return
    template = "v" + sep.join(f"{{p{i}}}" for i in range(len(values))) + ".end"
    segment = "v" + sep.join(values) + ".end"
    assert _Pattern(template).match(segment) == values


@given(st.text(alphabet="ab-.", max_size=30))
@FAST
def test_mixed_segment_agrees_with_a_greedy_regex_and_round_trips(segment: str) -> None:
    # For str parameters the rule (separators from the right) is what a greedy regex does.
    pattern = _Pattern("{a}-{b}.{c}")
    values = pattern.match(segment)
    regex = re.fullmatch(r"([^/]+)-([^/]+)\.([^/]+)", segment)
    assert (values is None) == (regex is None)
    if values is not None:
        assert regex is not None
        assert values == list(regex.groups())
        assert f"{values[0]}-{values[1]}.{values[2]}" == segment


def test_typed_parameters_fall_back_to_separators_from_the_left() -> None:
    pattern = _Pattern("{id:int}-{slug}")
    assert pattern.match("12-my-post") == [12, "my-post"]
    assert _Pattern("{slug}-{id:int}").match("my-post-12") == ["my-post", 12]
    assert pattern.match("x-12") is None
    with pytest.raises(ValueError, match="separated by text"):
        _Pattern("{a}{b}")


def test_paths_longer_than_the_cap_are_414(make_client: MakeClient) -> None:
    app = App(max_path_length=100)

    @app.get("/{rest:path}")
    async def anything(rest: str) -> str:
        return "ok"

    @app.websocket("/ws/{rest:path}")
    async def socket(ws: WebSocket, rest: str) -> None:
        await ws.accept()

    client = make_client(app)
    assert client.get("/" + "a" * 99).text == "ok"
    r = client.get("/" + "a" * 100)
    assert r.status_code == 414
    assert "100" in r.text
    from microasgi.testclient import WebSocketDenied

    with pytest.raises(WebSocketDenied):
        client.websocket_connect("/ws/" + "a" * 200)
    assert App().router.max_path_length == 8192


# -- 3. cookies -----------------------------------------------------------------------------


def test_a_60_kb_quoted_cookie_of_backslashes_is_parsed_in_linear_time() -> None:
    assert_linear(lambda n: 'a="' + "\\" * n + '"', parse_cookies, 8000)
    assert_linear(lambda n: 'a="' + "\\\\\\052" * n + '"', parse_cookies, 2000)
    assert_linear(lambda n: "a=b; " * n, parse_cookies, 2000)
    assert len(parse_cookies('a="' + "\\" * 60_000 + '"')["a"]) == 30_000


cookie_value = st.text(alphabet='ab\\"0123478;, =', max_size=20)


@given(cookie_value)
@FAST
def test_quoted_cookie_values_unquote_as_http_cookies_does(value: str) -> None:
    quoted = '"' + value + '"'
    if ";" in quoted:
        return
    expected = http.cookies._unquote(quoted)  # type: ignore[attr-defined]
    assert parse_cookies("k=" + quoted)["k"] == expected


@given(st.text(max_size=200))
@FAST
def test_cookie_parsing_never_raises(header: str) -> None:
    cookies = parse_cookies(header)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in cookies.items())
    assert all(key or value for key, value in cookies.items())  # no empty pair kept
    assert all(";" not in key + value for key, value in cookies.items())


def test_cookie_header_over_the_limit_is_431(make_client: MakeClient) -> None:
    app = App(max_cookie_size=50)

    @app.get("/")
    async def index(request: Request) -> dict[str, str]:
        return request.cookies

    client = make_client(app)
    assert client.get("/", headers={"cookie": "a=1"}).json() == {"a": "1"}
    r = client.get("/", headers={"cookie": "a=" + "x" * 60})
    assert r.status_code == 431


# -- 4. urlencoded bodies -------------------------------------------------------------------


def form_app() -> App:
    app = App()

    @app.post("/form")
    async def form(request: Request) -> dict[str, Any]:
        data = await request.form(
            max_fields=int(request.query_params.get("max_fields", 1000)),
            max_part_size=int(request.query_params.get("max_part_size", 1024 * 1024)),
        )
        items = data.multi_items()
        return {"fields": len(items), "size": sum(len(v) for _, v in items)}

    return app


URLENCODED = [(b"content-type", b"application/x-www-form-urlencoded")]


@pytest.mark.anyio
async def test_one_huge_field_of_escapes_is_413_with_bounded_memory() -> None:
    body = b"a=" + b"%41" * (3 * 1024 * 1024)  # 9.4 MiB
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    tracemalloc.start()
    try:
        exchange = await run_app(
            form_app(), http_scope("POST", "/form", headers=URLENCODED), body_messages(*chunks)
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert exchange.status == 413
    assert b"larger than 1048576 bytes" in exchange.body
    assert peak < 8 * 1024 * 1024  # the chunks read so far plus one field, not 725 MiB


@pytest.mark.anyio
async def test_many_fields_within_limits_use_memory_in_proportion_to_the_body() -> None:
    field = b"k=" + b"%41" * 300
    body = b"&".join([field] * 5000)  # about 4.5 MiB
    tracemalloc.start()
    try:
        exchange = await run_app(
            form_app(),
            http_scope("POST", "/form", headers=URLENCODED, query_string=b"max_fields=5000"),
            body_messages(body),
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert json.loads(exchange.body) == {"fields": 5000, "size": 5000 * 300}
    assert peak < 4 * len(body)


@pytest.mark.anyio
async def test_a_large_chunk_is_parsed_in_slices_that_let_other_tasks_run() -> None:
    body = b"&".join([b"k=v"] * (2 * 1024 * 1024 // 4))  # one 2 MiB chunk
    ticks = 0

    async def chunks() -> Any:
        yield body

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.lowlevel.checkpoint()
        before = ticks
        form, kept = await parse_form(
            "application/x-www-form-urlencoded",
            chunks(),
            max_files=0,
            max_fields=10**6,
            max_part_size=100,
        )
        tg.cancel_scope.cancel()
    assert kept == body
    assert len(form.multi_items()) == len(body) // 4 + 1
    assert ticks - before >= len(body) // (64 * 1024) - 1  # once per 64 KiB slice


def test_urlencoded_limits(make_client: MakeClient) -> None:
    client = make_client(form_app())
    headers = {"content-type": "application/x-www-form-urlencoded"}
    assert client.post("/form?max_fields=3", content=b"a=1&b=2&c=3", headers=headers).json() == {
        "fields": 3,
        "size": 3,
    }
    r = client.post("/form?max_fields=3", content=b"a=1&b=2&c=3&d=4", headers=headers)
    assert r.status_code == 400
    r = client.post("/form?max_part_size=10", content=b"a=" + b"x" * 20, headers=headers)
    assert r.status_code == 413
    r = client.post("/form?max_part_size=10", content=b"a=" + b"x" * 8, headers=headers)
    assert r.status_code == 200


form_text = st.text(alphabet="ab=&+%2 é", max_size=40)


@given(form_text, st.lists(st.integers(min_value=1, max_value=8), max_size=10))
@FAST
def test_urlencoded_parser_agrees_with_parse_qsl_whatever_the_chunks(
    text: str, cuts: list[int]
) -> None:
    raw = text.encode()
    try:
        expected = parse_qsl(raw.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        expected = None
    parser = UrlencodedParser(max_fields=1000, max_field_size=1000)
    position = 0
    try:
        for cut in cuts:
            parser.feed(raw[position : position + cut])
            position += cut
        parser.feed(raw[position:])
        got = parser.close()
    except HTTPException as exc:
        assert exc.status_code == 400
        assert expected is None  # only text that is not UTF-8 once decoded
        return
    assert got == expected


def test_urlencoded_parser_is_linear() -> None:
    def parse(body: bytes) -> None:
        parser = UrlencodedParser(max_fields=10**6, max_field_size=10**8)
        parser.feed(body)
        parser.close()

    assert_linear(lambda n: b"a=" + b"%41" * n, parse, 4000)
    assert_linear(lambda n: b"&" * n, parse, 4000)
    assert_linear(lambda n: b"a=b&" * n, parse, 2000)
    assert_linear(lambda n: b"+" * n, parse, 4000)

    def feed_bytewise(body: bytes) -> None:
        parser = UrlencodedParser(max_fields=10**6, max_field_size=10**8)
        for i in range(len(body)):
            parser.feed(body[i : i + 1])
        parser.close()

    assert_linear(lambda n: b"a=" + b"x" * n, feed_bytewise, 500)


# -- 5 and 6. JSON: RFC 8259, one decoder, one error ---------------------------------------


def json_app() -> App:
    app = App()

    @app.post("/echo")
    async def echo(request: Request) -> Any:
        return {"got": await request.json()}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            try:
                await websocket.send_json({"got": decode_json(text)})
            except ValueError as exc:
                await websocket.send_json({"error": type(exc).__name__})

    @app.websocket("/ws-json")
    async def ws_json(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            try:
                value = await websocket.receive_json()
            except ValueError as exc:
                await websocket.send_json({"error": type(exc).__name__})
                continue
            await websocket.send_json({"got": value})

    return app


NOT_JSON = [
    b"NaN",
    b"[Infinity]",
    b'{"a": -Infinity}',
    b"1e999",
    b"[-1e400]",
    b'"\\ud800"',
    b'{"\\udfff": 1}',
    b'"\xed\xa0\x80"',  # a surrogate written as (CESU) bytes
    b"\xff",
    b"[" * 100_000,
    b"1 2",
]


@pytest.mark.parametrize("body", NOT_JSON, ids=lambda b: repr(b[:12]))
def test_request_json_refuses_what_json_forbids(make_client: MakeClient, body: bytes) -> None:
    r = make_client(json_app()).post("/echo", content=body)
    assert r.status_code == 400
    assert r.text.startswith("Invalid JSON body")


def test_websocket_receive_json_on_deep_nesting_keeps_the_connection(
    make_client: MakeClient,
) -> None:
    with make_client(json_app()).websocket_connect("/ws-json") as session:
        session.send_text("[" * 10_000)
        assert session.receive_json() == {"error": "InvalidJSON"}
        session.send_text("NaN")
        assert session.receive_json() == {"error": "InvalidJSON"}
        session.send_text('{"ok": [1, 2.5, "é"]}')
        assert session.receive_json() == {"got": {"ok": [1, 2.5, "é"]}}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(json_values)
@FAST
def test_decode_json_reads_what_json_writes(value: Any) -> None:
    assert decode_json(json.dumps(value)) == value
    assert decode_json(json.dumps(value, ensure_ascii=False).encode()) == value


@given(st.text(alphabet='[]{}",:0123456789.eE+-tfrnulaNIy\\ud8c0 ', max_size=30))
@FAST
def test_decode_json_is_json_loads_minus_what_rfc_8259_forbids(text: str) -> None:
    try:
        loaded: Any = json.loads(text)
        error = None
    except (ValueError, RecursionError) as exc:
        loaded, error = None, exc
    try:
        decoded = decode_json(text)
    except InvalidJSON:
        return  # stricter is allowed; the next property says where
    assert error is None
    assert decoded == loaded or (isinstance(loaded, float) and math.isnan(loaded))


@given(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", '"\\ud800"', '"\\udc00x"']))
def test_decode_json_refuses_each_extension(text: str) -> None:
    with pytest.raises(InvalidJSON):
        decode_json(text)
    with pytest.raises(ValueError):
        decode_json(f"[{text}]")


def test_decode_json_is_linear() -> None:
    assert_linear(lambda n: "[" + "1," * n + "1]", decode_json, 4000)
    assert_linear(lambda n: '"' + "\\u00e9" * n + '"', decode_json, 4000)
    assert_linear(lambda n: " " * n + "1" + " " * n, decode_json, 4000)


# -- 7. multipart: segmentation never decides ------------------------------------------------


BOUNDARY = "xYzZY"
MULTIPART = [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]
MULTIPART_BODY = (
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="field"\r\n\r\n'
    "value\r\n"
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n'
    "Content-Type: text/plain\r\n\r\n"
    "file content\r\n"
    f"--{BOUNDARY}--\r\n"
).encode()


def upload_app() -> App:
    app = App()

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, Any]:
        form = await request.form()
        file = form["file"]
        return {"field": form["field"], "file": (await file.read()).decode()}

    return app


@pytest.mark.anyio
@pytest.mark.parametrize("epilogue", [b"", b"\r\n", b"preamble-like junk\r\n"])
async def test_multipart_parses_the_same_split_at_every_byte(epilogue: bytes) -> None:
    app = upload_app()
    body = MULTIPART_BODY + epilogue
    expected = {"field": "value", "file": "file content"}
    for cut in range(1, len(body)):
        scope = http_scope("POST", "/upload", headers=MULTIPART)
        exchange = await run_app(app, scope, body_messages(body[:cut], body[cut:]))
        assert exchange.status == 200, (cut, exchange.body)
        assert json.loads(exchange.body) == expected


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=12))
@settings(max_examples=60, deadline=None)
def test_multipart_parses_the_same_in_any_chunks(cuts: list[int]) -> None:
    chunks = []
    position = 0
    for cut in cuts:
        chunks.append(MULTIPART_BODY[position : position + cut])
        position += cut
    chunks.append(MULTIPART_BODY[position:])
    chunks = [chunk for chunk in chunks if chunk] or [b""]

    async def run() -> Any:
        scope = http_scope("POST", "/upload", headers=MULTIPART)
        return await run_app(upload_app(), scope, body_messages(*chunks))

    exchange = anyio.run(run)
    assert json.loads(exchange.body) == {"field": "value", "file": "file content"}


# -- the rest of the request path: query, headers, routing ----------------------------------


@given(st.binary(max_size=200))
@FAST
def test_query_params_never_raise(query: bytes) -> None:
    params = QueryParams(query)
    assert all(isinstance(k, str) for k in params)
    assert str(QueryParams(params.multi_items())) is not None


def test_query_params_are_linear() -> None:
    assert_linear(lambda n: b"a=%41&" * n, QueryParams, 2000)
    assert_linear(lambda n: b"%" * n, QueryParams, 4000)


@given(st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=40)), max_size=20))
@FAST
def test_headers_never_raise(raw: list[tuple[bytes, bytes]]) -> None:
    headers = Headers(raw=raw)
    for name in headers:
        assert headers.getlist(name)
    assert len(headers.items()) == len(raw)


def routing_app() -> App:
    app = App()

    @app.get("/users/{user_id:int}")
    async def user(user_id: int) -> int:
        return user_id  # type: ignore[return-value]

    @app.get("/f/{x:float}/{u:uuid}")
    async def typed(x: float, u: Any) -> str:
        return "typed"

    @app.get("/files/{name}.{ext}")
    async def file(name: str, ext: str) -> str:
        return "file"

    @app.route("/tree/{rest:path}", methods=["GET", "POST"])
    async def tree(rest: str) -> str:
        return "tree"

    @app.websocket("/ws/{room}")
    async def ws(websocket: WebSocket, room: str) -> None:
        await websocket.accept()

    return app


ROUTING = routing_app()
path_text = st.text(alphabet=st.sampled_from("/.-0123456789abcdef%é{}:\x00 "), max_size=60)


@given(path_text, st.sampled_from(["GET", "POST", "HEAD", "DELETE", "WEIRD"]))
@FAST
def test_routing_any_path_gives_a_documented_answer(path: str, method: str) -> None:
    async def run() -> Any:
        scope = http_scope(method, path, raw_path=quote(path).encode())
        return await run_app(ROUTING, scope)

    exchange = anyio.run(run)
    assert exchange.status in (200, 204, 307, 400, 404, 405, 414, 426), (path, exchange.status)


def test_routing_is_linear_in_the_path() -> None:
    async def route(path: str) -> None:
        await run_app(ROUTING, http_scope("GET", path))

    def run(path: str) -> None:
        anyio.run(route, path)

    assert_linear(lambda n: "/" * n, run, 1000)
    assert_linear(lambda n: "/files/" + "." * n, run, 1000)
    assert_linear(lambda n: "/tree/" + "a/" * n, run, 1000)


# -- form bodies: any content type, any bytes ---------------------------------------------


def test_the_content_type_parser_is_linear() -> None:
    import multipart

    parse = multipart.parse_options_header
    assert_linear(lambda n: "multipart/form-data; " + 'a="' * n, parse, 4000)
    assert_linear(lambda n: "x;" + " a=b;" * n, parse, 2000)
    assert_linear(lambda n: 'x; filename="' + '\\"' * n, parse, 4000)
    assert_linear(lambda n: "x; " + ";" * n, parse, 4000)


@given(content_type=st.text(max_size=80), body=st.binary(max_size=300))
@FAST
def test_any_form_body_gets_a_documented_answer(content_type: str, body: bytes) -> None:
    async def run() -> Any:
        headers = [(b"content-type", content_type.encode("utf-8", "replace"))]
        return await run_app(
            form_app(), http_scope("POST", "/form", headers=headers), body_messages(body)
        )

    assert anyio.run(run).status in (200, 400, 413, 415)


@given(st.binary(max_size=400), st.lists(st.integers(min_value=1, max_value=50), max_size=8))
@FAST
def test_any_multipart_bytes_in_any_chunks_get_a_documented_answer(
    body: bytes, cuts: list[int]
) -> None:
    chunks, position = [], 0
    for cut in cuts:
        chunks.append(body[position : position + cut])
        position += cut
    chunks.append(body[position:])

    async def run() -> Any:
        scope = http_scope("POST", "/form", headers=MULTIPART)
        return await run_app(form_app(), scope, body_messages(*[c for c in chunks if c] or [b""]))

    assert anyio.run(run).status in (200, 400, 413)


@pytest.mark.anyio
@pytest.mark.parametrize("digits", [19, 5000, 100_000])
async def test_a_content_length_of_thousands_of_digits_is_413(digits: int) -> None:
    app = form_app()
    headers = [*URLENCODED, (b"content-length", b"9" * digits)]
    exchange = await run_app(
        app, http_scope("POST", "/form", headers=headers), body_messages(b"a=1")
    )
    assert exchange.status == 413
