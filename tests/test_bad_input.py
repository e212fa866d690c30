"""Hostile and broken input: every case is a clear 4xx or a correct answer.

Never a 500, a hang, an exception escaping the app, or an ERROR log for what
the client did wrong.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from microasgi import App, Request, StreamingResponse
from microasgi._stack import Middleware
from microasgi.types import Message
from tests.helpers import Exchange, MakeClient, body_messages, http_scope


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail the test if anything at ERROR or above is logged on `microasgi`."""
    with caplog.at_level(logging.DEBUG, logger="microasgi"):
        yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def make_app(**options: Any) -> tuple[App, list[str]]:
    app = App(**options)
    calls: list[str] = []

    @app.get("/")
    async def root() -> str:
        calls.append("root")
        return "root"

    @app.get("/users")
    async def users() -> str:
        calls.append("users")
        return "users"

    @app.get("/secret")
    async def secret() -> str:
        calls.append("secret")
        return "the secret"

    @app.get("/files/{name}")
    async def file(name: str) -> dict[str, str]:
        calls.append(f"file:{name}")
        return {"name": name}

    @app.get("/tree/{rest:path}")
    async def tree(rest: str) -> dict[str, str]:
        calls.append(f"tree:{rest}")
        return {"rest": rest}

    @app.get("/where")
    async def where(request: Request) -> dict[str, Any]:
        url = request.url
        return {
            "path": url.path,
            "netloc": url.netloc,
            "url": str(url),
            "hostname": url.hostname,
        }

    @app.post("/json")
    async def json_ep(request: Request) -> Any:
        return {"got": await request.json()}

    @app.post("/body")
    async def body(request: Request) -> dict[str, int]:
        return {"len": len(await request.body())}

    @app.post("/stream")
    async def stream(request: Request) -> dict[str, int]:
        n = 0
        async for chunk in request.stream():
            n += len(chunk)
        return {"len": n}

    @app.post("/form")
    async def form(request: Request) -> dict[str, int]:
        data = await request.form()
        return {"n": len(data)}

    @app.get("/inspect")
    async def inspect(request: Request) -> dict[str, Any]:
        return {
            "query": dict(request.query_params),
            "query_multi": request.query_params.multi_items(),
            "headers": request.headers.multi_items(),
            "cookies": request.cookies,
            "url": str(request.url),
        }

    return app, calls


# -- invalid JSON --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b"nope",
        b"",
        b"\x00\x01\x02",
        b'{"a": "\xff\xfe"}',
        b"\xef\xbb\xbf{",
        b"[" * 100_000,
        b'{"a":' * 50_000,
        b'"unterminated',
        b"1 2",
    ],
    ids=[
        "open-brace",
        "word",
        "empty",
        "control",
        "bad-utf8",
        "bom",
        "deep-list",
        "deep-dict",
        "string",
        "two-values",
    ],
)
def test_invalid_json_is_400(make_client: MakeClient, content: bytes, no_errors: None) -> None:
    app, _ = make_app()
    r = make_client(app).post(
        "/json", content=content, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400


def test_valid_json_still_works(make_client: MakeClient, no_errors: None) -> None:
    app, _ = make_app()
    r = make_client(app).post("/json", json={"ok": ["ü", 1]})
    assert r.json() == {"got": {"ok": ["ü", 1]}}


# -- body over the limit -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/json", "/body", "/stream", "/form"])
def test_body_over_limit_with_content_length(
    make_client: MakeClient, path: str, no_errors: None
) -> None:
    app, _ = make_app(max_body_size=100)
    headers = {"content-type": "application/x-www-form-urlencoded"}
    r = make_client(app).post(path, content=b"a=" + b"x" * 200, headers=headers)
    assert r.status_code == 413


@pytest.mark.parametrize("path", ["/json", "/body", "/stream", "/form"])
def test_body_over_limit_chunked_through_client(
    make_client: MakeClient, path: str, no_errors: None
) -> None:
    app, _ = make_app(max_body_size=100)

    def gen() -> Iterator[bytes]:
        yield b"a="
        for _ in range(10):
            yield b"x" * 30

    headers = {"content-type": "application/x-www-form-urlencoded"}
    r = make_client(app).post(path, content=gen(), headers=headers)
    assert r.status_code == 413


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/json", "/body", "/stream", "/form"])
async def test_body_over_limit_chunked_without_content_length(path: str, no_errors: None) -> None:
    app, _ = make_app(max_body_size=100)
    headers = [(b"host", b"t"), (b"content-type", b"application/x-www-form-urlencoded")]
    messages = body_messages(b"a=", *([b"x" * 30] * 10))
    ex = await Exchange(messages).run(app, http_scope("POST", path, headers=headers))
    assert ex.status == 413


@pytest.mark.anyio
@pytest.mark.parametrize("value", [b"abc", b"-1", b"1e9", b"", b" 12", b"0x10", b"\xff"])
async def test_bad_content_length_is_not_a_500(value: bytes, no_errors: None) -> None:
    app, _ = make_app(max_body_size=100)
    headers = [(b"host", b"t"), (b"content-length", value)]
    ex = await Exchange(body_messages(b"hello")).run(
        app, http_scope("POST", "/body", headers=headers)
    )
    assert ex.status is not None
    assert ex.status == 200 or 400 <= ex.status < 500
    if ex.status == 200:
        assert json.loads(ex.body) == {"len": 5}


@pytest.mark.anyio
async def test_huge_content_length_is_413(no_errors: None) -> None:
    app, _ = make_app(max_body_size=100)
    headers = [(b"host", b"t"), (b"content-length", b"9" * 40)]
    ex = await Exchange(body_messages(b"x")).run(app, http_scope("POST", "/body", headers=headers))
    assert ex.status == 413


# -- paths --------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["users", "", "secret", "*", "files/x"])
async def test_path_without_leading_slash_is_400(path: str, no_errors: None) -> None:
    app, calls = make_app()
    ex = await Exchange().run(app, http_scope("GET", path))
    assert ex.status == 400
    assert calls == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path",
    [
        "/files/../secret",
        "/files/./../secret",
        "/./secret",
        "/users/../secret",
        "/files/x/../../secret",
        "/../secret",
    ],
)
async def test_dot_segments_do_not_reach_other_routes(path: str, no_errors: None) -> None:
    app, calls = make_app()
    ex = await Exchange().run(app, http_scope("GET", path))
    assert ex.status in (400, 404)
    assert "secret" not in calls
    assert b"the secret" not in ex.body


@pytest.mark.anyio
async def test_dot_segments_captured_by_path_convertor_not_resolved(no_errors: None) -> None:
    """A {rest:path} parameter gets the dot segments as sent; nothing is resolved."""
    app, calls = make_app()
    ex = await Exchange().run(app, http_scope("GET", "/tree/../secret"))
    assert ex.status == 200
    assert json.loads(ex.body) == {"rest": "../secret"}
    assert "secret" not in calls


@pytest.mark.anyio
async def test_dot_dot_as_a_single_segment_parameter(no_errors: None) -> None:
    app, calls = make_app()
    ex = await Exchange().run(app, http_scope("GET", "/files/.."))
    assert ex.status in (200, 400, 404)
    assert "secret" not in calls
    if ex.status == 200:
        assert json.loads(ex.body) == {"name": ".."}


@pytest.mark.anyio
async def test_percent_encoded_slash_routes_on_decoded_path(no_errors: None) -> None:
    """Servers give `path` percent-decoded (%2F becomes "/") and `raw_path` as sent.

    microasgi routes on `path` alone: "/files/a%2Fb" is "/files/a/b", two
    segments, so the one-segment `{name}` route does not match (404), and a
    `{rest:path}` route gets "a/b". raw_path is not consulted.
    """
    app, calls = make_app()
    ex = await Exchange().run(app, http_scope("GET", "/files/a/b", raw_path=b"/files/a%2Fb"))
    assert ex.status == 404
    assert calls == []
    ex = await Exchange().run(app, http_scope("GET", "/tree/a/b", raw_path=b"/tree/a%2Fb"))
    assert ex.status == 200
    assert json.loads(ex.body) == {"rest": "a/b"}


@pytest.mark.anyio
async def test_literal_percent_2f_in_decoded_path_is_not_decoded_again(no_errors: None) -> None:
    """A client that sent %252F gets path "/files/a%2Fb": one segment, not decoded twice."""
    app, calls = make_app()
    scope = http_scope("GET", "/files/a%2Fb", raw_path=b"/files/a%252Fb")
    ex = await Exchange().run(app, scope)
    assert ex.status == 200
    assert json.loads(ex.body) == {"name": "a%2Fb"}
    assert calls == ["file:a%2Fb"]


def test_percent_encoded_slash_through_client(make_client: MakeClient, no_errors: None) -> None:
    app, _ = make_app()
    client = make_client(app)
    # httpx sends the raw path; the test client decodes it into scope["path"] like a server.
    assert client.get("/files/a%2Fb").status_code == 404
    assert client.get("/tree/a%2Fb").json() == {"rest": "a/b"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path", ["//", "//secret", "/secret//", "/\x00", "/" + "a" * 10_000, "/files/" + "é" * 50]
)
async def test_odd_paths_not_500(path: str, no_errors: None) -> None:
    app, calls = make_app()
    ex = await Exchange().run(app, http_scope("GET", path))
    assert ex.status is not None
    assert ex.status < 500
    if "secret" in calls:
        assert path.strip("/") == "secret"


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["BREW", "get", "CONNECT", "TRACE", ""])
async def test_unknown_methods_not_500(method: str, no_errors: None) -> None:
    app, _ = make_app()
    ex = await Exchange().run(app, http_scope(method, "/users"))
    assert ex.status is not None
    assert 400 <= ex.status < 500


# -- Host header -------------------------------------------------------------------------


BAD_HOSTS = [
    b"example.com/?",
    b"example.com/evil?x=",
    b"evil.com#x",
    b"evil.com x",
    b" evil.com",
    b"evil.com/../admin",
    b"user@evil.com",
    b"evil.com\\x",
    b"a:b:c",
    b"evil.com:80x",
    b"\xffevil",
    b"",
]


@pytest.mark.anyio
@pytest.mark.parametrize("host", BAD_HOSTS)
async def test_hostile_host_header(host: bytes, no_errors: None) -> None:
    app, _ = make_app()
    headers = [(b"host", host)]
    scope = http_scope("GET", "/where", headers=headers, query_string=b"q=1")
    ex = await Exchange().run(app, scope)
    assert ex.status == 200
    data = json.loads(ex.body)
    assert data["path"] == "/where"
    netloc = data["netloc"]
    for bad in "/?# @\\\xff":
        assert bad not in netloc
    assert netloc  # fell back to something usable (the server address)
    assert data["url"] == f"http://{netloc}/where?q=1"


@pytest.mark.anyio
async def test_duplicated_host_headers(no_errors: None) -> None:
    app, _ = make_app()
    headers = [(b"host", b"good.example"), (b"host", b"evil.com/?x#")]
    ex = await Exchange().run(app, http_scope("GET", "/where", headers=headers))
    assert ex.status in (200, 400)
    if ex.status == 200:
        data = json.loads(ex.body)
        assert data["path"] == "/where"
        assert data["netloc"] in ("good.example", "testserver")
        assert data["url"] == f"http://{data['netloc']}/where"
    # And the other way round: the first Host header is the hostile one.
    headers = [(b"host", b"evil.com/?x#"), (b"host", b"good.example")]
    ex = await Exchange().run(app, http_scope("GET", "/where", headers=headers))
    assert ex.status in (200, 400)
    if ex.status == 200:
        data = json.loads(ex.body)
        assert data["path"] == "/where"
        assert "evil" not in data["netloc"]
        assert data["url"] == f"http://{data['netloc']}/where"


def test_hostile_host_through_client(make_client: MakeClient, no_errors: None) -> None:
    app, _ = make_app()
    r = make_client(app).get("/where", headers={"host": "evil.com#frag"})
    assert r.status_code == 200
    data = r.json()
    assert data["path"] == "/where"
    assert "#" not in data["netloc"]
    assert data["url"] == f"http://{data['netloc']}/where"


def test_good_host_with_port_is_used(make_client: MakeClient, no_errors: None) -> None:
    app, _ = make_app()
    r = make_client(app).get("/where", headers={"host": "api.example.com:8080"})
    assert r.json() == {
        "path": "/where",
        "netloc": "api.example.com:8080",
        "url": "http://api.example.com:8080/where",
        "hostname": "api.example.com",
    }


# -- undecodable bytes -------------------------------------------------------------------


@pytest.mark.anyio
async def test_non_utf8_query_string(no_errors: None) -> None:
    app, _ = make_app()
    scope = http_scope("GET", "/inspect", query_string=b"a=%ff&b=\xff\xfe&c=ok&%zz=%&d=%c3%a9")
    ex = await Exchange().run(app, scope)
    assert ex.status == 200
    data = json.loads(ex.body)
    assert data["query"]["a"] == "\ufffd"
    assert data["query"]["b"] == "\ufffd\ufffd"
    assert data["query"]["c"] == "ok"
    assert data["query"]["d"] == "é"


@pytest.mark.anyio
async def test_non_utf8_header_values(no_errors: None) -> None:
    app, _ = make_app()
    headers = [
        (b"host", b"testserver"),
        (b"x-bin", b"\xff\xfe\x80"),
        (b"user-agent", b"caf\xe9"),
        (b"cookie", b"a=\xff; b=ok"),
    ]
    ex = await Exchange().run(app, http_scope("GET", "/inspect", headers=headers))
    assert ex.status == 200
    data = json.loads(ex.body)
    received = dict((k, v) for k, v in data["headers"])
    assert received["x-bin"] == "\xff\xfe\x80"  # latin-1: every byte maps to one character
    assert received["user-agent"] == "café"
    assert data["cookies"]["b"] == "ok"
    assert data["cookies"]["a"] == "\xff"


@pytest.mark.anyio
async def test_non_utf8_header_name(no_errors: None) -> None:
    app, _ = make_app()
    headers = [(b"host", b"testserver"), (b"x-\xff", b"v")]
    ex = await Exchange().run(app, http_scope("GET", "/inspect", headers=headers))
    assert ex.status == 200
    assert ["x-\xff", "v"] in json.loads(ex.body)["headers"]


@pytest.mark.anyio
async def test_non_utf8_path_param(no_errors: None) -> None:
    """Servers (uvicorn, hypercorn) percent-decode %FF to U+FFFD."""
    app, calls = make_app()
    ex = await Exchange().run(app, http_scope("GET", "/files/\ufffd", raw_path=b"/files/%FF"))
    assert ex.status == 200
    assert json.loads(ex.body) == {"name": "\ufffd"}
    assert calls == ["file:\ufffd"]


# -- client disconnects ---------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/json", "/body", "/stream", "/form"])
@pytest.mark.parametrize("with_middleware", [False, True])
async def test_disconnect_mid_body(path: str, with_middleware: bool, no_errors: None) -> None:
    class PassThrough:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

    middleware = [Middleware(PassThrough)] if with_middleware else None
    app, _ = make_app(middleware=middleware)
    handled: list[Any] = []

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> str:
        handled.append(exc)
        return "handled"

    headers = [(b"host", b"t"), (b"content-type", b"application/x-www-form-urlencoded")]
    messages = [
        {"type": "http.request", "body": b"a=partial", "more_body": True},
        {"type": "http.disconnect"},
    ]
    ex = await Exchange(messages).run(app, http_scope("POST", path, headers=headers))
    # Nobody is left to answer: in particular no 500 went out.
    assert ex.status != 500
    assert all(m.get("status") != 500 for m in ex.sent)
    assert handled == []


@pytest.mark.anyio
async def test_disconnect_before_any_body(no_errors: None) -> None:
    app, _ = make_app()
    ex = await Exchange([{"type": "http.disconnect"}]).run(app, http_scope("POST", "/json"))
    assert ex.status != 500


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_disconnect_mid_response(kind: str, no_errors: None) -> None:
    app = App()
    events: list[str] = []

    @app.get("/feed")
    async def feed() -> StreamingResponse:
        async def agen() -> AsyncIterator[bytes]:
            try:
                for i in range(10_000):
                    yield b"data %d\n" % i
                    await anyio.sleep(0.001)
            finally:
                events.append("closed")

        def sgen() -> Iterator[bytes]:
            try:
                for i in range(10_000):
                    yield b"data %d\n" % i
            finally:
                events.append("closed")

        return StreamingResponse(agen() if kind == "async" else sgen())

    class GoneAfterTwoChunks(Exchange):
        async def send(self, message: Message) -> None:
            await super().send(message)
            chunks = [m for m in self.sent if m["type"] == "http.response.body"]
            if len(chunks) == 2:
                self.done.set()  # receive() now says http.disconnect

    ex = await GoneAfterTwoChunks().run(app, http_scope("GET", "/feed"))
    assert ex.status == 200
    assert events == ["closed"]
    bodies = [m for m in ex.sent if m["type"] == "http.response.body"]
    assert len(bodies) < 10_000


@pytest.mark.anyio
async def test_send_raises_oserror_on_plain_response() -> None:
    """An ASGI 2.4 server's send() raises OSError once the client has gone: nothing escapes."""
    app, _ = make_app()

    class Gone(Exchange):
        async def send(self, message: Message) -> None:
            raise OSError("connection lost")

    await Gone().run(app, http_scope("GET", "/users"))
