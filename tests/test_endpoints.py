"""Endpoints: threads, return-value conversion and signature binding."""

from __future__ import annotations

import collections
import functools
import json
import logging
import threading
import time
from typing import Any

import anyio
import pytest

from microasgi import (
    App,
    BackgroundTask,
    BackgroundTasks,
    JSONResponse,
    PlainTextResponse,
    Request,
    Response,
    Router,
    WebSocket,
)
from microasgi.requests import HTTPConnection
from microasgi.testclient import AsyncTestClient
from tests.helpers import http_scope, run_app

# -- threads --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_plain_def_runs_in_worker_thread_async_def_does_not() -> None:
    loop_thread = threading.current_thread()
    seen: dict[str, threading.Thread] = {}
    app = App()

    @app.get("/sync")
    def sync_endpoint(request: Request) -> str:
        seen["sync"] = threading.current_thread()
        return "sync"

    @app.get("/sync-params/{x:int}")
    def sync_params(x: int) -> Any:
        seen["sync_params"] = threading.current_thread()
        return {"x": x}

    @app.get("/async")
    async def async_endpoint(request: Request) -> str:
        seen["async"] = threading.current_thread()
        return "async"

    @app.get("/async-params/{x:int}")
    async def async_params(x: int) -> Any:
        seen["async_params"] = threading.current_thread()
        return {"x": x}

    async with AsyncTestClient(app) as client:
        assert (await client.get("/sync")).text == "sync"
        assert (await client.get("/sync-params/3")).json() == {"x": 3}
        assert (await client.get("/async")).text == "async"
        assert (await client.get("/async-params/4")).json() == {"x": 4}

    assert seen["sync"] is not loop_thread
    assert seen["sync_params"] is not loop_thread
    assert seen["async"] is loop_thread
    assert seen["async_params"] is loop_thread


@pytest.mark.anyio
async def test_sync_endpoint_does_not_block_the_loop() -> None:
    """Two blocking endpoints wait for each other: only possible if they run in threads."""
    barrier = threading.Barrier(2, timeout=5)
    app = App()

    @app.get("/wait")
    def wait() -> str:
        barrier.wait()
        return "ok"

    async with AsyncTestClient(app) as client:
        results: list[int] = []

        async def one() -> None:
            results.append((await client.get("/wait")).status_code)

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
    assert results == [200, 200]


@pytest.mark.anyio
async def test_async_callable_object_and_partial_are_awaited_on_the_loop() -> None:
    loop_thread = threading.current_thread()
    seen: list[threading.Thread] = []

    class Handler:
        async def __call__(self, request: Request) -> str:
            seen.append(threading.current_thread())
            return "object"

    async def with_extra(request: Request, extra: str) -> str:
        seen.append(threading.current_thread())
        return extra

    app = App()
    app.router.add_route("/object", Handler())
    app.router.add_route("/partial", functools.partial(with_extra, extra="partial"))
    async with AsyncTestClient(app) as client:
        assert (await client.get("/object")).text == "object"
        assert (await client.get("/partial")).text == "partial"
    assert seen == [loop_thread, loop_thread]


# -- return values --------------------------------------------------------------------


def returning(value: Any, *, sync: bool = False) -> App:
    app = App()
    if sync:

        @app.get("/")
        def sync_endpoint() -> Any:
            return value

    else:

        @app.get("/")
        async def endpoint() -> Any:
            return value

    return app


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
def test_response_returned_as_is(make_client: Any, sync: bool) -> None:
    response = Response(b"<x/>", status_code=201, headers={"x-a": "1"}, media_type="text/xml")
    r = make_client(returning(response, sync=sync)).get("/")
    assert r.status_code == 201
    assert r.content == b"<x/>"
    assert r.headers["x-a"] == "1"
    assert r.headers["content-type"] == "text/xml; charset=utf-8"


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize(
    "value",
    [{"a": 1, "b": [1, 2]}, [1, "two", None], {}, [], collections.OrderedDict(z=1)],
    ids=["dict", "list", "empty-dict", "empty-list", "dict-subclass"],
)
def test_dict_and_list_become_json(make_client: Any, value: Any, sync: bool) -> None:
    r = make_client(returning(value, sync=sync)).get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == value
    assert int(r.headers["content-length"]) == len(r.content)


def test_json_is_utf8_not_ascii_escaped(make_client: Any) -> None:
    r = make_client(returning({"name": "Zoë ☃"})).get("/")
    assert r.json() == {"name": "Zoë ☃"}
    assert "Zoë ☃".encode() in r.content


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
def test_str_becomes_text_plain(make_client: Any, sync: bool) -> None:
    r = make_client(returning("héllo", sync=sync)).get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.content == "héllo".encode()
    assert r.headers["content-length"] == str(len("héllo".encode()))


def test_str_subclass_becomes_text_plain(make_client: Any) -> None:
    class Name(str):
        pass

    r = make_client(returning(Name("bob"))).get("/")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text == "bob"


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
def test_bytes_become_octet_stream(make_client: Any, sync: bool) -> None:
    r = make_client(returning(b"\x00\xff", sync=sync)).get("/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.content == b"\x00\xff"


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
def test_none_becomes_204_without_body(make_client: Any, sync: bool) -> None:
    r = make_client(returning(None, sync=sync)).get("/")
    assert r.status_code == 204
    assert r.content == b""
    assert "content-type" not in r.headers
    assert r.headers.get("content-length", "0") == "0"


@pytest.mark.anyio
async def test_none_sends_no_body_bytes() -> None:
    messages = (await run_app(returning(None), http_scope("GET", "/"))).sent
    assert messages[0]["status"] == 204
    assert b"".join(m.get("body", b"") for m in messages[1:]) == b""


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize(
    "value", [42, 1.5, (1, 2), {1, 2}, object(), True], ids=["int", "float", "tuple", "set",
                                                             "object", "bool"]
)  # fmt: skip
def test_other_return_values_are_a_type_error_naming_the_endpoint(
    make_client: Any, caplog: pytest.LogCaptureFixture, value: Any, sync: bool
) -> None:
    app = App()
    if sync:

        @app.get("/bad")
        def sync_bad_endpoint() -> Any:
            return value

        name = "sync_bad_endpoint"
    else:

        @app.get("/bad")
        async def bad_endpoint() -> Any:
            return value

        name = "bad_endpoint"

    with caplog.at_level(logging.ERROR, logger="microasgi"):
        r = make_client(app).get("/bad")
    assert r.status_code == 500
    assert name not in r.text  # no details in the body without debug
    errors = [
        rec
        for rec in caplog.records
        if rec.name.startswith("microasgi") and rec.exc_info and rec.exc_info[0] is TypeError
    ]
    assert errors, caplog.records
    assert name in str(errors[0].exc_info[1])  # type: ignore[index]


@pytest.mark.anyio
async def test_type_error_message_names_the_endpoint() -> None:
    from microasgi.responses._base import to_response

    async def my_special_endpoint() -> None: ...

    with pytest.raises(TypeError, match="my_special_endpoint"):
        to_response(12, my_special_endpoint)


# -- signature binding ----------------------------------------------------------------


def test_request_by_annotation_with_any_name(make_client: Any) -> None:
    app = App()

    @app.get("/a")
    async def a(req: Request) -> str:
        return f"{type(req).__name__} {req.url.path}"

    @app.get("/b/{x}")
    def b(x: str, whatever: Request) -> str:
        return f"{type(whatever).__name__} {whatever.url.path} {x}"

    @app.get("/c")
    async def c(conn: HTTPConnection) -> str:
        return f"{type(conn).__name__} {conn.method}"  # type: ignore[attr-defined]

    client = make_client(app)
    assert client.get("/a").text == "Request /a"
    assert client.get("/b/1").text == "Request /b/1 1"
    assert client.get("/c").text == "Request GET"


def test_request_by_name(make_client: Any) -> None:
    app = App()

    @app.get("/a")
    async def a(request) -> str:  # type: ignore[no-untyped-def]
        return f"{type(request).__name__} {request.method}"

    @app.post("/b/{x:int}")
    def b(x, request):  # type: ignore[no-untyped-def]
        return {"x": x, "m": request.method}

    client = make_client(app)
    assert client.get("/a").text == "Request GET"
    assert client.post("/b/2").json() == {"x": 2, "m": "POST"}


def test_no_parameters_at_all(make_client: Any) -> None:
    app = App()

    @app.get("/x/{a}")
    async def x() -> str:
        return "no params"

    assert make_client(app).get("/x/1").text == "no params"


def test_path_params_by_name_and_type(make_client: Any) -> None:
    app = App()

    @app.get("/u/{user_id:int}/p/{slug}")
    async def endpoint(slug: str, user_id: int) -> Any:
        return {"user_id": user_id, "slug": slug, "t": type(user_id).__name__}

    r = make_client(app).get("/u/12/p/hello")
    assert r.json() == {"user_id": 12, "slug": "hello", "t": "int"}


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
def test_endpoint_declaring_only_some_path_params(make_client: Any, sync: bool) -> None:
    app = App()
    if sync:

        @app.get("/a/{x}/b/{y}")
        def endpoint(request: Request, y: str) -> Any:
            return {"y": y, "all": request.path_params}

    else:

        @app.get("/a/{x}/b/{y}")
        async def endpoint(request: Request, y: str) -> Any:  # type: ignore[misc]
            return {"y": y, "all": request.path_params}

    r = make_client(app).get("/a/1/b/2")
    assert r.json() == {"y": "2", "all": {"x": "1", "y": "2"}}


def test_kwargs_gets_all_path_params(make_client: Any) -> None:
    app = App()

    @app.get("/a/{x:int}/b/{y}")
    async def endpoint(**kwargs: Any) -> Any:
        return kwargs

    @app.get("/c/{x:int}/d/{y}")
    def endpoint2(request: Request, x: int, **kwargs: Any) -> Any:
        return {"x": x, "rest": kwargs}

    client = make_client(app)
    assert client.get("/a/1/b/2").json() == {"x": 1, "y": "2"}
    assert client.get("/c/1/d/2").json() == {"x": 1, "rest": {"y": "2"}}


def test_parameter_with_default_that_is_not_a_path_param(make_client: Any) -> None:
    app = App()

    @app.get("/a/{x}")
    async def endpoint(x: str, limit: int = 10, *, flag: bool = False) -> Any:
        return {"x": x, "limit": limit, "flag": flag}

    @app.get("/b/{x}")
    async def endpoint_b(x: str = "default") -> Any:
        return {"x": x}

    client = make_client(app)
    # A query string does not fill it in: only path parameters are bound.
    assert client.get("/a/v?limit=3&flag=1").json() == {"x": "v", "limit": 10, "flag": False}
    assert client.get("/b/given").json() == {"x": "given"}


def test_varargs_are_ignored(make_client: Any) -> None:
    app = App()

    @app.get("/a/{x}")
    async def endpoint(*args: Any, x: str) -> Any:
        return {"args": list(args), "x": x}

    assert make_client(app).get("/a/1").json() == {"args": [], "x": "1"}


def test_unknown_required_parameter_is_a_type_error_at_registration() -> None:
    app = App()
    with pytest.raises(TypeError, match="user_idd"):

        @app.get("/users/{user_id}")
        async def endpoint(user_idd: str) -> None: ...

    with pytest.raises(TypeError, match="req"):

        @app.get("/x")
        async def unannotated(req) -> None:  # type: ignore[no-untyped-def]
            ...

    with pytest.raises(TypeError):

        @app.websocket("/ws/{room}")
        async def ws_endpoint(ws: WebSocket, rom: str) -> None: ...

    router = Router()
    with pytest.raises(TypeError):

        @router.post("/y")
        def sync_endpoint(body: bytes) -> None: ...

    assert app.routes == []
    assert router.routes == []


def test_websocket_annotation_on_http_route_is_a_type_error() -> None:
    app = App()
    with pytest.raises(TypeError, match="WebSocket"):

        @app.get("/x")
        async def endpoint(ws: WebSocket) -> None: ...

    with pytest.raises(TypeError):

        @Router().post("/y")
        def other(conn: WebSocket) -> None: ...


def test_request_annotation_on_websocket_route_is_a_type_error() -> None:
    app = App()
    with pytest.raises(TypeError, match="Request"):

        @app.websocket("/ws")
        async def endpoint(request: Request) -> None: ...


def test_websocket_bound_by_annotation_or_name(make_client: Any) -> None:
    app = App()

    @app.websocket("/a/{room}")
    async def by_annotation(sock: WebSocket, room: str) -> None:
        await sock.accept()
        await sock.send_text(f"a {room}")
        await sock.close()

    @app.websocket("/b")
    async def by_name_ws(ws) -> None:  # type: ignore[no-untyped-def]
        await ws.accept()
        await ws.send_text(type(ws).__name__)
        await ws.close()

    @app.websocket("/c")
    async def by_name_websocket(websocket) -> None:  # type: ignore[no-untyped-def]
        await websocket.accept()
        await websocket.send_text(type(websocket).__name__)
        await websocket.close()

    client = make_client(app)
    with client.websocket_connect("/a/lobby") as ws:
        assert ws.receive_text(timeout=5) == "a lobby"
    with client.websocket_connect("/b") as ws:
        assert ws.receive_text(timeout=5) == "WebSocket"
    with client.websocket_connect("/c") as ws:
        assert ws.receive_text(timeout=5) == "WebSocket"


def test_positional_only_connection_first(make_client: Any) -> None:
    app = App()

    @app.get("/p/{x}")
    async def endpoint(request: Request, /, x: str) -> str:
        return f"{request.method} {x}"

    assert make_client(app).get("/p/1").text == "GET 1"


def test_positional_only_path_param_is_a_type_error() -> None:
    with pytest.raises(TypeError):

        @App().get("/p/{x}")
        async def endpoint(x: str, /) -> None: ...


# -- BackgroundTasks ------------------------------------------------------------------


@pytest.mark.anyio
async def test_background_tasks_injected_and_run_after_the_response() -> None:
    app = App()
    log: list[Any] = []
    sent_at_task_time: list[list[str]] = []
    messages_ref: list[list[Any]] = []

    async def async_task(value: str) -> None:
        sent_at_task_time.append([m["type"] for m in messages_ref[0]])
        log.append(("async", value))

    def sync_task(value: str) -> None:
        log.append(("sync", value))

    @app.get("/items/{name}")
    async def endpoint(name: str, tasks: BackgroundTasks) -> Any:
        assert isinstance(tasks, BackgroundTasks)
        tasks.add_task(async_task, name)
        tasks.add_task(sync_task, value=name)
        log.append("endpoint")
        return {"name": name}

    messages: list[Any] = []
    messages_ref.append(messages)
    done = anyio.Event()

    async def receive() -> Any:
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/items/x",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "scheme": "http",
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    done.set()
    assert log == ["endpoint", ("async", "x"), ("sync", "x")]
    assert json.loads(messages[1]["body"]) == {"name": "x"}
    # When the first task ran, the whole response had been sent.
    assert sent_at_task_time == [["http.response.start", "http.response.body"]]


def test_background_tasks_fresh_per_request_and_sync_endpoint(make_client: Any) -> None:
    app = App()
    ran: list[str] = []
    instances: list[int] = []

    @app.post("/go/{n}")
    def endpoint(request: Request, n: str, background: BackgroundTasks) -> str:
        instances.append(id(background))
        assert background.tasks == []
        background.add_task(ran.append, n)
        return "queued"

    client = make_client(app)
    assert client.post("/go/1").text == "queued"
    assert client.post("/go/2").text == "queued"
    for _ in range(100):  # the task may finish just after the body arrives
        if len(ran) == 2:
            break
        time.sleep(0.01)
    assert ran == ["1", "2"]
    assert len(instances) == 2


@pytest.mark.anyio
async def test_injected_tasks_run_after_the_responses_own_background() -> None:
    app = App()
    order: list[str] = []

    async def mark(label: str) -> None:
        order.append(label)

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks) -> Response:
        tasks.add_task(mark, "injected")
        return PlainTextResponse("hi", background=BackgroundTask(mark, "response"))

    @app.get("/json")
    async def json_endpoint(tasks: BackgroundTasks) -> Any:
        tasks.add_task(mark, "json")
        return JSONResponse({"a": 1})

    messages = (await run_app(app, http_scope("GET", "/"))).sent
    assert messages[1]["body"] == b"hi"
    assert order == ["response", "injected"]
    order.clear()
    await run_app(app, http_scope("GET", "/json"))
    assert order == ["json"]


@pytest.mark.anyio
async def test_unused_background_tasks_parameter_is_harmless() -> None:
    app = App()

    @app.get("/")
    async def endpoint(tasks: BackgroundTasks) -> str:
        return "nothing queued"

    messages = (await run_app(app, http_scope("GET", "/"))).sent
    assert messages[0]["status"] == 200
    assert messages[1]["body"] == b"nothing queued"


def test_unresolvable_string_annotation_falls_back_to_the_parameter_name(
    make_client: Any,
) -> None:
    """With postponed annotations a name-only import can't be resolved: go by the name."""
    app = App()

    async def endpoint(request: NotImportableHere) -> str:  # type: ignore[name-defined]  # noqa: F821
        return str(request.url.path)

    app.router.add_route("/where", endpoint)
    assert make_client(app).get("/where").text == "/where"


def test_connection_bound_by_name_whatever_its_annotation(make_client: Any) -> None:
    app = App()

    @app.get("/any")
    async def endpoint(request: Any) -> str:
        return str(request.url.path)

    assert make_client(app).get("/any").text == "/any"
