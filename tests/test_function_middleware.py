"""Function middleware (`@app.middleware`): same task as the endpoint, nothing buffered.

Each of BaseHTTPMiddleware's known traps is a test here: context variables,
streaming, background tasks, reading the body twice, disconnects, errors.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from microasgi import (
    App,
    BackgroundTasks,
    HTTPException,
    JSONResponse,
    PlainTextResponse,
    Request,
    Response,
    StreamingResponse,
)
from microasgi.requests import ClientDisconnect
from tests.helpers import Exchange, MakeClient, body_messages, http_scope

CallNext = Any
seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


def test_headers_added_and_order_of_registration(make_client: MakeClient) -> None:
    app = App()
    order: list[str] = []

    @app.middleware
    async def inner(request: Request, call_next: CallNext) -> Response:
        order.append("inner")
        response: Response = await call_next(request)
        response.headers["x-inner"] = "1"
        return response

    @app.middleware("http")  # registered last: the outermost, as add_middleware
    async def outer(request: Request, call_next: CallNext) -> Response:
        order.append("outer")
        response: Response = await call_next(request)
        response.headers["x-outer"] = response.headers.get("x-inner", "missing")
        return response

    @app.get("/")
    async def index() -> dict[str, int]:
        return {"a": 1}

    r = make_client(app).get("/")
    assert r.json() == {"a": 1}
    assert (r.headers["x-inner"], r.headers["x-outer"]) == ("1", "1")
    assert order == ["outer", "inner"]


def test_context_variables_cross_both_ways(make_client: MakeClient) -> None:
    app = App()

    @app.middleware
    async def mw(request: Request, call_next: CallNext) -> Response:
        seen.set("from middleware")
        response: Response = await call_next(request)
        response.headers["x-after"] = seen.get()  # what the endpoint set
        return response

    @app.get("/")
    async def index() -> str:
        before = seen.get()
        seen.set("from endpoint")
        return before

    r = make_client(app).get("/")
    assert r.text == "from middleware"
    assert r.headers["x-after"] == "from endpoint"


def test_a_streaming_response_streams_through(anyio_backend: str) -> None:
    from microasgi.testclient import TestClient

    app = App()
    produced_second = threading.Event()
    client_got_first = threading.Event()

    @app.middleware
    async def mw(request: Request, call_next: CallNext) -> Response:
        response: Response = await call_next(request)
        response.headers["x-mw"] = "yes"
        return response

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first"
            # The second chunk is made only once the client has the first.
            await anyio.to_thread.run_sync(client_got_first.wait, 5)
            produced_second.set()
            yield b"second"

        return StreamingResponse(chunks(), media_type="text/plain")

    with TestClient(app, backend=anyio_backend) as client, client.stream("GET", "/stream") as r:
        assert r.headers["x-mw"] == "yes"
        pieces = r.iter_raw()
        assert next(pieces) == b"first"
        assert not produced_second.is_set()
        client_got_first.set()
        assert b"".join(pieces) == b"second"


def test_background_tasks_run_after_the_response_and_are_not_cancelled(
    make_client: MakeClient,
) -> None:
    app = App()
    log: list[str] = []

    @app.middleware
    async def mw(request: Request, call_next: CallNext) -> Response:
        response: Response = await call_next(request)
        log.append("middleware returned")
        return response

    @app.get("/")
    async def index(tasks: BackgroundTasks) -> str:
        async def slow() -> None:
            await anyio.sleep(0.05)
            log.append("task finished")

        tasks.add_task(slow)
        return "ok"

    assert make_client(app).get("/").text == "ok"
    assert log == ["middleware returned", "task finished"]


def test_both_can_read_the_body(make_client: MakeClient) -> None:
    app = App()

    @app.middleware
    async def mw(request: Request, call_next: CallNext) -> Response:
        body = await request.body()
        response: Response = await call_next(request)
        response.headers["x-seen"] = str(len(body))
        return response

    @app.post("/echo")
    async def echo(request: Request) -> Any:
        return await request.json()

    r = make_client(app).post("/echo", json={"x": [1, 2, 3]})
    assert r.json() == {"x": [1, 2, 3]}
    assert r.headers["x-seen"] == str(len(b'{"x":[1,2,3]}'))


def test_an_endpoint_exception_gives_a_500_that_passes_through(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()
    statuses: list[int] = []

    @app.middleware
    async def mw(request: Request, call_next: CallNext) -> Response:
        response: Response = await call_next(request)
        statuses.append(response.status_code)
        response.headers["x-mw"] = "saw it"
        return response

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(418, "short and stout")

    client = make_client(app, raise_server_exceptions=False)
    r = client.get("/boom")
    assert (r.status_code, r.text, r.headers["x-mw"]) == (500, "Internal Server Error", "saw it")
    r = client.get("/teapot")
    assert (r.status_code, r.text, r.headers["x-mw"]) == (418, "short and stout", "saw it")
    r = client.get("/missing")
    assert (r.status_code, r.headers["x-mw"]) == (404, "saw it")
    r = client.post("/boom")
    assert (r.status_code, r.headers["allow"], r.headers["x-mw"]) == (405, "GET, HEAD", "saw it")
    assert statuses == [500, 418, 404, 405]
    assert any("kaboom" in str(rec.exc_info[1]) for rec in caplog.records if rec.exc_info)


def test_user_exception_handlers_answer_before_the_middleware_sees_it(
    make_client: MakeClient,
) -> None:
    app = App()

    @app.exception_handler(KeyError)
    async def missing(request: Request, exc: KeyError) -> JSONResponse:
        return JSONResponse({"missing": exc.args[0]}, status_code=404)

    @app.middleware
    async def mw(request: Request, call_next: CallNext) -> Response:
        response: Response = await call_next(request)
        response.headers["x-status"] = str(response.status_code)
        return response

    @app.get("/item")
    async def item() -> None:
        raise KeyError("thing")

    r = make_client(app).get("/item")
    assert r.json() == {"missing": "thing"}
    assert r.headers["x-status"] == "404"


def test_a_middleware_may_answer_itself_or_fail(make_client: MakeClient) -> None:
    app = App()

    @app.middleware
    async def guard(request: Request, call_next: CallNext) -> Any:
        if request.headers.get("x-token") != "secret":
            return {"error": "no token"}  # what an endpoint may return
        if request.headers.get("x-fail"):
            raise HTTPException(403, "refused by middleware")
        return await call_next(request)

    @app.get("/")
    async def index() -> str:
        return "in"

    client = make_client(app)
    assert client.get("/").json() == {"error": "no token"}
    assert client.get("/", headers={"x-token": "secret"}).text == "in"
    r = client.get("/", headers={"x-token": "secret", "x-fail": "1"})
    assert (r.status_code, r.text) == (403, "refused by middleware")


@pytest.mark.anyio
async def test_a_client_disconnect_reaches_both_without_an_error_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()
    events: list[str] = []

    @app.middleware
    async def mw(request: Request, call_next: CallNext) -> Response:
        try:
            response: Response = await call_next(request)
        except ClientDisconnect:
            events.append("middleware saw the disconnect")
            raise
        return response

    @app.post("/upload")
    async def upload(request: Request) -> str:
        try:
            await request.body()
        except ClientDisconnect:
            events.append("endpoint saw the disconnect")
            raise
        return "done"

    messages = [*body_messages(b"part", b"more")[:1], {"type": "http.disconnect"}]
    with caplog.at_level(logging.DEBUG, logger="microasgi"):
        exchange = await Exchange(messages).run(app, http_scope("POST", "/upload"))
    assert exchange.sent == []  # nobody to answer
    assert events == ["endpoint saw the disconnect", "middleware saw the disconnect"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_parent_function_middleware_wrap_a_mounted_apps(make_client: MakeClient) -> None:
    child = App()

    @child.middleware
    async def child_mw(request: Request, call_next: CallNext) -> Response:
        response: Response = await call_next(request)
        response.headers.append("x-chain", "child")
        return response

    @child.get("/hello")
    async def hello() -> str:
        return "from child"

    parent = App()

    @parent.middleware
    async def parent_mw(request: Request, call_next: CallNext) -> Response:
        response: Response = await call_next(request)
        response.headers.append("x-chain", "parent")
        return response

    parent.mount("/child", child)
    r = make_client(parent).get("/child/hello")
    assert r.text == "from child"
    assert r.headers.get_list("x-chain") == ["child", "parent"]


def test_sync_function_middleware_and_late_registration_are_refused(
    make_client: MakeClient,
) -> None:
    app = App()

    def sync_mw(request: Request, call_next: CallNext) -> Any:
        return None

    with pytest.raises(TypeError, match="async def"):
        app.middleware(sync_mw)
    with pytest.raises(ValueError, match="http"):
        app.middleware("websocket")

    @app.get("/")
    async def index() -> str:
        return "ok"

    make_client(app).get("/")

    async def late(request: Request, call_next: CallNext) -> Any:
        return await call_next(request)

    with pytest.raises(RuntimeError, match="after the application has started"):
        app.middleware(late)


def test_uploads_are_closed_through_function_middleware(make_client: MakeClient) -> None:
    app = App()
    files: list[Any] = []

    @app.middleware
    async def mw(request: Request, call_next: CallNext) -> Response:
        response: Response = await call_next(request)
        return response

    @app.post("/up")
    async def up(request: Request) -> PlainTextResponse:
        form = await request.form()
        files.append(form["f"])
        return PlainTextResponse("ok")

    r = make_client(app).post("/up", files={"f": ("a.txt", b"data")})
    assert r.text == "ok"
    assert files[0].file.closed
