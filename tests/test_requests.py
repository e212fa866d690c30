"""Request: URL, headers, query, cookies, state, body/json/stream, disconnects and body limits."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from microasgi import App, HTTPException, Request, Router
from microasgi.requests import ClientDisconnect
from tests.helpers import Exchange, MakeClient, body_messages, http_scope, run_app

# -- method, url, headers, query, path params ------------------------------------------


def echo_app() -> App:
    app = App()

    @app.route("/echo/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    async def echo(request: Request) -> dict[str, Any]:
        url = request.url
        return {
            "method": request.method,
            "path": url.path,
            "query": url.query,
            "scheme": url.scheme,
            "netloc": url.netloc,
            "url": str(url),
        }

    return app


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_method(make_client: MakeClient, method: str) -> None:
    client = make_client(echo_app())
    r = client.request(method, "/echo/x")
    assert r.status_code == 200
    assert r.json()["method"] == method


def test_url_parts(make_client: MakeClient) -> None:
    client = make_client(echo_app())
    data = client.get("/echo/a/b?x=1&y=two").json()
    assert data["path"] == "/echo/a/b"
    assert data["query"] == "x=1&y=two"
    assert data["scheme"] == "http"
    assert data["netloc"] == "testserver"
    assert data["url"] == "http://testserver/echo/a/b?x=1&y=two"


def test_url_without_query_has_no_question_mark(make_client: MakeClient) -> None:
    client = make_client(echo_app())
    data = client.get("/echo/a").json()
    assert data["query"] == ""
    assert data["url"] == "http://testserver/echo/a"


def test_url_https_and_port(make_client: MakeClient) -> None:
    client = make_client(echo_app(), base_url="https://example.org:8443")
    data = client.get("/echo/z").json()
    assert data["scheme"] == "https"
    assert data["netloc"] == "example.org:8443"
    assert data["url"] == "https://example.org:8443/echo/z"


def test_url_non_ascii_path_is_percent_encoded(make_client: MakeClient) -> None:
    client = make_client(echo_app())
    data = client.get("/echo/caf%C3%A9").json()
    assert data["path"] == "/echo/caf%C3%A9"
    assert data["url"] == "http://testserver/echo/caf%C3%A9"


@pytest.mark.anyio
async def test_url_from_server_when_no_host_header() -> None:
    app = echo_app()
    scope = http_scope("GET", "/echo/q", headers=[], server=("10.0.0.1", 8080))
    ex = await run_app(app, scope, body_messages())
    data = json.loads(ex.body)
    assert data["netloc"] == "10.0.0.1:8080"
    assert data["url"] == "http://10.0.0.1:8080/echo/q"


def headers_app() -> App:
    app = App()

    @app.get("/h")
    async def h(request: Request) -> dict[str, Any]:
        headers = request.headers
        return {
            "lower": headers.get("x-custom"),
            "upper": headers.get("X-CUSTOM"),
            "mixed": headers["X-Custom"],
            "contains": "X-CuStOm" in headers,
            "missing": headers.get("x-missing", "default"),
            "multi": headers.getlist("X-Multi"),
            "multi_first": headers["x-multi"],
            "raw_multi": [v for k, v in headers.multi_items() if k == "x-multi"],
        }

    return app


def test_headers_case_insensitive_and_repeated(make_client: MakeClient) -> None:
    client = make_client(headers_app())
    r = client.get("/h", headers=[("X-Custom", "v"), ("X-Multi", "1"), ("X-Multi", "2")])
    data = r.json()
    assert data["lower"] == data["upper"] == data["mixed"] == "v"
    assert data["contains"] is True
    assert data["missing"] == "default"
    assert data["multi"] == ["1", "2"]
    assert data["multi_first"] == "1"
    assert data["raw_multi"] == ["1", "2"]


@pytest.mark.anyio
async def test_duplicate_headers_kept_in_order() -> None:
    app = headers_app()
    headers = [
        (b"host", b"testserver"),
        (b"x-custom", b"c"),
        (b"x-multi", b"a"),
        (b"x-multi", b"b"),
        (b"x-multi", b"c"),
    ]
    ex = await run_app(app, http_scope("GET", "/h", headers=headers), body_messages())
    data = json.loads(ex.body)
    assert data["multi"] == ["a", "b", "c"]
    assert data["raw_multi"] == ["a", "b", "c"]


def test_query_params_multi_valued(make_client: MakeClient) -> None:
    app = App()

    @app.get("/q")
    async def q(request: Request) -> dict[str, Any]:
        params = request.query_params
        return {
            "a": params.getlist("a"),
            "a_item": params["a"],
            "blank": params.get("blank"),
            "space": params.get("space"),
            "missing": params.getlist("missing"),
            "keys": list(params),
        }

    client = make_client(app)
    data = client.get("/q?a=1&a=2&blank=&space=x+y%20z&a=3").json()
    assert data["a"] == ["1", "2", "3"]
    assert data["a_item"] == "3"  # the last value, as in Starlette
    assert data["blank"] == ""
    assert data["space"] == "x y z"
    assert data["missing"] == []
    assert data["keys"] == ["a", "blank", "space"]


def test_path_params(make_client: MakeClient) -> None:
    app = App()

    @app.get("/users/{user_id:int}/posts/{slug}")
    async def post(request: Request) -> dict[str, Any]:
        params = request.path_params
        return {"params": params, "type": type(params["user_id"]).__name__}

    client = make_client(app)
    data = client.get("/users/42/posts/hello-world").json()
    assert data == {"params": {"user_id": 42, "slug": "hello-world"}, "type": "int"}


# -- cookies ---------------------------------------------------------------------------


def cookies_app() -> App:
    app = App()

    @app.get("/c")
    async def c(request: Request) -> dict[str, str]:
        return request.cookies

    return app


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"a=1; b=2; c=three", {"a": "1", "b": "2", "c": "three"}),
        (b"a=1;b=2", {"a": "1", "b": "2"}),
        (b'q="hello world"', {"q": "hello world"}),
        (b'q="a\\"b"', {"q": 'a"b'}),
        (b'q="\\054x"', {"q": ",x"}),
        (b"eq=a=b=c", {"eq": "a=b=c"}),
        (b"  spaced  =  value  ", {"spaced": "value"}),
        (b"empty=", {"empty": ""}),
        (b'q="\\\\x"', {"q": "\\x"}),  # an escaped backslash
        (b'q="a\\zb"', {"q": "azb"}),  # any escaped character is itself
        (b'q="\\477"', {"q": "477"}),  # not an octal escape (first digit above 3)
    ],
)
async def test_cookie_parsing(header: bytes, expected: dict[str, str]) -> None:
    scope = http_scope("GET", "/c", headers=[(b"host", b"t"), (b"cookie", header)])
    ex = await run_app(cookies_app(), scope, body_messages())
    assert ex.status == 200
    cookies = json.loads(ex.body)
    for key, value in expected.items():
        assert cookies[key] == value


def test_pairs_with_empty_name_and_value_are_skipped() -> None:
    from microasgi.requests import parse_cookies

    # "=" alone is no cookie: it must not overwrite the bare value "b" kept under "".
    assert parse_cookies("  =  b  ;  ;  =  ;   c  =  ;  ") == {"": "b", "c": ""}
    assert parse_cookies("bare") == {"": "bare"}
    assert parse_cookies("") == {}


@pytest.mark.anyio
async def test_cookies_from_several_cookie_headers() -> None:
    headers = [(b"host", b"t"), (b"cookie", b"a=1; b=2"), (b"cookie", b"c=3")]
    ex = await run_app(cookies_app(), http_scope("GET", "/c", headers=headers), body_messages())
    assert json.loads(ex.body) == {"a": "1", "b": "2", "c": "3"}


@pytest.mark.anyio
async def test_malformed_cookie_pairs_skipped() -> None:
    header = b"a=1; ; ;; b=2 ;=;  ; c=3"
    scope = http_scope("GET", "/c", headers=[(b"host", b"t"), (b"cookie", header)])
    ex = await run_app(cookies_app(), scope, body_messages())
    assert ex.status == 200
    cookies = json.loads(ex.body)
    assert cookies["a"] == "1"
    assert cookies["b"] == "2"
    assert cookies["c"] == "3"
    assert not any(";" in key or " " in key for key in cookies)


def test_no_cookies(make_client: MakeClient) -> None:
    client = make_client(cookies_app())
    assert client.get("/c").json() == {}


def test_cookies_through_client(make_client: MakeClient) -> None:
    client = make_client(cookies_app())
    r = client.get("/c", headers={"Cookie": 'session=abc123; theme="dark mode"'})
    assert r.json() == {"session": "abc123", "theme": "dark mode"}


# -- client, state, app ------------------------------------------------------------------


def test_client(make_client: MakeClient) -> None:
    app = App()

    @app.get("/client")
    async def client_ep(request: Request) -> dict[str, Any]:
        return {"client": request.client}

    client = make_client(app, client=("203.0.113.7", 4321))
    assert client.get("/client").json() == {"client": ["203.0.113.7", 4321]}


@pytest.mark.anyio
async def test_client_missing_is_none() -> None:
    app = App()

    @app.get("/client")
    async def client_ep(request: Request) -> dict[str, Any]:
        return {"client": request.client}

    scope = http_scope("GET", "/client")
    del scope["client"]
    ex = await run_app(app, scope, body_messages())
    assert json.loads(ex.body) == {"client": None}


def test_state_from_lifespan_and_per_request(make_client: MakeClient) -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, Any]]:
        yield {"pool": "the-pool", "counter": 0}

    app = App(lifespan=lifespan)

    @app.get("/state")
    async def state(request: Request) -> dict[str, Any]:
        seen = {
            "pool": request.state.pool,
            "had_mark": "mark" in request.state,
            "counter": request.state.counter,
        }
        request.state.mark = True
        request.state.counter = 99
        return seen

    with make_client(app) as client:
        first = client.get("/state").json()
        second = client.get("/state").json()
    assert first == {"pool": "the-pool", "had_mark": False, "counter": 0}
    # What one request writes in its state does not leak into the next one.
    assert second == {"pool": "the-pool", "had_mark": False, "counter": 0}


def test_state_missing_attribute_raises(make_client: MakeClient) -> None:
    app = App()

    @app.get("/s")
    async def s(request: Request) -> str:
        with pytest.raises(AttributeError):
            _ = request.state.nothing_here
        return "ok"

    assert make_client(app).get("/s").text == "ok"


def test_app_property(make_client: MakeClient) -> None:
    app = App()
    seen: list[Any] = []

    @app.get("/a")
    async def a(request: Request) -> str:
        seen.append(request.app)
        return "ok"

    assert make_client(app).get("/a").status_code == 200
    assert seen == [app]
    assert seen[0] is app


# -- body, json, stream ---------------------------------------------------------------


def body_app(**app_options: Any) -> App:
    app = App(**app_options)

    @app.post("/body")
    async def body(request: Request) -> dict[str, Any]:
        first = await request.body()
        second = await request.body()
        return {"body": first.decode("latin-1"), "same": first is second, "len": len(first)}

    @app.post("/json")
    async def json_ep(request: Request) -> dict[str, Any]:
        data = await request.json()
        again = await request.json()
        return {"data": data, "same": data is again}

    @app.post("/stream")
    async def stream(request: Request) -> dict[str, Any]:
        chunks = [chunk.decode() async for chunk in request.stream()]
        return {"chunks": chunks}

    return app


def test_body(make_client: MakeClient) -> None:
    client = make_client(body_app())
    data = client.post("/body", content=b"hello world").json()
    assert data == {"body": "hello world", "same": True, "len": 11}


def test_empty_body(make_client: MakeClient) -> None:
    client = make_client(body_app())
    assert client.post("/body").json() == {"body": "", "same": True, "len": 0}


def test_json(make_client: MakeClient) -> None:
    client = make_client(body_app())
    payload = {"a": [1, 2.5, None, True], "nested": {"k": "välüe ✓"}}
    data = client.post("/json", json=payload).json()
    assert data == {"data": payload, "same": True}


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b'{"a": 1',
        b"\xff\xfe\xfd",
        b'{"a": "\xff"}',
        b"[" * 100_000,
        b"{" * 100_000,
    ],
    ids=["garbage", "empty", "truncated", "binary", "bad-utf8", "deep-list", "deep-dict"],
)
def test_invalid_json_is_400(make_client: MakeClient, content: bytes) -> None:
    client = make_client(body_app())
    r = client.post("/json", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400


@pytest.mark.anyio
async def test_stream_chunks_in_order() -> None:
    app = body_app()
    chunks = [b"one", b"two", b"", b"three", b"four"]
    ex = await run_app(app, http_scope("POST", "/stream"), body_messages(*chunks))
    assert ex.status == 200
    # Empty chunks carry nothing; the others arrive as sent, in order.
    assert json.loads(ex.body) == {"chunks": ["one", "two", "three", "four"]}


@pytest.mark.anyio
async def test_body_joins_chunks() -> None:
    app = body_app()
    ex = await run_app(app, http_scope("POST", "/body"), body_messages(b"ab", b"cd", b"ef"))
    assert json.loads(ex.body) == {"body": "abcdef", "same": True, "len": 6}


@pytest.mark.anyio
async def test_stream_after_body_yields_cached_body() -> None:
    app = App()

    @app.post("/p")
    async def p(request: Request) -> dict[str, Any]:
        body = await request.body()
        streamed = [chunk async for chunk in request.stream()]
        return {"body": body.decode(), "streamed": b"".join(streamed).decode()}

    ex = await run_app(app, http_scope("POST", "/p"), body_messages(b"x" * 3, b"y" * 3))
    assert json.loads(ex.body) == {"body": "xxxyyy", "streamed": "xxxyyy"}


@pytest.mark.anyio
async def test_stream_twice_raises_runtime_error() -> None:
    app = App()

    @app.post("/p")
    async def p(request: Request) -> str:
        async for _ in request.stream():
            pass
        with pytest.raises(RuntimeError):
            async for _ in request.stream():
                pass
        return "checked"

    ex = await run_app(app, http_scope("POST", "/p"), body_messages(b"a", b"b"))
    assert ex.body == b"checked"


def test_json_body_sync_endpoint_cannot_await_but_gets_request(make_client: MakeClient) -> None:
    app = App()

    @app.post("/sync")
    def sync(request: Request) -> dict[str, Any]:
        return {"method": request.method, "ctype": request.headers.get("content-type")}

    r = make_client(app).post("/sync", json={})
    assert r.json() == {"method": "POST", "ctype": "application/json"}


# -- is_disconnected -----------------------------------------------------------------


@pytest.mark.anyio
async def test_is_disconnected_false_while_connected_and_body_not_lost() -> None:
    app = App()

    @app.post("/p")
    async def p(request: Request) -> dict[str, Any]:
        checks = [await request.is_disconnected() for _ in range(4)]
        body = await request.body()
        after = await request.is_disconnected()
        return {"checks": checks, "body": body.decode(), "after": after}

    ex = await run_app(app, http_scope("POST", "/p"), body_messages(b"aa", b"bb", b"cc"))
    assert json.loads(ex.body) == {"checks": [False] * 4, "body": "aabbcc", "after": False}


def test_is_disconnected_then_body_through_client(make_client: MakeClient) -> None:
    app = App()

    @app.post("/p")
    async def p(request: Request) -> dict[str, Any]:
        gone = await request.is_disconnected()
        return {"gone": gone, "body": (await request.body()).decode()}

    r = make_client(app).post("/p", content=b"payload")
    assert r.json() == {"gone": False, "body": "payload"}


@pytest.mark.anyio
async def test_is_disconnected_true_after_disconnect() -> None:
    app = App()
    results: list[bool] = []

    @app.post("/p")
    async def p(request: Request) -> str:
        results.append(await request.is_disconnected())
        results.append(await request.is_disconnected())
        return "ok"

    messages = [{"type": "http.disconnect"}]
    await run_app(app, http_scope("POST", "/p"), messages)
    assert results == [True, True]


@pytest.mark.anyio
async def test_is_disconnected_after_full_body_then_disconnect() -> None:
    app = App()
    results: dict[str, Any] = {}

    @app.post("/p")
    async def p(request: Request) -> str:
        results["body"] = await request.body()
        results["gone"] = await request.is_disconnected()
        return "ok"

    messages = [*body_messages(b"abc"), {"type": "http.disconnect"}]
    await run_app(app, http_scope("POST", "/p"), messages)
    assert results == {"body": b"abc", "gone": True}


@pytest.mark.anyio
async def test_is_disconnected_does_not_block() -> None:
    app = App()
    results: list[bool] = []

    @app.post("/p")
    async def p(request: Request) -> str:
        await request.body()
        with anyio.fail_after(1):
            results.append(await request.is_disconnected())
        return "ok"

    # After the body, this receive() blocks until the response is complete.
    await run_app(app, http_scope("POST", "/p"), body_messages(b"x"))
    assert results == [False]


@pytest.mark.anyio
async def test_is_disconnected_while_streaming_does_not_lose_chunks() -> None:
    """A common pattern: check for a disconnect between chunks of request.stream()."""
    app = App()

    @app.post("/p")
    async def p(request: Request) -> dict[str, Any]:
        chunks = []
        async for chunk in request.stream():
            chunks.append(chunk.decode())
            if await request.is_disconnected():
                break
        return {"chunks": chunks}

    ex = Exchange(body_messages(b"a", b"b", b"c", b"d"))
    # A lost chunk shows as a hang (the last chunk never arrives): fail fast.
    await ex.run(app, http_scope("POST", "/p"), timeout=1)
    assert ex.status == 200
    assert json.loads(ex.body) == {"chunks": ["a", "b", "c", "d"]}


@pytest.mark.anyio
async def test_body_after_disconnect_raises_client_disconnect() -> None:
    app = App()
    raised: list[type[BaseException]] = []

    @app.post("/p")
    async def p(request: Request) -> str:
        try:
            await request.body()
        except ClientDisconnect:
            raised.append(ClientDisconnect)
            raise
        return "unreachable"

    messages = [{"type": "http.request", "body": b"part", "more_body": True}]
    messages.append({"type": "http.disconnect"})
    ex = await run_app(app, http_scope("POST", "/p"), messages)
    assert raised == [ClientDisconnect]
    assert ex.status is None  # nobody to answer: nothing sent, in particular no 500


# -- url_for ---------------------------------------------------------------------------


def url_for_app() -> App:
    app = App()

    @app.get("/users/{user_id:int}", name="user")
    async def user(request: Request, user_id: int) -> dict[str, str]:
        return {
            "self": str(request.url_for("user", user_id=user_id)),
            "other": str(request.url_for("user", user_id=7)),
            "item": str(request.url_for("api:item", item_id="abc")),
        }

    api = Router()

    @api.get("/items/{item_id}", name="item")
    async def item(request: Request, item_id: str) -> dict[str, str]:
        return {
            "item": str(request.url_for("api:item", item_id=item_id)),
            "user": str(request.url_for("user", user_id=1)),
        }

    app.mount("/api", api, name="api")
    return app


def test_url_for(make_client: MakeClient) -> None:
    client = make_client(url_for_app())
    assert client.get("/users/3").json() == {
        "self": "http://testserver/users/3",
        "other": "http://testserver/users/7",
        "item": "http://testserver/api/items/abc",
    }


def test_url_for_inside_mount(make_client: MakeClient) -> None:
    client = make_client(url_for_app())
    assert client.get("/api/items/x1").json() == {
        "item": "http://testserver/api/items/x1",
        "user": "http://testserver/users/1",
    }


def test_url_for_keeps_root_path(make_client: MakeClient) -> None:
    client = make_client(url_for_app(), root_path="/prefix")
    r = client.get("/users/3")
    assert r.status_code == 200
    assert r.json()["self"] == "http://testserver/prefix/users/3"
    assert r.json()["item"] == "http://testserver/prefix/api/items/abc"


def test_url_for_unknown_name_is_an_error(make_client: MakeClient) -> None:
    app = App()

    @app.get("/x")
    async def x(request: Request) -> str:
        with pytest.raises(LookupError):
            request.url_for("nope")
        with pytest.raises(LookupError):
            request.url_for("x", unexpected=1)
        return "ok"

    assert make_client(app).get("/x").text == "ok"


# -- body size limits --------------------------------------------------------------------


def limit_app(**app_options: Any) -> App:
    app = App(**app_options)

    @app.post("/body")
    async def body(request: Request) -> dict[str, int]:
        return {"len": len(await request.body())}

    @app.post("/json")
    async def json_ep(request: Request) -> Any:
        return await request.json()

    @app.post("/stream")
    async def stream(request: Request) -> dict[str, int]:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return {"len": total}

    @app.post("/bigger", max_body_size=100)
    async def bigger(request: Request) -> dict[str, int]:
        return {"len": len(await request.body())}

    @app.post("/smaller", max_body_size=5)
    async def smaller(request: Request) -> dict[str, int]:
        return {"len": len(await request.body())}

    @app.post("/unlimited", max_body_size=None)
    async def unlimited(request: Request) -> dict[str, int]:
        return {"len": len(await request.body())}

    return app


def test_body_within_limit(make_client: MakeClient) -> None:
    client = make_client(limit_app(max_body_size=10))
    assert client.post("/body", content=b"x" * 10).json() == {"len": 10}


@pytest.mark.parametrize("path", ["/body", "/json", "/stream"])
def test_body_over_limit_is_413(make_client: MakeClient, path: str) -> None:
    client = make_client(limit_app(max_body_size=10))
    r = client.post(path, content=b"x" * 11)
    assert r.status_code == 413


def test_body_over_limit_without_content_length(make_client: MakeClient) -> None:
    client = make_client(limit_app(max_body_size=10))

    def gen() -> Iterator[bytes]:
        yield b"12345"
        yield b"67890"
        yield b"abc"

    r = client.post("/body", content=gen())
    assert r.status_code == 413


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/body", "/stream", "/json"])
async def test_content_length_over_limit_refused_before_reading(path: str) -> None:
    app = limit_app(max_body_size=10)
    headers = [(b"host", b"t"), (b"content-length", b"1000")]
    ex = Exchange(body_messages(b"x" * 1000))
    await ex.run(app, http_scope("POST", path, headers=headers))
    assert ex.status == 413
    assert ex.receive_calls == 0


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/body", "/stream"])
async def test_chunked_body_over_limit_without_content_length(path: str) -> None:
    app = limit_app(max_body_size=10)
    ex = Exchange(body_messages(*([b"abcd"] * 10)))
    await ex.run(app, http_scope("POST", path))
    assert ex.status == 413
    # The app stops reading soon after the limit: it did not take all ten chunks.
    assert ex.receive_calls <= 4


@pytest.mark.anyio
async def test_chunked_body_exactly_at_limit() -> None:
    app = limit_app(max_body_size=12)
    ex = await run_app(app, http_scope("POST", "/body"), body_messages(b"abcd", b"efgh", b"ijkl"))
    assert ex.status == 200
    assert json.loads(ex.body) == {"len": 12}


@pytest.mark.anyio
async def test_default_limit_is_10_mib_by_content_length() -> None:
    app = limit_app()
    assert app.max_body_size == 10 * 1024 * 1024
    over = str(10 * 1024 * 1024 + 1).encode()
    ex = Exchange(body_messages(b"x"))
    await ex.run(app, http_scope("POST", "/body", headers=[(b"content-length", over)]))
    assert ex.status == 413
    assert ex.receive_calls == 0


@pytest.mark.anyio
async def test_default_limit_allows_exactly_10_mib_and_refuses_more() -> None:
    app = limit_app()
    mib = b"x" * (1024 * 1024)
    ex = await run_app(app, http_scope("POST", "/body"), body_messages(*([mib] * 10)))
    assert ex.status == 200
    assert json.loads(ex.body) == {"len": 10 * 1024 * 1024}
    ex = await run_app(app, http_scope("POST", "/body"), body_messages(*([mib] * 10), b"!"))
    assert ex.status == 413


def test_route_limit_overrides_app_limit(make_client: MakeClient) -> None:
    client = make_client(limit_app(max_body_size=10))
    assert client.post("/bigger", content=b"x" * 50).json() == {"len": 50}
    assert client.post("/bigger", content=b"x" * 101).status_code == 413
    assert client.post("/smaller", content=b"x" * 5).json() == {"len": 5}
    assert client.post("/smaller", content=b"x" * 6).status_code == 413


def test_route_limit_none_means_unlimited(make_client: MakeClient) -> None:
    client = make_client(limit_app(max_body_size=10))
    assert client.post("/unlimited", content=b"x" * 100_000).json() == {"len": 100_000}


def test_app_limit_none_means_unlimited(make_client: MakeClient) -> None:
    client = make_client(limit_app(max_body_size=None))
    size = 11 * 1024 * 1024
    assert client.post("/body", content=b"x" * size).json() == {"len": size}
    # A route limit still applies under an unlimited app.
    assert client.post("/smaller", content=b"x" * 6).status_code == 413


def test_over_limit_json_is_413_not_400(make_client: MakeClient) -> None:
    client = make_client(limit_app(max_body_size=10))
    r = client.post("/json", json={"key": "a long enough value"})
    assert r.status_code == 413


def test_http_exception_413_can_be_handled(make_client: MakeClient) -> None:
    app = limit_app(max_body_size=3)

    @app.exception_handler(413)
    async def too_big(request: Request, exc: HTTPException) -> dict[str, Any]:
        return {"error": "too big", "status": exc.status_code}

    r = make_client(app).post("/body", content=b"abcd")
    assert r.json() == {"error": "too big", "status": 413}


def test_no_error_logged_for_client_errors(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(limit_app(max_body_size=10))
    with caplog.at_level(logging.DEBUG, logger="microasgi"):
        assert client.post("/body", content=b"x" * 11).status_code == 413
        assert client.post("/json", content=b"{").status_code == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
