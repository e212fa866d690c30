"""Responses: bodies and headers, JSON, redirects, streaming, HEAD, cookies, background tasks."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from microasgi import (
    App,
    BackgroundTask,
    BackgroundTasks,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Request,
    Response,
    StreamingResponse,
)
from microasgi.types import Message
from tests.helpers import Exchange, MakeClient, http_scope

# -- driving a response directly ------------------------------------------------------


async def send_response(response: Any, method: str = "GET") -> Exchange:
    return await Exchange().run(response, http_scope(method))


# -- Response --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_bytes_content() -> None:
    ex = await send_response(Response(b"hello", media_type="application/octet-stream"))
    assert ex.status == 200
    assert ex.body == b"hello"
    assert ex.header(b"content-length") == b"5"
    assert ex.header(b"content-type") == b"application/octet-stream"


@pytest.mark.anyio
async def test_no_media_type_means_no_content_type() -> None:
    ex = await send_response(Response(b"raw"))
    assert ex.header(b"content-type") is None
    assert ex.header(b"content-length") == b"3"


@pytest.mark.anyio
async def test_str_content_encoded_with_charset() -> None:
    ex = await send_response(Response("héllo ✓", media_type="text/plain"))
    assert ex.body == "héllo ✓".encode()
    assert ex.header(b"content-type") == b"text/plain; charset=utf-8"
    assert ex.header(b"content-length") == str(len("héllo ✓".encode())).encode()


@pytest.mark.anyio
async def test_none_content_is_empty() -> None:
    ex = await send_response(Response(None))
    assert ex.status == 200
    assert ex.body == b""
    assert ex.header(b"content-length") == b"0"


@pytest.mark.anyio
async def test_non_text_media_type_gets_no_charset() -> None:
    ex = await send_response(Response("<a/>", media_type="application/xml"))
    assert ex.header(b"content-type") == b"application/xml"


@pytest.mark.anyio
async def test_media_type_with_charset_kept() -> None:
    ex = await send_response(Response("x", media_type="text/csv; charset=iso-8859-1"))
    assert ex.header(b"content-type") == b"text/csv; charset=iso-8859-1"


@pytest.mark.anyio
async def test_custom_charset() -> None:
    class Latin1Text(PlainTextResponse):
        charset = "latin-1"

    ex = await send_response(Latin1Text("café"))
    assert ex.body == b"caf\xe9"
    assert ex.header(b"content-type") == b"text/plain; charset=latin-1"
    assert ex.header(b"content-length") == b"4"


@pytest.mark.anyio
async def test_custom_headers_and_status() -> None:
    response = Response(
        b"created",
        status_code=201,
        headers={"X-Thing": "1", "Cache-Control": "no-store"},
        media_type="text/plain",
    )
    ex = await send_response(response)
    assert ex.status == 201
    assert ex.header(b"x-thing") == b"1"
    assert ex.header(b"cache-control") == b"no-store"
    assert ex.header(b"content-length") == b"7"
    assert ex.header(b"content-type") == b"text/plain; charset=utf-8"


@pytest.mark.anyio
async def test_explicit_content_type_header_wins_over_media_type() -> None:
    response = Response(b"{}", headers={"Content-Type": "application/vnd.x+json"})
    ex = await send_response(response)
    assert ex.header(b"content-type") == b"application/vnd.x+json"


def test_content_of_another_type_is_type_error() -> None:
    with pytest.raises(TypeError):
        Response(12345)  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.parametrize("headers", [None, {"X-A": "b"}])
async def test_no_body_statuses(status: int, headers: dict[str, str] | None) -> None:
    response = Response(
        b"ignored content", status_code=status, headers=headers, media_type="text/plain"
    )
    ex = await send_response(response)
    assert ex.status == status
    assert ex.body == b""
    assert ex.header(b"content-length") is None
    if headers:
        assert ex.header(b"x-a") == b"b"


def test_none_return_is_204_without_content_length(make_client: MakeClient) -> None:
    app = App()

    @app.delete("/thing")
    async def delete() -> None:
        return None

    r = make_client(app).delete("/thing")
    assert r.status_code == 204
    assert r.content == b""
    assert "content-length" not in r.headers


def test_headers_property_edits_response(make_client: MakeClient) -> None:
    app = App()

    @app.get("/h")
    async def h() -> Response:
        response = PlainTextResponse("x")
        response.headers["X-Added"] = "yes"
        response.headers.append("X-Multi", "1")
        response.headers.append("X-Multi", "2")
        return response

    r = make_client(app).get("/h")
    assert r.headers["x-added"] == "yes"
    assert r.headers.get_list("x-multi") == ["1", "2"]
    assert r.text == "x"


# -- JSON, HTML, plain text ---------------------------------------------------------------


@pytest.mark.anyio
async def test_json_response_compact_utf8() -> None:
    ex = await send_response(JSONResponse({"a": [1, 2], "b": "é✓", "c": None, "d": True}))
    assert ex.body == '{"a":[1,2],"b":"é✓","c":null,"d":true}'.encode()
    assert ex.header(b"content-type") == b"application/json"
    assert ex.header(b"content-length") == str(len(ex.body)).encode()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, b"null"),
        ("text", b'"text"'),
        ("ü", '"ü"'.encode()),
        ([], b"[]"),
        (1.5, b"1.5"),
        ({"k": {"n": [1, {"x": "y"}]}}, b'{"k":{"n":[1,{"x":"y"}]}}'),
        ({1: "int key"}, b'{"1":"int key"}'),
    ],
)
async def test_json_response_values(content: Any, expected: bytes) -> None:
    ex = await send_response(JSONResponse(content))
    assert ex.body == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_json_response_refuses_nan(value: float) -> None:
    with pytest.raises(ValueError):
        JSONResponse({"x": value})
    with pytest.raises(ValueError):
        JSONResponse([value])


def test_json_response_refuses_unserialisable() -> None:
    with pytest.raises(TypeError):
        JSONResponse({"x": object()})


def test_json_response_status_and_headers(make_client: MakeClient) -> None:
    app = App()

    @app.post("/made")
    async def made() -> JSONResponse:
        return JSONResponse({"id": 1}, status_code=201, headers={"Location": "/made/1"})

    r = make_client(app).post("/made")
    assert r.status_code == 201
    assert r.headers["location"] == "/made/1"
    assert r.json() == {"id": 1}


def test_dict_return_same_as_json_response(make_client: MakeClient) -> None:
    app = App()

    @app.get("/d")
    async def d() -> dict[str, Any]:
        return {"name": "Zoë", "n": [1, 2]}

    r = make_client(app).get("/d")
    assert r.content == '{"name":"Zoë","n":[1,2]}'.encode()
    assert r.headers["content-type"] == "application/json"


@pytest.mark.anyio
async def test_html_response() -> None:
    ex = await send_response(HTMLResponse("<h1>Hé</h1>"))
    assert ex.body == "<h1>Hé</h1>".encode()
    assert ex.header(b"content-type") == b"text/html; charset=utf-8"


@pytest.mark.anyio
async def test_plain_text_response() -> None:
    ex = await send_response(PlainTextResponse("plain", status_code=418))
    assert ex.status == 418
    assert ex.body == b"plain"
    assert ex.header(b"content-type") == b"text/plain; charset=utf-8"


# -- redirects -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_redirect_default_307() -> None:
    ex = await send_response(RedirectResponse("/elsewhere?x=1"))
    assert ex.status == 307
    assert ex.header(b"location") == b"/elsewhere?x=1"
    assert ex.body == b""


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 302, 303, 308])
async def test_redirect_custom_status(status: int) -> None:
    ex = await send_response(RedirectResponse("https://example.com/a", status_code=status))
    assert ex.status == status
    assert ex.header(b"location") == b"https://example.com/a"


@pytest.mark.anyio
async def test_redirect_quotes_non_ascii() -> None:
    ex = await send_response(RedirectResponse("/café/ü?q=ö"))
    assert ex.header(b"location") == b"/caf%C3%A9/%C3%BC?q=%C3%B6"


@pytest.mark.anyio
async def test_redirect_keeps_existing_escapes_and_reserved() -> None:
    url = "https://user@example.com:8080/a%20b/c;p?x=1&y=a%2Fb#frag"
    ex = await send_response(RedirectResponse(url))
    assert ex.header(b"location") == url.encode()


@pytest.mark.anyio
async def test_redirect_cannot_inject_headers() -> None:
    ex = await send_response(RedirectResponse("/a\r\nSet-Cookie: evil=1"))
    location = ex.header(b"location")
    assert location is not None
    assert b"\r" not in location and b"\n" not in location
    assert all(k != b"set-cookie" for k, _ in ex.headers)


def test_redirect_through_client(make_client: MakeClient) -> None:
    app = App()

    @app.get("/old")
    async def old() -> RedirectResponse:
        return RedirectResponse("/new", status_code=301)

    @app.get("/new")
    async def new() -> str:
        return "new place"

    client = make_client(app)
    r = client.get("/old", follow_redirects=False)
    assert r.status_code == 301
    assert r.headers["location"] == "/new"
    r = client.get("/old")
    assert r.text == "new place"


# -- streaming -------------------------------------------------------------------------


def test_streaming_async_generator(make_client: MakeClient) -> None:
    app = App()

    @app.get("/s")
    async def s() -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"chunk{i};".encode()
                await anyio.lowlevel.checkpoint()

        return StreamingResponse(gen(), media_type="text/plain")

    r = make_client(app).get("/s")
    assert r.status_code == 200
    assert r.text == "chunk0;chunk1;chunk2;"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert "content-length" not in r.headers


@pytest.mark.anyio
async def test_streaming_chunks_sent_separately() -> None:
    async def gen() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"
        yield b"c"

    ex = await send_response(StreamingResponse(gen()))
    bodies = [m for m in ex.sent if m["type"] == "http.response.body"]
    assert [m["body"] for m in bodies if m["body"]] == [b"a", b"b", b"c"]
    assert bodies[-1].get("more_body", False) is False
    assert all(m.get("more_body") for m in bodies[:-1])


@pytest.mark.anyio
async def test_streaming_sync_generator_runs_in_worker_thread() -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def gen() -> Iterator[str]:
        for word in ("sync ", "chunks ", "é"):
            threads.append(threading.get_ident())
            yield word

    ex = await send_response(StreamingResponse(gen()))
    assert ex.body == "sync chunks é".encode()
    assert threads
    assert loop_thread not in threads


@pytest.mark.anyio
async def test_streaming_sync_iterable_and_str_chunks() -> None:
    ex = await send_response(StreamingResponse(["ä", b"-", "ß"], media_type="text/plain"))
    assert ex.body == "ä-ß".encode()
    assert ex.header(b"content-type") == b"text/plain; charset=utf-8"


@pytest.mark.anyio
async def test_streaming_async_iterable_class() -> None:
    class Numbers:
        def __aiter__(self) -> AsyncIterator[str]:
            return self.gen()

        async def gen(self) -> AsyncIterator[str]:
            for i in range(3):
                yield str(i)

    ex = await send_response(StreamingResponse(Numbers()))
    assert ex.body == b"012"


@pytest.mark.anyio
async def test_streaming_status_and_headers() -> None:
    response = StreamingResponse(iter([b"x"]), status_code=206, headers={"X-S": "1"})
    ex = await send_response(response)
    assert ex.status == 206
    assert ex.header(b"x-s") == b"1"
    assert ex.header(b"content-length") is None


# -- HEAD --------------------------------------------------------------------------------


def head_app() -> App:
    app = App()

    @app.get("/text")
    async def text() -> str:
        return "some text"

    @app.get("/json")
    async def json_ep() -> dict[str, int]:
        return {"a": 1}

    @app.get("/response")
    async def response() -> Response:
        return HTMLResponse("<p>hi</p>")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            yield b"streamed"

        return StreamingResponse(gen())

    return app


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "length"), [("/text", b"9"), ("/json", b"7"), ("/response", b"9"), ("/stream", None)]
)
async def test_head_sends_no_body(path: str, length: bytes | None) -> None:
    ex = await Exchange().run(head_app(), http_scope("HEAD", path))
    assert ex.status == 200
    assert ex.body == b""
    # HEAD announces the length a GET would have.
    assert ex.header(b"content-length") == length
    get = await Exchange().run(head_app(), http_scope("GET", path))
    assert get.body != b""


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["plain", "streaming"])
async def test_head_runs_background_tasks(kind: str) -> None:
    """A HEAD response is complete once its headers and empty body are sent."""
    events: list[str] = []

    async def gen() -> AsyncIterator[bytes]:
        yield b"body"

    task = BackgroundTask(events.append, "task")
    if kind == "plain":
        response: Response = Response(b"body", background=task)
    else:
        response = StreamingResponse(gen(), background=task)
    await Exchange(events=events).run(response, http_scope("HEAD"))
    assert events == ["start", "body-end", "task"]


def test_head_through_client(make_client: MakeClient) -> None:
    r = make_client(head_app()).head("/text")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == "9"


# -- cookies ---------------------------------------------------------------------------


def cookie_header(response: Response) -> list[str]:
    return [v.decode("latin-1") for k, v in response.raw_headers if k == b"set-cookie"]


def test_set_cookie_defaults() -> None:
    response = Response()
    response.set_cookie("name", "value")
    (header,) = cookie_header(response)
    parts = [p.strip() for p in header.split(";")]
    assert parts[0] == "name=value"
    assert "Path=/" in parts
    assert "SameSite=lax" in parts or "SameSite=Lax" in parts
    lowered = header.lower()
    assert "secure" not in lowered
    assert "httponly" not in lowered
    assert "max-age" not in lowered
    assert "expires" not in lowered


def test_set_cookie_all_options() -> None:
    response = Response()
    when = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    response.set_cookie(
        "sid",
        "abc",
        max_age=3600,
        expires=when,
        path="/app",
        domain="example.com",
        secure=True,
        httponly=True,
        samesite="strict",
    )
    (header,) = cookie_header(response)
    parts = {p.strip().split("=", 1)[0].lower(): p.strip() for p in header.split(";")}
    assert parts["sid"] == "sid=abc"
    assert parts["max-age"] == "Max-Age=3600"
    assert parts["expires"].split("=", 1)[1] == "Tue, 06 May 2031 07:08:09 GMT"
    assert parts["path"] == "Path=/app"
    assert parts["domain"] == "Domain=example.com"
    assert "secure" in parts
    assert "httponly" in parts
    assert parts["samesite"].lower() == "samesite=strict"


def test_set_cookie_expires_int_is_seconds_from_now() -> None:
    response = Response()
    response.set_cookie("a", "b", expires=120)
    (header,) = cookie_header(response)
    expires = next(p for p in header.split(";") if p.strip().lower().startswith("expires="))
    moment = parsedate_to_datetime(expires.split("=", 1)[1])
    delta = moment - datetime.now(UTC)
    assert timedelta(seconds=100) < delta < timedelta(seconds=140)


def test_set_cookie_expires_str_kept() -> None:
    response = Response()
    response.set_cookie("a", "b", expires="Wed, 21 Oct 2037 07:28:00 GMT")
    (header,) = cookie_header(response)
    assert "expires=Wed, 21 Oct 2037 07:28:00 GMT" in header


@pytest.mark.parametrize("samesite", ["none", "lax", "strict", "Lax"])
def test_set_cookie_samesite_values(samesite: str) -> None:
    response = Response()
    response.set_cookie("a", "b", samesite=samesite, secure=True)  # type: ignore[arg-type]
    (header,) = cookie_header(response)
    assert f"samesite={samesite.lower()}" in header.lower()


def test_set_cookie_samesite_none_omits_attribute() -> None:
    response = Response()
    response.set_cookie("a", "b", samesite=None, path=None)
    (header,) = cookie_header(response)
    assert "samesite" not in header.lower()
    assert "path" not in header.lower()


@pytest.mark.parametrize("samesite", ["bogus", "", "strict; HttpOnly"])
def test_set_cookie_invalid_samesite(samesite: str) -> None:
    response = Response()
    with pytest.raises(ValueError):
        response.set_cookie("a", "b", samesite=samesite)  # type: ignore[arg-type]
    assert cookie_header(response) == []


def test_set_cookie_value_with_special_characters_is_quoted() -> None:
    response = Response()
    response.set_cookie("a", "hello world; x=y")
    (header,) = cookie_header(response)
    assert header.startswith('a="hello world\\073 x=y"')


def test_delete_cookie() -> None:
    response = Response()
    response.delete_cookie("sid", path="/app", domain="example.com")
    (header,) = cookie_header(response)
    lowered = header.lower()
    assert header.startswith("sid=")
    assert header.split(";")[0] in ("sid=", 'sid=""')
    assert "max-age=0" in lowered
    assert "expires=thu, 01 jan 1970 00:00:00 gmt" in lowered
    assert "path=/app" in lowered
    assert "domain=example.com" in lowered


def test_several_cookies_through_client(make_client: MakeClient) -> None:
    app = App()

    @app.get("/login")
    async def login() -> Response:
        response = PlainTextResponse("hi")
        response.set_cookie("a", "1")
        response.set_cookie("b", "2", httponly=True)
        response.delete_cookie("old")
        return response

    r = make_client(app).get("/login")
    values = r.headers.get_list("set-cookie")
    assert len(values) == 3
    assert values[0].startswith("a=1")
    assert values[1].startswith("b=2")
    assert "httponly" in values[1].lower()
    assert values[2].startswith("old=")
    assert r.cookies["a"] == "1"


# -- header injection ------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "a\r\nSet-Cookie: evil=1"},
        {"X-A": "a\nb"},
        {"X-A": "a\rb"},
        {"X-A\r\nEvil": "x"},
    ],
)
def test_header_values_with_crlf_rejected(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Response(b"x", headers=headers)
    with pytest.raises(ValueError):
        StreamingResponse(iter([b"x"]), headers=headers)
    with pytest.raises(ValueError):
        Response(status_code=204, headers=headers)


def test_mutable_headers_reject_crlf() -> None:
    response = Response(b"x")
    with pytest.raises(ValueError):
        response.headers["X-A"] = "a\r\nb"
    with pytest.raises(ValueError):
        response.headers.append("X-A", "a\nb")
    assert all(k != b"x-a" for k, _ in response.raw_headers)


@pytest.mark.parametrize("option", ["path", "domain"])
def test_cookie_attributes_with_crlf_rejected(option: str) -> None:
    response = Response()
    with pytest.raises(ValueError):
        response.set_cookie("a", "b", **{option: "/x\r\nSet-Cookie: evil=1"})


def test_cookie_value_with_crlf_cannot_inject() -> None:
    response = Response()
    try:
        response.set_cookie("a", "x\r\nSet-Cookie: evil=1")
    except ValueError:
        return
    for _, value in response.raw_headers:
        assert b"\r" not in value and b"\n" not in value


@pytest.mark.parametrize("media_type", ["text/html\r\nSet-Cookie: evil=1", "text/plain\nX: y"])
def test_media_type_with_crlf_rejected(media_type: str) -> None:
    with pytest.raises(ValueError):
        Response(b"x", media_type=media_type)
    with pytest.raises(ValueError):
        Response(b"x", media_type=media_type, headers={"X-Other": "1"})


# -- background tasks ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_background_task_runs_after_body_sent() -> None:
    events: list[str] = []

    async def task(label: str, *, suffix: str) -> None:
        events.append(f"task:{label}{suffix}")

    response = Response(b"x", background=BackgroundTask(task, "one", suffix="!"))
    await Exchange(events=events).run(response)
    assert events == ["start", "body-end", "task:one!"]


@pytest.mark.anyio
async def test_sync_background_task_runs_in_thread_after_body() -> None:
    events: list[str] = []
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def task(value: int) -> None:
        threads.append(threading.get_ident())
        events.append(f"sync:{value}")

    response = PlainTextResponse("x", background=BackgroundTask(task, 5))
    await Exchange(events=events).run(response)
    assert events == ["start", "body-end", "sync:5"]
    assert threads and threads[0] != loop_thread


@pytest.mark.anyio
async def test_background_task_async_callable_object() -> None:
    events: list[str] = []

    class Job:
        async def __call__(self, x: int) -> None:
            events.append(f"job:{x}")

    response = Response(b"x", background=BackgroundTask(Job(), 3))
    await Exchange(events=events).run(response)
    assert events == ["start", "body-end", "job:3"]


@pytest.mark.anyio
async def test_background_tasks_in_order_and_failure_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []

    async def first() -> None:
        events.append("first")

    def failing() -> None:
        events.append("failing")
        raise RuntimeError("boom in task")

    async def failing_async() -> None:
        events.append("failing_async")
        raise KeyError("async boom")

    def last(x: str) -> None:
        events.append(f"last:{x}")

    tasks = BackgroundTasks()
    tasks.add_task(first)
    tasks.add_task(failing)
    tasks.add_task(failing_async)
    tasks.add_task(last, x="done")
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        await Exchange(events=events).run(Response(b"x", background=tasks))
    assert events == ["start", "body-end", "first", "failing", "failing_async", "last:done"]
    errors = [r for r in caplog.records if r.name == "microasgi" and r.levelno >= logging.ERROR]
    assert len(errors) == 2
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is RuntimeError
    assert errors[1].exc_info is not None and errors[1].exc_info[0] is KeyError


def test_background_tasks_injected_into_endpoint(make_client: MakeClient) -> None:
    app = App()
    events: list[str] = []

    @app.post("/signup")
    async def signup(request: Request, tasks: BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(events.append, "email sent")
        events.append("handler")
        return {"ok": True}

    r = make_client(app).post("/signup")
    assert r.json() == {"ok": True}
    assert events == ["handler", "email sent"]


def test_injected_and_response_background_both_run(make_client: MakeClient) -> None:
    app = App()
    events: list[str] = []

    @app.get("/both")
    def both(tasks: BackgroundTasks) -> Response:
        tasks.add_task(events.append, "injected")
        return Response(b"x", background=BackgroundTask(events.append, "own"))

    assert make_client(app).get("/both").status_code == 200
    assert sorted(events) == ["injected", "own"]


@pytest.mark.anyio
async def test_streaming_background_after_last_chunk() -> None:
    events: list[str] = []

    async def gen() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    async def task() -> None:
        events.append("task")

    response = StreamingResponse(gen(), background=BackgroundTask(task))
    await Exchange(events=events).run(response)
    assert events == ["start", "body", "body", "body-end", "task"]


# -- streaming and the client going away ---------------------------------------------------


class DisconnectAfterFirstChunk(Exchange):
    """The client disconnects as soon as the first body chunk has been sent."""

    async def send(self, message: Message) -> None:
        await super().send(message)
        if message["type"] == "http.response.body" and message.get("body"):
            self.done.set()


@pytest.mark.anyio
async def test_disconnect_stops_async_generator(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    produced: list[int] = []

    async def gen() -> AsyncIterator[bytes]:
        try:
            i = 0
            while True:
                produced.append(i)
                yield f"{i};".encode()
                i += 1
                await anyio.sleep(0.01)
        finally:
            events.append("finally")

    async def task() -> None:
        events.append("task")

    response = StreamingResponse(gen(), background=BackgroundTask(task))
    with caplog.at_level(logging.DEBUG, logger="microasgi"):
        ex = await DisconnectAfterFirstChunk(events=events).run(response)
    assert "finally" in events
    assert "task" not in events
    assert len(produced) < 20
    assert ex.status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.anyio
async def test_disconnect_stops_sync_generator(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    produced: list[int] = []
    closed = threading.Event()

    def gen() -> Iterator[bytes]:
        try:
            i = 0
            while i < 10_000:
                produced.append(i)
                yield f"{i};".encode()
                i += 1
                threading.Event().wait(0.005)
        finally:
            closed.set()

    def task() -> None:
        events.append("task")

    response = StreamingResponse(gen(), background=BackgroundTask(task))
    with caplog.at_level(logging.DEBUG, logger="microasgi"):
        await DisconnectAfterFirstChunk(events=events).run(response)
    assert closed.is_set()
    assert "task" not in events
    assert len(produced) < 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.anyio
async def test_disconnect_through_app_stops_stream(caplog: pytest.LogCaptureFixture) -> None:
    app = App()
    events: list[str] = []

    @app.get("/feed")
    async def feed(tasks: BackgroundTasks) -> StreamingResponse:
        async def gen() -> AsyncIterator[str]:
            try:
                while True:
                    yield "tick\n"
                    await anyio.sleep(0.01)
            finally:
                events.append("finally")

        tasks.add_task(events.append, "task")
        return StreamingResponse(gen(), media_type="text/plain")

    with caplog.at_level(logging.DEBUG, logger="microasgi"):
        await DisconnectAfterFirstChunk(events=events).run(app, http_scope("GET", "/feed"))
    assert "finally" in events
    assert "task" not in events
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class RaisingSend(Exchange):
    """An ASGI 2.4 server: send() raises OSError once the client has gone."""

    def __init__(self, fail_on: int, events: list[str] | None = None) -> None:
        super().__init__(events=events)
        self.fail_on = fail_on  # the index of the message whose send raises

    async def send(self, message: Message) -> None:
        if len(self.sent) >= self.fail_on:
            self.events.append("send-failed")
            raise OSError("client went away")
        await super().send(message)


@pytest.mark.anyio
@pytest.mark.parametrize("fail_on", [0, 1, 2], ids=["on-start", "first-chunk", "second-chunk"])
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_send_oserror_stops_stream_cleanly(
    fail_on: int, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []

    async def agen() -> AsyncIterator[bytes]:
        try:
            for i in range(100):
                yield f"{i}".encode()
                await anyio.lowlevel.checkpoint()
        finally:
            events.append("finally")

    def sgen() -> Iterator[bytes]:
        try:
            for i in range(100):
                yield f"{i}".encode()
        finally:
            events.append("finally")

    async def task() -> None:
        events.append("task")

    content = agen() if kind == "async" else sgen()
    response = StreamingResponse(content, background=BackgroundTask(task))
    app = App()

    @app.get("/s")
    async def s() -> StreamingResponse:
        return response

    with caplog.at_level(logging.DEBUG, logger="microasgi"):
        await RaisingSend(fail_on, events).run(app, http_scope("GET", "/s"))
    assert events.count("send-failed") == 1
    assert "task" not in events
    if fail_on > 0:
        assert "finally" in events
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_text_is_encoded_in_the_charset_the_media_type_names() -> None:
    response = Response("é", media_type="text/csv; charset=latin-1")
    assert response.body == b"\xe9"
    assert response.headers["content-type"] == "text/csv; charset=latin-1"
    assert PlainTextResponse("é").body == "é".encode()


def test_streaming_text_chunks_use_the_charset_the_media_type_names(
    make_client: MakeClient,
) -> None:
    app = App()

    @app.get("/csv")
    async def csv() -> StreamingResponse:
        async def rows() -> AsyncIterator[str]:
            yield "é,ü\n"

        return StreamingResponse(rows(), media_type="text/csv; Charset=Latin-1")

    assert make_client(app).get("/csv").content == "é,ü\n".encode("latin-1")


@pytest.mark.anyio
async def test_client_gone_during_a_plain_response_is_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ASGI 2.4 servers raise OSError from send() once the client has gone."""
    app = App()

    @app.get("/")
    async def index() -> dict[str, int]:
        return {"a": 1}

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        raise OSError("client disconnected")

    with caplog.at_level(logging.DEBUG, logger="microasgi"):
        await app(http_scope("GET", "/"), receive, send)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("went away" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_mid_stream_error_is_logged_as_itself_not_as_a_group(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()

    @app.get("/s")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            raise KeyError("broken generator")

        return StreamingResponse(chunks())

    exchange = Exchange()
    with caplog.at_level(logging.ERROR, logger="microasgi"):
        await exchange.run(app, http_scope("GET", "/s"))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is KeyError
    starts = [m for m in exchange.sent if m["type"] == "http.response.start"]
    assert len(starts) == 1


@pytest.mark.parametrize(
    "value",
    [{"a": [1, "é", None]}, [], [{"x": 1.5}], "", "text ✓", "x" * 10_000],
    ids=["dict", "empty list", "list", "empty str", "str", "long str"],
)
def test_to_response_builds_what_the_constructor_builds(value: Any) -> None:
    from microasgi.responses import JSONResponse, PlainTextResponse
    from microasgi.responses._base import to_response

    made = to_response(value, None)
    expected = (JSONResponse if isinstance(value, (dict, list)) else PlainTextResponse)(value)
    assert type(made) is type(expected)
    for attribute in ("status_code", "body", "raw_headers", "background", "media_type", "charset"):
        assert getattr(made, attribute) == getattr(expected, attribute), attribute
    made.headers["x-added"] = "1"  # an editable response like any other
    assert made.raw_headers[-1] == (b"x-added", b"1")


def test_an_oserror_of_the_body_iterator_is_an_error_not_a_disconnect(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from microasgi import App, StreamingResponse

    app = App()

    @app.get("/proxy")
    async def proxy() -> StreamingResponse:
        async def upstream() -> AsyncIterator[bytes]:
            yield b"first"
            raise ConnectionResetError("upstream reset the connection")

        return StreamingResponse(upstream())

    client = make_client(app, raise_server_exceptions=False)
    with caplog.at_level(logging.DEBUG, logger="microasgi"), client.stream("GET", "/proxy") as r:
        assert r.status_code == 200
        with pytest.raises(Exception):  # noqa: B017 - an incomplete body, whatever httpx calls it
            r.read()
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors, [record.getMessage() for record in caplog.records]
    assert isinstance(errors[0].exc_info[1], ConnectionResetError)  # as itself, at ERROR
    assert "upstream reset the connection" in str(errors[0].exc_info[1])
