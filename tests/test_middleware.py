"""The middleware stack: order, options, per-route/per-mount, scopes, contextvars, streaming."""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from microasgi import (
    App,
    HTTPException,
    PlainTextResponse,
    Request,
    Router,
    StreamingResponse,
    WebSocket,
)
from microasgi.middleware import Middleware
from microasgi.types import ASGIApp, Message, Receive, Scope, Send
from tests.helpers import AddHeader, Exchange, http_scope


class Recorder(AddHeader):
    """Records `name:in` / `name:out` around the app, and stamps `x-through: name`."""

    instances = 0

    def __init__(self, app: ASGIApp, name: str, log: list[str]) -> None:
        type(self).instances += 1
        super().__init__(app, "x-through", name)
        self.name = name
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.log.append(f"{self.name}:in")
        await super().__call__(scope, receive, send)
        self.log.append(f"{self.name}:out")


class HTTPOnly(AddHeader):
    """A middleware that only knows HTTP (it stamps `x-http-only: 1`); it passes every
    other scope straight through. `seen` gets the type of every scope."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        super().__init__(app, "x-http-only", "1")
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append(scope["type"])
        await super().__call__(scope, receive, send)


def through(response: Any) -> list[str]:
    return response.headers.get_list("x-through")


# -- order and options --------------------------------------------------------------------


def test_middleware_list_first_is_outermost(make_client: Any) -> None:
    log: list[str] = []
    app = App(
        middleware=[
            Middleware(Recorder, name="a", log=log),
            Middleware(Recorder, name="b", log=log),
            Middleware(Recorder, name="c", log=log),
        ]
    )

    @app.get("/")
    async def index() -> str:
        log.append("endpoint")
        return "ok"

    r = make_client(app).get("/")
    assert r.text == "ok"
    assert log == ["a:in", "b:in", "c:in", "endpoint", "c:out", "b:out", "a:out"]
    # The innermost middleware adds its header first.
    assert through(r) == ["c", "b", "a"]


def test_add_middleware_becomes_outermost(make_client: Any) -> None:
    log: list[str] = []
    app = App(middleware=[Middleware(Recorder, name="inner", log=log)])
    app.add_middleware(Recorder, name="middle", log=log)
    app.add_middleware(Recorder, name="outer", log=log)

    @app.get("/")
    async def index() -> str:
        log.append("endpoint")
        return "ok"

    make_client(app).get("/")
    assert log == [
        "outer:in",
        "middle:in",
        "inner:in",
        "endpoint",
        "inner:out",
        "middle:out",
        "outer:out",
    ]


def test_options_are_passed_to_the_constructor(make_client: Any) -> None:
    received: dict[str, Any] = {}

    class Configurable:
        def __init__(self, app: ASGIApp, *args: Any, **options: Any) -> None:
            self.app = app
            received["args"] = args
            received["options"] = options

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self.app(scope, receive, send)

    app = App(middleware=[Middleware(Configurable, "pos", level=3, names=["x"])])
    app.add_middleware(Configurable, flag=True)

    @app.get("/")
    async def index() -> str:
        return "ok"

    assert make_client(app).get("/").text == "ok"
    # Built innermost first: the last constructed is the added (outermost) one.
    assert received == {"args": (), "options": {"flag": True}}


def test_constructor_options_for_each_middleware(make_client: Any) -> None:
    built: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    class Configurable:
        def __init__(self, app: ASGIApp, *args: Any, **options: Any) -> None:
            self.app = app
            built.append((args, options))

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self.app(scope, receive, send)

    app = App(middleware=[Middleware(Configurable, "pos", level=3, names=["x"])])

    @app.get("/")
    async def index() -> str:
        return "ok"

    make_client(app).get("/")
    assert built == [(("pos",), {"level": 3, "names": ["x"]})]


def test_middleware_stack_is_built_once(make_client: Any) -> None:
    log: list[str] = []
    Recorder.instances = 0
    app = App(middleware=[Middleware(Recorder, name="a", log=log)])

    @app.get("/")
    async def index() -> str:
        return "ok"

    client = make_client(app)
    for _ in range(3):
        assert client.get("/").text == "ok"
    assert Recorder.instances == 1


def test_middleware_can_answer_without_calling_the_app(make_client: Any) -> None:
    class Gate:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"].startswith("/blocked"):
                await PlainTextResponse("blocked by gate", 403)(scope, receive, send)
                return
            await self.app(scope, receive, send)

    called: list[str] = []
    app = App(middleware=[Middleware(Gate)])

    @app.get("/blocked")
    async def blocked() -> str:
        called.append("blocked")
        return "should not run"

    r = make_client(app).get("/blocked")
    assert (r.status_code, r.text) == (403, "blocked by gate")
    assert called == []


def test_middleware_sees_404_and_can_modify_scope(make_client: Any) -> None:
    class Rewrite:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["path"] == "/old":
                scope = dict(scope)
                scope["path"] = "/new"
                scope["raw_path"] = b"/new"
            await self.app(scope, receive, send)

    log: list[str] = []
    app = App(middleware=[Middleware(Recorder, name="rec", log=log), Middleware(Rewrite)])

    @app.get("/new")
    async def new() -> str:
        return "new"

    client = make_client(app)
    assert client.get("/old").text == "new"
    r = client.get("/missing")
    assert r.status_code == 404
    assert through(r) == ["rec"]


# -- per route and per mount ----------------------------------------------------------------


def test_per_route_middleware(make_client: Any) -> None:
    log: list[str] = []
    app = App(middleware=[Middleware(Recorder, name="app", log=log)])

    @app.get("/wrapped", middleware=[Middleware(Recorder, name="route", log=log)])
    async def wrapped() -> str:
        log.append("wrapped")
        return "w"

    @app.get("/plain")
    async def plain() -> str:
        log.append("plain")
        return "p"

    client = make_client(app)
    r = client.get("/wrapped")
    assert r.text == "w"
    assert log == ["app:in", "route:in", "wrapped", "route:out", "app:out"]
    assert through(r) == ["route", "app"]
    log.clear()
    r = client.get("/plain")
    assert log == ["app:in", "plain", "app:out"]
    assert through(r) == ["app"]


def test_per_route_middleware_with_path_params(make_client: Any) -> None:
    log: list[str] = []
    app = App()

    @app.get("/items/{item_id:int}", middleware=[Middleware(Recorder, name="r", log=log)])
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    r = make_client(app).get("/items/7")
    assert r.json() == {"id": 7}
    assert through(r) == ["r"]


def test_per_websocket_route_middleware(make_client: Any) -> None:
    seen: list[str] = []
    app = App()

    @app.websocket("/ws", middleware=[Middleware(HTTPOnly, seen=seen)])
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")

    with make_client(app).websocket_connect("/ws") as session:
        assert session.receive_text(timeout=5) == "hello"
    assert seen == ["websocket"]


def test_per_mount_middleware(make_client: Any) -> None:
    log: list[str] = []
    app = App()
    api = Router()

    @api.get("/ping")
    async def ping(request: Request) -> dict[str, str]:
        log.append("ping")
        return {"root_path": request.scope["root_path"]}

    @app.get("/outside")
    async def outside() -> str:
        log.append("outside")
        return "outside"

    app.mount("/api", api, middleware=[Middleware(Recorder, name="mount", log=log)])
    client = make_client(app)
    r = client.get("/api/ping")
    assert r.json() == {"root_path": "/api"}
    assert log == ["mount:in", "ping", "mount:out"]
    assert through(r) == ["mount"]
    log.clear()
    r = client.get("/outside")
    assert log == ["outside"]
    assert through(r) == []


def test_per_mount_middleware_around_plain_asgi_app(make_client: Any) -> None:
    log: list[str] = []

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        log.append("raw")
        await PlainTextResponse("raw")(scope, receive, send)

    app = App()
    app.mount("/raw", raw, middleware=[Middleware(Recorder, name="m", log=log)])
    r = make_client(app).get("/raw/anything")
    assert r.text == "raw"
    assert log == ["m:in", "raw", "m:out"]


def test_endpoint_error_inside_route_middleware_reaches_app_middleware(make_client: Any) -> None:
    log: list[str] = []
    app = App(middleware=[Middleware(Recorder, name="app", log=log)])

    @app.get("/boom", middleware=[Middleware(Recorder, name="route", log=log)])
    async def boom() -> None:
        raise HTTPException(418, "teapot")

    r = make_client(app).get("/boom")
    assert (r.status_code, r.text) == (418, "teapot")
    assert "app" in through(r)


# -- scopes other than HTTP ---------------------------------------------------------------


def test_http_only_middleware_passes_websocket_and_lifespan(make_client: Any) -> None:
    seen: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, str]]:
        yield {"resource": "R"}

    app = App(lifespan=lifespan, middleware=[Middleware(HTTPOnly, seen=seen)])

    @app.get("/")
    async def index(request: Request) -> str:
        return request.state.resource

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("ws:" + websocket.state.resource)
        await websocket.send_text(await websocket.receive_text())

    with make_client(app) as client:
        r = client.get("/")
        assert r.text == "R"
        assert r.headers["x-http-only"] == "1"
        with client.websocket_connect("/ws") as session:
            assert session.receive_text(timeout=5) == "ws:R"
            session.send_text("echo")
            assert session.receive_text(timeout=5) == "echo"
    assert "http" in seen
    assert "websocket" in seen


def test_strict_http_only_middleware_does_not_break_lifespan(make_client: Any) -> None:
    """A middleware that assumes HTTP and crashes on anything else, for HTTP-only apps."""

    class Strict:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
                return
            assert scope["type"] == "http"
            await self.app(scope, receive, send)

    started: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        started.append("up")
        yield

    app = App(lifespan=lifespan, middleware=[Middleware(Strict)])

    @app.get("/")
    async def index() -> str:
        return "ok"

    with make_client(app) as client:
        assert client.get("/").text == "ok"
    assert started == ["up"]


# -- contextvars ----------------------------------------------------------------------------

request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")


class SetVar:
    def __init__(self, app: ASGIApp, value: str) -> None:
        self.app = app
        self.value = value

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_var.set(self.value)
        await self.app(scope, receive, send)


class ReadVarAfter:
    """Logs the value of request_var after the app has run."""

    def __init__(self, app: ASGIApp, log: list[str]) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            self.log.append(request_var.get())


def test_contextvar_set_in_middleware_reaches_endpoints(make_client: Any) -> None:
    app = App(middleware=[Middleware(SetVar, value="from-mw")])

    @app.get("/async")
    async def async_endpoint() -> str:
        return request_var.get()

    @app.get("/sync")
    def sync_endpoint() -> str:
        return request_var.get()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def gen() -> AsyncIterator[str]:
            yield request_var.get()

        return StreamingResponse(gen())

    @app.get("/sync-stream")
    async def sync_stream() -> StreamingResponse:
        def gen() -> Any:
            yield request_var.get()

        return StreamingResponse(gen())

    client = make_client(app)
    assert client.get("/async").text == "from-mw"
    assert client.get("/sync").text == "from-mw"
    assert client.get("/stream").text == "from-mw"
    assert client.get("/sync-stream").text == "from-mw"


@pytest.mark.parametrize("with_middleware", [False, True])
def test_contextvar_set_in_endpoint_same_with_and_without_middleware(
    make_client: Any, with_middleware: bool
) -> None:
    log: list[str] = []
    middleware = (
        [Middleware(ReadVarAfter, log=log), Middleware(Recorder, name="r", log=[])]
        if with_middleware
        else None
    )
    app = App(middleware=middleware)

    class Marked(Exception):
        pass

    @app.exception_handler(Marked)
    async def on_marked(request: Request, exc: Marked) -> PlainTextResponse:
        return PlainTextResponse("handler saw " + request_var.get(), 400)

    @app.get("/raise")
    async def raise_it() -> None:
        request_var.set("set-before-raise")
        raise Marked()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        request_var.set("set-in-endpoint")

        async def gen() -> AsyncIterator[str]:
            yield "stream saw " + request_var.get()

        return StreamingResponse(gen())

    @app.get("/read")
    async def read() -> str:
        return request_var.get()

    client = make_client(app)
    assert client.get("/raise").text == "handler saw set-before-raise"
    assert client.get("/stream").text == "stream saw set-in-endpoint"
    # Nothing leaks from one request into the next.
    assert client.get("/read").text == "unset"
    if with_middleware:
        # A pure-ASGI middleware runs in the same context as the endpoint.
        assert log == ["set-before-raise", "set-in-endpoint", "unset"]


def test_contextvar_does_not_leak_between_requests_or_into_test(make_client: Any) -> None:
    app = App(middleware=[Middleware(Recorder, name="r", log=[])])

    @app.get("/set")
    async def set_var() -> str:
        request_var.set("leaky")
        return "set"

    @app.get("/get")
    async def get_var() -> str:
        return request_var.get()

    client = make_client(app)
    client.get("/set")
    assert client.get("/get").text == "unset"
    assert request_var.get() == "unset"


# -- streaming through middleware ------------------------------------------------------------


@pytest.mark.anyio
async def test_streaming_through_middleware_is_not_buffered() -> None:
    log: list[str] = []
    app = App(
        middleware=[
            Middleware(Recorder, name="a", log=log),
            Middleware(HTTPOnly, seen=[]),
        ]
    )
    first_chunk_arrived = anyio.Event()
    events: list[str] = []

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            yield b"first"
            events.append("generator waits")
            # Only continues once the *server* side has seen the first chunk.
            await first_chunk_arrived.wait()
            events.append("generator resumes")
            yield b"second"

        return StreamingResponse(gen())

    class Server(Exchange):
        """Lets the generator go on once the first chunk has reached the server."""

        async def send(self, message: Message) -> None:
            await super().send(message)
            if message["type"] == "http.response.body" and message.get("body") == b"first":
                events.append("first chunk sent")
                first_chunk_arrived.set()

    messages = (await Server().run(app, http_scope("GET", "/stream"), timeout=3)).sent
    # The first chunk left the app before the generator went on (or it would deadlock).
    assert events == ["first chunk sent", "generator waits", "generator resumes"]
    assert messages[0]["type"] == "http.response.start"
    assert (b"x-through", b"a") in messages[0]["headers"]
    assert (b"x-http-only", b"1") in messages[0]["headers"]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    assert body == b"firstsecond"


def test_streaming_through_middleware_with_client(make_client: Any) -> None:
    import threading

    app = App(middleware=[Middleware(Recorder, name="a", log=[])])
    proceed = threading.Event()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            yield b"one"
            ok = await anyio.to_thread.run_sync(proceed.wait, 3)
            yield b"two" if ok else b"buffered"

        return StreamingResponse(gen())

    with make_client(app).stream("GET", "/stream") as r:
        assert r.headers["x-through"] == "a"
        chunks = r.iter_bytes()
        assert next(chunks) == b"one"
        proceed.set()
        assert b"".join(chunks) == b"two"


# -- receive, scope and disconnects through middleware --------------------------------------


def test_middleware_can_rewrite_the_request_body(make_client: Any) -> None:
    class Upper:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            async def upper_receive() -> Message:
                message = await receive()
                if message["type"] == "http.request":
                    message = {**message, "body": message.get("body", b"").upper()}
                return message

            await self.app(scope, upper_receive, send)

    app = App(middleware=[Middleware(Upper)])

    @app.post("/echo")
    async def echo(request: Request) -> bytes:
        return await request.body()

    assert make_client(app).post("/echo", content=b"shout").content == b"SHOUT"


def test_middleware_can_put_things_in_request_state(make_client: Any) -> None:
    class User:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            scope.setdefault("state", {})["user"] = "alice"
            await self.app(scope, receive, send)

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, str]]:
        yield {"db": "D"}

    app = App(lifespan=lifespan, middleware=[Middleware(User)])

    @app.get("/")
    async def index(request: Request) -> list[str]:
        return [request.state.user, request.state.db]

    with make_client(app) as client:
        assert client.get("/").json() == ["alice", "D"]


def test_endpoint_error_in_mounted_app_passes_through_parent_middleware(make_client: Any) -> None:
    log: list[str] = []
    app = App(middleware=[Middleware(Recorder, name="parent", log=log)])
    child = App()

    @child.get("/crash")
    async def crash() -> None:
        raise RuntimeError("child failure")

    app.mount("/child", child)
    r = make_client(app).get("/child/crash")
    assert r.status_code == 500
    assert through(r) == ["parent"]


def test_client_leaving_mid_stream_through_middleware_stops_generator(make_client: Any) -> None:
    import threading

    app = App(middleware=[Middleware(Recorder, name="a", log=[]), Middleware(HTTPOnly, seen=[])])
    finished = threading.Event()

    @app.get("/forever")
    async def forever() -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"tick"
                    await anyio.sleep(0.01)
            finally:
                finished.set()

        return StreamingResponse(gen())

    with make_client(app).stream("GET", "/forever") as r:
        assert next(r.iter_bytes()) == b"tick"
    assert finished.wait(5)
