"""Errors: HTTPException, exception handlers, 500s, and how they travel through middleware."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from microasgi import (
    App,
    HTTPException,
    JSONResponse,
    PlainTextResponse,
    Request,
    StreamingResponse,
    WebSocket,
    WebSocketDisconnect,
)
from microasgi.middleware import Middleware
from microasgi.types import ASGIApp, Receive, Scope, Send
from tests.helpers import AddHeader, http_scope, run_app


class Boom(Exception):
    pass


class SubBoom(Boom):
    pass


class Explode:
    """A middleware that raises before calling the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/mw-boom":
            raise Boom("raised in middleware")
        await self.app(scope, receive, send)


def microasgi_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name.startswith("microasgi") and r.levelno >= logging.ERROR
    ]


# -- HTTPException default responses ----------------------------------------------------


def test_http_exception_str_detail_is_text_with_headers(make_client: Any) -> None:
    app = App()

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(418, "short and stout", headers={"X-Kettle": "no"})

    r = make_client(app).get("/teapot")
    assert r.status_code == 418
    assert r.text == "short and stout"
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["x-kettle"] == "no"


def test_http_exception_dict_detail_is_json(make_client: Any) -> None:
    app = App()

    @app.get("/bad")
    async def bad() -> None:
        raise HTTPException(422, {"field": "name", "error": "missing"}, headers={"X-A": "1"})

    r = make_client(app).get("/bad")
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"field": "name", "error": "missing"}
    assert r.headers["x-a"] == "1"


def test_http_exception_list_detail_is_json(make_client: Any) -> None:
    app = App()

    @app.get("/bad")
    async def bad() -> None:
        raise HTTPException(400, ["a", "b"])

    r = make_client(app).get("/bad")
    assert r.status_code == 400
    assert r.json() == ["a", "b"]


def test_http_exception_default_detail_is_the_reason_phrase(make_client: Any) -> None:
    app = App()

    @app.get("/forbidden")
    async def forbidden() -> None:
        raise HTTPException(403)

    r = make_client(app).get("/forbidden")
    assert r.status_code == 403
    assert r.text == "Forbidden"


def test_http_exception_from_sync_endpoint(make_client: Any) -> None:
    app = App()

    @app.get("/sync")
    def sync_endpoint() -> None:
        raise HTTPException(409, "conflict!")

    r = make_client(app).get("/sync")
    assert (r.status_code, r.text) == (409, "conflict!")


def test_http_exception_is_not_logged_as_an_error(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.get("/nope")
    async def nope() -> None:
        raise HTTPException(404, "nope")

    caplog.set_level(logging.DEBUG, logger="microasgi")
    assert make_client(app).get("/nope").status_code == 404
    assert microasgi_errors(caplog) == []


# -- handlers by status code --------------------------------------------------------------


def test_handler_for_status_code_of_raised_http_exception(make_client: Any) -> None:
    app = App()

    @app.exception_handler(403)
    async def forbidden(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"denied": request.url.path, "detail": exc.detail}, status_code=403)

    @app.get("/secret")
    async def secret() -> None:
        raise HTTPException(403, "go away")

    @app.get("/other")
    async def other() -> None:
        raise HTTPException(401, "who are you")

    client = make_client(app)
    r = client.get("/secret")
    assert r.status_code == 403
    assert r.json() == {"denied": "/secret", "detail": "go away"}
    # A different status is not taken by the 403 handler.
    r = client.get("/other")
    assert (r.status_code, r.text) == (401, "who are you")


def test_handler_for_404_from_the_router(make_client: Any) -> None:
    app = App()

    @app.exception_handler(404)
    async def not_found(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"missing": request.url.path}, status_code=404)

    @app.get("/exists")
    async def exists() -> str:
        return "here"

    client = make_client(app)
    r = client.get("/does/not/exist")
    assert r.status_code == 404
    assert r.json() == {"missing": "/does/not/exist"}
    assert client.get("/exists").text == "here"


def test_handler_for_404_in_mounted_router(make_client: Any) -> None:
    from microasgi import Router

    app = App()
    api = Router()

    @api.get("/ping")
    async def ping() -> str:
        return "pong"

    app.mount("/api", api)

    @app.exception_handler(404)
    async def not_found(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"missing": request.url.path}, status_code=404)

    r = make_client(app).get("/api/nothing")
    assert r.status_code == 404
    assert r.json() == {"missing": "/api/nothing"}


def test_handler_for_405_from_the_router_sees_allow_header(make_client: Any) -> None:
    app = App()
    seen: dict[str, Any] = {}

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: HTTPException) -> PlainTextResponse:
        seen["method"] = request.method
        seen["headers"] = exc.headers
        return PlainTextResponse("custom 405", 405, headers=exc.headers)

    @app.route("/thing", methods=["GET", "POST"])
    async def thing() -> str:
        return "thing"

    r = make_client(app).delete("/thing")
    assert r.status_code == 405
    assert r.text == "custom 405"
    assert seen["method"] == "DELETE"
    allow = {m.strip() for m in r.headers["allow"].split(",")}
    assert {"GET", "POST", "HEAD"} <= allow
    assert "DELETE" not in allow


def test_default_404_and_405(make_client: Any) -> None:
    app = App()

    @app.get("/only-get")
    async def only_get() -> str:
        return "x"

    client = make_client(app)
    assert client.get("/missing").status_code == 404
    r = client.post("/only-get")
    assert r.status_code == 405
    assert "GET" in r.headers["allow"]


# -- handlers by exception class ----------------------------------------------------------


def test_handler_by_class(make_client: Any) -> None:
    app = App()

    @app.exception_handler(Boom)
    async def on_boom(request: Request, exc: Boom) -> JSONResponse:
        return JSONResponse({"boom": str(exc)}, status_code=418)

    @app.get("/boom")
    async def boom() -> None:
        raise Boom("kaboom")

    r = make_client(app).get("/boom")
    assert r.status_code == 418
    assert r.json() == {"boom": "kaboom"}


def test_handler_for_base_class_catches_subclasses(make_client: Any) -> None:
    app = App()

    @app.exception_handler(Boom)
    async def on_boom(request: Request, exc: Boom) -> PlainTextResponse:
        return PlainTextResponse(type(exc).__name__, 418)

    @app.get("/sub")
    async def sub() -> None:
        raise SubBoom()

    r = make_client(app).get("/sub")
    assert (r.status_code, r.text) == (418, "SubBoom")


def test_most_specific_class_handler_wins(make_client: Any) -> None:
    app = App()

    @app.exception_handler(Boom)
    async def on_boom(request: Request, exc: Boom) -> PlainTextResponse:
        return PlainTextResponse("base", 400)

    @app.exception_handler(SubBoom)
    async def on_sub(request: Request, exc: SubBoom) -> PlainTextResponse:
        return PlainTextResponse("sub", 401)

    @app.get("/sub")
    async def sub() -> None:
        raise SubBoom()

    @app.get("/base")
    async def base() -> None:
        raise Boom()

    client = make_client(app)
    assert (client.get("/sub").status_code, client.get("/sub").text) == (401, "sub")
    assert (client.get("/base").status_code, client.get("/base").text) == (400, "base")


def test_handler_for_http_exception_class_takes_router_errors(make_client: Any) -> None:
    app = App()

    @app.exception_handler(HTTPException)
    async def any_http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"status": exc.status_code}, status_code=exc.status_code)

    @app.get("/x")
    async def x() -> None:
        raise HTTPException(410)

    client = make_client(app)
    assert client.get("/x").json() == {"status": 410}
    assert client.get("/nowhere").json() == {"status": 404}


def test_status_handler_beats_class_handler_for_http_exception(make_client: Any) -> None:
    app = App()

    @app.exception_handler(HTTPException)
    async def any_http(request: Request, exc: HTTPException) -> str:
        return "class"

    @app.exception_handler(404)
    async def not_found(request: Request, exc: HTTPException) -> PlainTextResponse:
        return PlainTextResponse("status", 404)

    r = make_client(app).get("/nowhere")
    assert (r.status_code, r.text) == (404, "status")


def test_exception_handlers_given_to_constructor(make_client: Any) -> None:
    async def on_boom(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("from constructor", 418)

    app = App(exception_handlers={Boom: on_boom})

    @app.get("/boom")
    async def boom() -> None:
        raise Boom()

    r = make_client(app).get("/boom")
    assert (r.status_code, r.text) == (418, "from constructor")


# -- handler shapes ---------------------------------------------------------------------


def test_sync_handler(make_client: Any) -> None:
    import threading

    app = App()
    threads: list[str] = []

    @app.exception_handler(Boom)
    def on_boom(request: Request, exc: Boom) -> PlainTextResponse:
        threads.append(threading.current_thread().name)
        return PlainTextResponse(f"sync handled {exc}", 409)

    @app.get("/boom")
    async def boom() -> None:
        raise Boom("x")

    r = make_client(app).get("/boom")
    assert (r.status_code, r.text) == (409, "sync handled x")
    assert len(threads) == 1


def test_handler_returning_dict_is_json(make_client: Any) -> None:
    app = App()

    @app.exception_handler(Boom)
    async def on_boom(request: Request, exc: Boom) -> dict[str, str]:
        return {"error": "boom"}

    @app.get("/boom")
    async def boom() -> None:
        raise Boom()

    r = make_client(app).get("/boom")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"error": "boom"}


def test_handler_returning_str_is_text(make_client: Any) -> None:
    app = App()

    @app.exception_handler(404)
    def not_found(request: Request, exc: HTTPException) -> str:
        return "nothing here"

    r = make_client(app).get("/missing")
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "nothing here"


def test_handler_that_raises_gives_500_and_is_logged(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.exception_handler(Boom)
    async def broken(request: Request, exc: Boom) -> str:
        raise RuntimeError("the handler itself broke")

    @app.get("/boom")
    async def boom() -> None:
        raise Boom()

    caplog.set_level(logging.ERROR, logger="microasgi")
    r = make_client(app).get("/boom")
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    assert "the handler itself broke" not in r.text
    errors = microasgi_errors(caplog)
    assert errors
    assert any(
        rec.exc_info and "the handler itself broke" in str(rec.exc_info[1]) for rec in errors
    )


def test_handler_returning_unsupported_type_gives_500(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.exception_handler(Boom)
    async def weird(request: Request, exc: Boom) -> object:
        return object()

    @app.get("/boom")
    async def boom() -> None:
        raise Boom()

    caplog.set_level(logging.ERROR, logger="microasgi")
    r = make_client(app).get("/boom")
    assert r.status_code == 500
    assert microasgi_errors(caplog)


# -- unexpected errors: 500 ---------------------------------------------------------------


def test_unhandled_exception_gives_plain_500_and_logs_traceback(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.get("/crash")
    async def crash() -> None:
        raise ValueError("secret internal detail")

    caplog.set_level(logging.ERROR, logger="microasgi")
    r = make_client(app).get("/crash")
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    assert "Traceback" not in r.text
    assert "secret internal detail" not in r.text
    records = [
        rec for rec in microasgi_errors(caplog) if rec.exc_info and rec.exc_info[0] is ValueError
    ]
    assert records, caplog.records
    assert records[0].name == "microasgi"
    # The traceback is in the log output.
    assert "Traceback" in caplog.text
    assert "secret internal detail" in caplog.text
    assert "in crash" in caplog.text


def test_unhandled_exception_in_sync_endpoint(make_client: Any) -> None:
    app = App()

    @app.get("/crash")
    def crash() -> None:
        raise KeyError("k")

    r = make_client(app).get("/crash")
    assert (r.status_code, r.text) == (500, "Internal Server Error")


def test_endpoint_returning_bad_type_is_500_naming_endpoint(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.get("/weird")
    async def weird_endpoint() -> object:
        return 3.5

    caplog.set_level(logging.ERROR, logger="microasgi")
    r = make_client(app).get("/weird")
    assert r.status_code == 500
    errors = [rec for rec in microasgi_errors(caplog) if rec.exc_info]
    assert any(
        rec.exc_info[0] is TypeError and "weird_endpoint" in str(rec.exc_info[1])  # type: ignore[index]
        for rec in errors
    )


def test_debug_puts_traceback_in_body(make_client: Any) -> None:
    app = App(debug=True)

    @app.get("/crash")
    async def crash_in_debug() -> None:
        raise ValueError("visible in debug")

    r = make_client(app).get("/crash")
    assert r.status_code == 500
    assert "Traceback" in r.text
    assert "ValueError: visible in debug" in r.text
    assert "crash_in_debug" in r.text


def test_500_handler_used_for_unexpected_errors(make_client: Any) -> None:
    app = App()

    @app.exception_handler(500)
    async def on_500(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"oops": type(exc).__name__}, status_code=500)

    @app.get("/crash")
    async def crash() -> None:
        raise ZeroDivisionError()

    r = make_client(app).get("/crash")
    assert r.status_code == 500
    assert r.json() == {"oops": "ZeroDivisionError"}


def test_500_handler_not_used_for_http_exceptions(make_client: Any) -> None:
    app = App()

    @app.exception_handler(500)
    async def on_500(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("500 handler", 500)

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(418, "teapot")

    r = make_client(app).get("/teapot")
    assert (r.status_code, r.text) == (418, "teapot")
    assert make_client(app).get("/missing").status_code == 404


def test_exception_class_handler_used_for_unexpected_errors(make_client: Any) -> None:
    app = App()

    @app.exception_handler(Exception)
    async def on_any(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse(f"caught {type(exc).__name__}", 503)

    @app.get("/crash")
    async def crash() -> None:
        raise LookupError()

    r = make_client(app).get("/crash")
    assert (r.status_code, r.text) == (503, "caught LookupError")


# -- errors and middleware ----------------------------------------------------------------


def test_500_passes_back_through_user_middleware(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(middleware=[Middleware(AddHeader, name="x-cors", value="*")])

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("boom")

    @app.get("/ok")
    async def ok() -> str:
        return "ok"

    caplog.set_level(logging.ERROR, logger="microasgi")
    client = make_client(app)
    assert client.get("/ok").headers["x-cors"] == "*"
    r = client.get("/crash")
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    assert r.headers["x-cors"] == "*"
    assert microasgi_errors(caplog)


def test_http_exception_and_404_pass_through_user_middleware(make_client: Any) -> None:
    app = App(middleware=[Middleware(AddHeader)])

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(418)

    client = make_client(app)
    r = client.get("/teapot")
    assert r.status_code == 418
    assert r.headers["x-mw"] == "yes"
    r = client.get("/missing")
    assert r.status_code == 404
    assert r.headers["x-mw"] == "yes"


def test_added_middleware_sees_the_500(make_client: Any) -> None:
    app = App()
    app.add_middleware(AddHeader, name="x-added", value="1")

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError()

    r = make_client(app).get("/crash")
    assert r.status_code == 500
    assert r.headers["x-added"] == "1"


def test_custom_500_handler_response_passes_through_middleware(make_client: Any) -> None:
    app = App(middleware=[Middleware(AddHeader)])

    @app.exception_handler(Exception)
    async def on_any(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("handled", 500)

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError()

    r = make_client(app).get("/crash")
    assert (r.status_code, r.text) == (500, "handled")
    assert r.headers["x-mw"] == "yes"


def test_exception_in_user_middleware_gives_500(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(middleware=[Middleware(AddHeader), Middleware(Explode)])

    @app.get("/mw-boom")
    async def never() -> str:
        return "not reached"

    @app.get("/fine")
    async def fine() -> str:
        return "fine"

    caplog.set_level(logging.ERROR, logger="microasgi")
    client = make_client(app)
    assert client.get("/fine").text == "fine"
    r = client.get("/mw-boom")
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    assert any(
        rec.exc_info and isinstance(rec.exc_info[1], Boom) for rec in microasgi_errors(caplog)
    )


def test_exception_in_outermost_middleware_gives_500(make_client: Any) -> None:
    app = App(middleware=[Middleware(Explode)])

    @app.get("/mw-boom")
    async def never() -> str:
        return "not reached"

    r = make_client(app).get("/mw-boom")
    assert (r.status_code, r.text) == (500, "Internal Server Error")


def test_exception_in_middleware_uses_exception_handlers(make_client: Any) -> None:
    app = App(middleware=[Middleware(Explode)])

    @app.exception_handler(Boom)
    async def on_boom(request: Request, exc: Boom) -> PlainTextResponse:
        return PlainTextResponse(f"handled: {exc}", 418)

    @app.get("/mw-boom")
    async def never() -> str:
        return "not reached"

    r = make_client(app).get("/mw-boom")
    assert (r.status_code, r.text) == (418, "handled: raised in middleware")


# -- exceptions after the response started -------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("with_middleware", [False, True])
async def test_exception_after_response_started_sends_no_second_start(
    with_middleware: bool, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(middleware=[Middleware(AddHeader)] if with_middleware else None)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def gen() -> Any:
            yield b"first,"
            yield b"second,"
            raise RuntimeError("generator failed mid-way")

        return StreamingResponse(gen(), media_type="text/plain")

    caplog.set_level(logging.ERROR, logger="microasgi")
    messages = (await run_app(app, http_scope("GET", "/stream"))).sent
    starts = [m for m in messages if m["type"] == "http.response.start"]
    assert len(starts) == 1
    assert starts[0]["status"] == 200
    bodies = [m for m in messages if m["type"] == "http.response.body"]
    assert b"".join(m.get("body", b"") for m in bodies) == b"first,second,"
    # The truncated response must not be presented as complete (no final body message),
    # and certainly no "Internal Server Error" body is appended to it.
    assert all(m.get("more_body", False) for m in bodies)
    assert "generator failed mid-way" in caplog.text
    assert microasgi_errors(caplog)


@pytest.mark.anyio
async def test_exception_after_complete_response_is_logged_not_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pure ASGI endpoint mounted in the app that raises after finishing its response."""

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        raise RuntimeError("after the end")

    app = App()
    app.mount("/raw", raw)
    caplog.set_level(logging.ERROR, logger="microasgi")
    messages = (await run_app(app, http_scope("GET", "/raw/x"))).sent
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]
    assert messages[0]["status"] == 201
    assert "after the end" in caplog.text


def test_streaming_error_mid_way_is_an_incomplete_response_for_the_client(
    make_client: Any,
) -> None:
    import httpx

    app = App()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def gen() -> Any:
            yield b"partial"
            raise RuntimeError("mid-way")

        return StreamingResponse(gen())

    client = make_client(app)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/stream")


# -- the app is frozen once it has started --------------------------------------------------


def test_exception_handler_after_start_is_runtime_error(make_client: Any) -> None:
    app = App()

    @app.get("/")
    async def index() -> str:
        return "hi"

    assert make_client(app).get("/").text == "hi"
    with pytest.raises(RuntimeError):

        @app.exception_handler(404)
        async def late(request: Request, exc: Exception) -> str:
            return "late"

    assert 404 not in app.exception_handlers


def test_add_middleware_after_start_is_runtime_error(make_client: Any) -> None:
    app = App()

    @app.get("/")
    async def index() -> str:
        return "hi"

    assert make_client(app).get("/").text == "hi"
    with pytest.raises(RuntimeError):
        app.add_middleware(AddHeader)
    # And the app keeps working without it.
    r = make_client(app).get("/")
    assert r.text == "hi"
    assert "x-mw" not in r.headers


def test_handlers_and_middleware_added_before_start_work(make_client: Any) -> None:
    app = App()

    @app.get("/missing-handler")
    async def index() -> None:
        raise HTTPException(404)

    @app.exception_handler(404)
    async def nf(request: Request, exc: HTTPException) -> PlainTextResponse:
        return PlainTextResponse("registered late but before start", 404)

    app.add_middleware(AddHeader)
    r = make_client(app).get("/missing-handler")
    assert r.text == "registered late but before start"
    assert r.headers["x-mw"] == "yes"


# -- more places exceptions come from --------------------------------------------------------


def test_http_exception_raised_in_middleware(make_client: Any) -> None:
    class Auth:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] == "/private":
                raise HTTPException(401, "login first", headers={"WWW-Authenticate": "Bearer"})
            await self.app(scope, receive, send)

    app = App(middleware=[Middleware(Auth)])

    @app.get("/private")
    async def private() -> str:
        return "secret"

    r = make_client(app).get("/private")
    assert (r.status_code, r.text) == (401, "login first")
    assert r.headers["www-authenticate"] == "Bearer"


def test_websocket_error_with_user_middleware_closes_1011(make_client: Any) -> None:
    app = App(middleware=[Middleware(AddHeader)])

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        raise RuntimeError("ws failure")

    with make_client(app).websocket_connect("/ws") as session:
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text(timeout=5)
        assert info.value.code == 1011


def test_background_task_error_is_logged_after_response(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    from microasgi import BackgroundTask

    def failing_task() -> None:
        raise ValueError("background task failed")

    app = App()

    @app.get("/")
    async def index() -> PlainTextResponse:
        return PlainTextResponse("sent first", background=BackgroundTask(failing_task))

    caplog.set_level(logging.ERROR, logger="microasgi")
    r = make_client(app).get("/")
    assert (r.status_code, r.text) == (200, "sent first")
    deadline = time.monotonic() + 5
    while "background task failed" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "background task failed" in caplog.text


def test_http_style_exception_handler_does_not_leave_websocket_open(make_client: Any) -> None:
    """An `Exception` handler written for HTTP (it returns a Response) must not swallow a
    WebSocket error: the connection is still closed with 1011 after accept."""
    app = App()

    @app.exception_handler(Exception)
    async def on_any(request: Any, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("oops", 500)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        raise RuntimeError("ws failure")

    with make_client(app).websocket_connect("/ws") as session:
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text(timeout=2)
        assert info.value.code == 1011


def test_http_style_exception_handler_still_denies_websocket_before_accept(
    make_client: Any,
) -> None:
    from microasgi.testclient import WebSocketDenied

    app = App()

    @app.exception_handler(500)
    async def on_500(request: Any, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("oops", 500)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        raise RuntimeError("ws failure before accept")

    with pytest.raises(WebSocketDenied):
        make_client(app).websocket_connect("/ws", timeout=2)


def test_exception_handler_does_not_take_http_exceptions(make_client: Any) -> None:
    """A handler for Exception is for unexpected errors: 404 and 405 keep their answers."""
    app = App()
    caught: list[Exception] = []

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> PlainTextResponse:
        caught.append(exc)
        return PlainTextResponse("sorry", 500)

    @app.get("/boom")
    async def boom() -> None:
        raise KeyError("x")

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(418)

    client = make_client(app)
    assert client.get("/missing").status_code == 404
    assert client.post("/boom").status_code == 405
    assert client.get("/teapot").status_code == 418
    assert caught == []
    assert client.get("/boom").text == "sorry"
    assert len(caught) == 1 and isinstance(caught[0], KeyError)


# -- handlers get the endpoint's own connection ---------------------------------------------


def test_handler_gets_the_same_request_with_its_body(make_client: Any) -> None:
    app = App()
    endpoint_requests: list[Request] = []

    @app.post("/items")
    async def create(request: Request) -> None:
        endpoint_requests.append(request)
        await request.json()
        raise Boom("invalid item")

    @app.exception_handler(Boom)
    async def invalid(request: Request, exc: Boom) -> dict[str, Any]:
        # Reading the body again must not wait for a body the endpoint already read.
        return {
            "same": request is endpoint_requests[0],
            "body": (await request.body()).decode(),
            "json": await request.json(),
        }

    r = make_client(app).post("/items", json={"name": "x"}, timeout=5)
    assert r.json() == {"same": True, "body": '{"name":"x"}', "json": {"name": "x"}}


def test_sync_handler_gets_the_same_request(make_client: Any) -> None:
    app = App()
    seen: list[Any] = []

    @app.get("/x")
    def endpoint(request: Request) -> None:
        seen.append(request)
        raise Boom()

    @app.exception_handler(Boom)
    def handler(request: Request, exc: Boom) -> str:
        return "same" if request is seen[0] else "different"

    assert make_client(app).get("/x").text == "same"


def test_websocket_handler_gets_the_same_websocket(make_client: Any) -> None:
    app = App()
    seen: list[WebSocket] = []

    @app.websocket("/ws")
    async def ws_endpoint(ws: WebSocket) -> None:
        seen.append(ws)
        await ws.accept()
        raise Boom("mid-session")

    @app.exception_handler(Boom)
    async def handler(ws: WebSocket, exc: Boom) -> None:
        await ws.send_text("same" if ws is seen[0] else "different")
        await ws.close(4000)

    with make_client(app).websocket_connect("/ws") as session:
        assert session.receive_text() == "same"
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text()
        assert info.value.code == 4000


# -- the WebSocket branch of the guard around foreign code ---------------------------------


class ExplodeOnWebSocket:
    """A middleware that raises on WebSocket scopes, before or after the accept."""

    def __init__(self, app: ASGIApp, after_accept: bool = False) -> None:
        self.app = app
        self.after_accept = after_accept

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        if not self.after_accept:
            raise Boom("middleware failed before accept")

        async def send_then_fail(message: Any) -> None:
            await send(message)
            if message["type"] == "websocket.accept":
                raise Boom("middleware failed after accept")

        await self.app(scope, receive, send_then_fail)


def ws_app(**middleware_options: Any) -> App:
    app = App(middleware=[Middleware(ExplodeOnWebSocket, **middleware_options)])

    @app.websocket("/ws")
    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()

    return app


def test_middleware_error_before_accept_denies_the_handshake_with_500(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from microasgi.testclient import WebSocketDenied

    with pytest.raises(WebSocketDenied) as info:
        make_client(ws_app()).websocket_connect("/ws")
    assert info.value.status_code == 500
    assert any("before accept" in str(r.exc_info[1]) for r in microasgi_errors(caplog))


def test_middleware_error_after_accept_closes_with_1011(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = ws_app(after_accept=True)
    with make_client(app, raise_server_exceptions=False).websocket_connect("/ws") as session:
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text()
        assert info.value.code == 1011
    assert any("after accept" in str(r.exc_info[1]) for r in microasgi_errors(caplog))


def test_mounted_raw_asgi_app_failing_on_a_websocket_closes_with_1011(make_client: Any) -> None:
    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        raise Boom("raw app failed")

    app = App()
    app.mount("/raw", raw)
    with make_client(app, raise_server_exceptions=False).websocket_connect("/raw/ws") as session:
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text()
        assert info.value.code == 1011


def test_mounted_raw_asgi_app_websocket_exception_closes_with_its_code(make_client: Any) -> None:
    from microasgi import WebSocketException

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise WebSocketException(4001, "policy")

    app = App()
    app.mount("/raw", raw)
    with make_client(app).websocket_connect("/raw/ws") as session:
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text()
        assert (info.value.code, info.value.reason) == (4001, "policy")


def test_error_in_an_inner_middleware_passes_through_the_outer_ones(make_client: Any) -> None:
    # The outer middleware (think CORS) must see the 500 of a middleware inside it.
    app = App(middleware=[Middleware(AddHeader, name="x-outer"), Middleware(Explode)])

    @app.get("/mw-boom")
    async def never() -> str:
        return "not reached"

    r = make_client(app, raise_server_exceptions=False).get("/mw-boom")
    assert r.status_code == 500
    assert r.headers["x-outer"] == "yes"


def test_error_in_the_outermost_middleware_is_still_answered(make_client: Any) -> None:
    app = App(middleware=[Middleware(Explode), Middleware(AddHeader, name="x-inner")])

    @app.get("/mw-boom")
    async def never() -> str:
        return "not reached"

    r = make_client(app, raise_server_exceptions=False).get("/mw-boom")
    assert r.status_code == 500
    assert "x-inner" not in r.headers


def test_cors_headers_on_the_500_of_a_middleware_inside_cors(make_client: Any) -> None:
    from microasgi.middleware import CORSMiddleware

    app = App(
        middleware=[
            Middleware(CORSMiddleware, allow_origins=["https://a.example"]),
            Middleware(Explode),
        ]
    )
    r = make_client(app, raise_server_exceptions=False).get(
        "/mw-boom", headers={"origin": "https://a.example"}
    )
    assert r.status_code == 500
    assert r.headers["access-control-allow-origin"] == "https://a.example"
