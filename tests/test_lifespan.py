"""Lifespan: startup/shutdown, state, mounted apps, background tasks."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from microasgi import App, Request, Router, WebSocket
from microasgi.types import ASGIApp, Message
from tests.helpers import Exchange, http_scope, run_app

_MISSING: Any = object()


async def run_lifespan(
    app: ASGIApp,
    between: Callable[[], Awaitable[None]] | None = None,
    *,
    state: Any = _MISSING,
    log: list[Any] | None = None,
) -> tuple[Message, Message | None]:
    """Drive the lifespan protocol by hand: startup, `between()`, shutdown.

    Returns the app's answer to startup and (if startup completed) to shutdown.
    `log` gets the type of each message the app sends, in order.
    """
    to_app_send, to_app_receive = anyio.create_memory_object_stream[Message](10)
    from_app_send, from_app_receive = anyio.create_memory_object_stream[Message](10)
    scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
    if state is not _MISSING:
        scope["state"] = state

    async def send(message: Message) -> None:
        if log is not None:
            log.append(message["type"])
        await from_app_send.send(message)

    shutdown_reply: Message | None = None
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            done = anyio.Event()

            async def run() -> None:
                try:
                    await app(scope, to_app_receive.receive, send)
                finally:
                    done.set()

            tg.start_soon(run)
            await to_app_send.send({"type": "lifespan.startup"})
            startup_reply = await from_app_receive.receive()
            if startup_reply["type"] == "lifespan.startup.complete":
                if between is not None:
                    await between()
                await to_app_send.send({"type": "lifespan.shutdown"})
                shutdown_reply = await from_app_receive.receive()
            await done.wait()
    return startup_reply, shutdown_reply


# -- state ------------------------------------------------------------------------------


def test_lifespan_state_reaches_requests_and_websockets(make_client: Any) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        yield {"pool": "the-pool", "counter": [0]}
        events.append("shutdown")

    app = App(lifespan=lifespan)

    @app.get("/")
    async def index(request: Request) -> dict[str, Any]:
        request.state.counter[0] += 1
        return {"pool": request.state.pool, "count": request.state.counter[0]}

    @app.get("/sync")
    def sync_index(request: Request) -> str:
        return str(request.state.pool)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.state.pool)

    with make_client(app) as client:
        assert events == ["startup"]
        assert client.get("/").json() == {"pool": "the-pool", "count": 1}
        assert client.get("/").json() == {"pool": "the-pool", "count": 2}
        assert client.get("/sync").text == "the-pool"
        with client.websocket_connect("/ws") as session:
            assert session.receive_text(timeout=5) == "the-pool"
    assert events == ["startup", "shutdown"]


def test_lifespan_receives_the_app(make_client: Any) -> None:
    seen: list[Any] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        seen.append(app)
        yield

    app = App(lifespan=lifespan)
    with make_client(app):
        pass
    assert seen == [app]


@pytest.mark.anyio
async def test_state_reaches_requests_when_server_passes_no_state() -> None:
    """A server without the lifespan-state extension: the app passes the state itself."""

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, Any]]:
        yield {"db": "connected"}

    app = App(lifespan=lifespan)
    sub = App()

    @app.get("/")
    async def index(request: Request) -> str:
        request.state.scratch = "per-request"
        return request.state.db

    @app.get("/scratch")
    async def scratch(request: Request) -> str:
        return str("scratch" in request.state)

    @sub.get("/inner")
    async def inner(request: Request) -> str:
        return "inner:" + request.state.db

    app.mount("/sub", sub)
    results: list[Exchange] = []

    async def between() -> None:
        results.append(await run_app(app, http_scope("GET", "/")))
        results.append(await run_app(app, http_scope("GET", "/scratch")))
        results.append(await run_app(app, http_scope("GET", "/sub/inner")))

    startup, shutdown = await run_lifespan(app, between)
    assert startup["type"] == "lifespan.startup.complete"
    assert shutdown is not None and shutdown["type"] == "lifespan.shutdown.complete"
    assert [(ex.status, ex.body) for ex in results] == [
        (200, b"connected"),
        (200, b"False"),
        (200, b"inner:connected"),
    ]


@pytest.mark.anyio
async def test_state_dict_from_server_is_filled() -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, Any]]:
        yield {"k": "v"}

    server_state: dict[str, Any] = {}
    startup, _ = await run_lifespan(App(lifespan=lifespan), state=server_state)
    assert startup["type"] == "lifespan.startup.complete"
    assert server_state == {"k": "v"}


def test_yielding_none_is_fine(make_client: Any) -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        yield

    app = App(lifespan=lifespan)

    @app.get("/")
    async def index() -> str:
        return "ok"

    with make_client(app) as client:
        assert client.get("/").text == "ok"


def test_async_generator_function_as_lifespan(make_client: Any) -> None:
    events: list[str] = []

    async def lifespan(app: App) -> AsyncIterator[dict[str, str]]:
        events.append("up")
        yield {"from_gen": "yes"}
        events.append("down")

    app = App(lifespan=lifespan)

    @app.get("/")
    async def index(request: Request) -> str:
        return request.state.from_gen

    with make_client(app) as client:
        assert client.get("/").text == "yes"
    assert events == ["up", "down"]


def test_router_alone_runs_its_lifespan(make_client: Any) -> None:
    @asynccontextmanager
    async def lifespan(router: Router) -> AsyncIterator[dict[str, str]]:
        yield {"who": "router"}

    router = Router(lifespan=lifespan)

    @router.get("/")
    async def index(request: Request) -> str:
        return request.state.who

    with make_client(router) as client:
        assert client.get("/").text == "router"


# -- failures ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_startup_failure_reports_startup_failed_with_message() -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        raise ConnectionError("database unreachable")
        yield

    startup, shutdown = await run_lifespan(App(lifespan=lifespan))
    assert startup["type"] == "lifespan.startup.failed"
    assert "database unreachable" in startup["message"]
    assert shutdown is None


def test_startup_failure_raises_in_testclient(make_client: Any) -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        raise ConnectionError("database unreachable")
        yield

    app = App(lifespan=lifespan)
    with pytest.raises(RuntimeError, match="database unreachable"), make_client(app):
        pytest.fail("the with block must not be entered")


@pytest.mark.anyio
async def test_shutdown_failure_reports_shutdown_failed() -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        yield
        raise OSError("could not flush")

    startup, shutdown = await run_lifespan(App(lifespan=lifespan))
    assert startup["type"] == "lifespan.startup.complete"
    assert shutdown is not None
    assert shutdown["type"] == "lifespan.shutdown.failed"
    assert "could not flush" in shutdown["message"]


def test_shutdown_failure_raises_in_testclient(make_client: Any) -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        yield
        raise OSError("could not flush")

    app = App(lifespan=lifespan)
    with pytest.raises(RuntimeError, match="could not flush"), make_client(app):
        pass


@pytest.mark.anyio
async def test_yielding_non_mapping_fails_startup() -> None:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[Any]:
        yield ["not", "a", "mapping"]

    startup, _ = await run_lifespan(App(lifespan=lifespan))
    assert startup["type"] == "lifespan.startup.failed"
    assert "mapping" in startup["message"]


@pytest.mark.anyio
async def test_two_lifespans_with_same_key_fail_startup_naming_it() -> None:
    exited: list[str] = []

    @asynccontextmanager
    async def parent_lifespan(app: App) -> AsyncIterator[dict[str, int]]:
        try:
            yield {"db": 1, "parent_only": 1}
        finally:
            exited.append("parent")

    @asynccontextmanager
    async def child_lifespan(router: Router) -> AsyncIterator[dict[str, int]]:
        try:
            yield {"db": 2, "child_only": 2}
        finally:
            exited.append("child")

    app = App(lifespan=parent_lifespan)
    app.mount("/child", Router(lifespan=child_lifespan))
    startup, _ = await run_lifespan(app)
    assert startup["type"] == "lifespan.startup.failed"
    assert "db" in startup["message"]
    assert "parent_only" not in startup["message"]
    # What did start is undone.
    assert sorted(exited) == ["child", "parent"]


@pytest.mark.anyio
async def test_child_startup_failure_undoes_parent() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def parent_lifespan(app: App) -> AsyncIterator[None]:
        events.append("parent:up")
        yield
        events.append("parent:down")

    @asynccontextmanager
    async def child_lifespan(router: Router) -> AsyncIterator[None]:
        raise ValueError("child cannot start")
        yield

    app = App(lifespan=parent_lifespan)
    app.mount("/c", Router(lifespan=child_lifespan))
    startup, _ = await run_lifespan(app)
    assert startup["type"] == "lifespan.startup.failed"
    assert "child cannot start" in startup["message"]
    assert events == ["parent:up", "parent:down"]


@pytest.mark.anyio
async def test_a_route_lookup_that_cannot_compile_fails_startup_and_undoes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Startup compiles each router's route lookup after the lifespans have
    started; if that fails, the startup has failed and what started is undone."""
    events: list[str] = []

    def cannot_compile(self: Any) -> None:
        raise RuntimeError("no lookup")

    monkeypatch.setattr(Router, "_prepare", cannot_compile)
    startup, _ = await run_lifespan(App(lifespan=recording_lifespan("app", events)))
    assert startup["type"] == "lifespan.startup.failed"
    assert "no lookup" in startup["message"]
    assert events == ["app:up", "app:down"]


# -- mounted apps and routers -------------------------------------------------------------


def recording_lifespan(
    name: str, events: list[str], value: dict[str, Any] | None = None
) -> Callable[[Any], Any]:
    @asynccontextmanager
    async def lifespan(owner: Any) -> AsyncIterator[dict[str, Any] | None]:
        events.append(f"{name}:up")
        yield value
        events.append(f"{name}:down")

    return lifespan


def test_mounted_lifespans_run_in_order_and_state_reaches_them(make_client: Any) -> None:
    events: list[str] = []
    app = App(lifespan=recording_lifespan("parent", events, {"parent_key": "P"}))
    router = Router(lifespan=recording_lifespan("router", events, {"router_key": "R"}))
    child = App(lifespan=recording_lifespan("child", events, {"child_key": "C"}))
    grandchild = Router(lifespan=recording_lifespan("grandchild", events, {"gc_key": "G"}))

    @router.get("/x")
    async def router_x(request: Request) -> list[str]:
        return [request.state.router_key, request.state.parent_key]

    @child.get("/y")
    async def child_y(request: Request) -> list[str]:
        return [request.state.child_key, request.state.parent_key]

    @grandchild.get("/z")
    async def gc_z(request: Request) -> str:
        return request.state.gc_key

    @child.websocket("/ws")
    async def child_ws(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(ws.state.child_key)

    child.mount("/gc", grandchild)
    app.mount("/r", router)
    app.mount("/c", child)

    with make_client(app) as client:
        assert events == ["parent:up", "router:up", "child:up", "grandchild:up"]
        assert client.get("/r/x").json() == ["R", "P"]
        assert client.get("/c/y").json() == ["C", "P"]
        assert client.get("/c/gc/z").text == "G"
        with client.websocket_connect("/c/ws") as ws:
            assert ws.receive_text(timeout=5) == "C"
    assert events[4:] == ["grandchild:down", "child:down", "router:down", "parent:down"]


def test_same_child_mounted_twice_runs_once(make_client: Any) -> None:
    events: list[str] = []
    shared = Router(lifespan=recording_lifespan("shared", events, {"shared_key": "S"}))

    @shared.get("/v")
    async def v(request: Request) -> str:
        return request.state.shared_key

    app = App()
    app.mount("/one", shared)
    app.mount("/two", shared)
    with make_client(app) as client:
        assert client.get("/one/v").text == "S"
        assert client.get("/two/v").text == "S"
    assert events == ["shared:up", "shared:down"]


def test_mounted_plain_asgi_app_is_not_sent_lifespan(make_client: Any) -> None:
    calls: list[str] = []

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"raw"})

    app = App()
    app.mount("/raw", raw)
    with make_client(app) as client:
        assert client.get("/raw/").text == "raw"
    assert calls == ["http"]


# -- background tasks ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_background_task_starts_after_startup_and_is_cancelled_before_exit() -> None:
    log: list[Any] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, int]]:
        log.append("lifespan:enter")
        yield {"x": 42}
        log.append("lifespan:exit")

    app = App(lifespan=lifespan)
    running = anyio.Event()

    @app.background_task
    async def worker(state: Any) -> None:
        log.append(("worker", state.x))
        running.set()
        try:
            await anyio.sleep_forever()
        finally:
            log.append("worker:cancelled")

    async def between() -> None:
        with anyio.fail_after(2):
            await running.wait()

    startup, shutdown = await run_lifespan(app, between, log=log)
    assert startup["type"] == "lifespan.startup.complete"
    assert shutdown is not None and shutdown["type"] == "lifespan.shutdown.complete"
    assert log == [
        "lifespan:enter",
        "lifespan.startup.complete",
        ("worker", 42),
        "worker:cancelled",
        "lifespan:exit",
        "lifespan.shutdown.complete",
    ]


@pytest.mark.anyio
async def test_background_task_without_arguments() -> None:
    started = anyio.Event()
    app = App()

    @app.background_task
    async def worker() -> None:
        started.set()
        await anyio.sleep_forever()

    async def between() -> None:
        with anyio.fail_after(2):
            await started.wait()

    # run_lifespan fails (instead of hanging) if the task is not cancelled at shutdown.
    _, shutdown = await run_lifespan(app, between)
    assert shutdown is not None and shutdown["type"] == "lifespan.shutdown.complete"


@pytest.mark.anyio
async def test_background_task_crash_is_logged_and_app_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="microasgi")
    cancelled = anyio.Event()
    healthy_running = anyio.Event()
    app = App()

    @app.background_task
    async def crasher(state: Any) -> None:
        raise ZeroDivisionError("task blew up")

    @app.background_task
    async def healthy(state: Any) -> None:
        healthy_running.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    @app.get("/")
    async def index() -> str:
        return "alive"

    def crash_logged() -> bool:
        return any(
            r.name == "microasgi"
            and r.levelno >= logging.ERROR
            and r.exc_info is not None
            and isinstance(r.exc_info[1], ZeroDivisionError)
            for r in caplog.records
        )

    async def between() -> None:
        with anyio.fail_after(2):
            await healthy_running.wait()
            for _ in range(200):
                if crash_logged():
                    break
                await anyio.sleep(0.01)
        assert crash_logged()
        ex = await run_app(app, http_scope("GET", "/"))
        assert (ex.status, ex.body) == (200, b"alive")
        # The other task was not taken down by the crash.
        assert not cancelled.is_set()

    startup, shutdown = await run_lifespan(app, between, state={})
    assert startup["type"] == "lifespan.startup.complete"
    assert shutdown is not None and shutdown["type"] == "lifespan.shutdown.complete"
    assert cancelled.is_set()
    assert "task blew up" in caplog.text


def test_background_tasks_of_mounted_router_and_app_run(make_client: Any) -> None:
    seen: dict[str, Any] = {}
    ready = threading.Event()

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, str]]:
        yield {"token": "T"}

    app = App(lifespan=lifespan)
    router = Router()
    child = App()

    @router.background_task
    async def router_task(state: Any) -> None:
        seen["router"] = state.token
        if len(seen) == 2:
            ready.set()

    @child.background_task
    async def child_task(state: Any) -> None:
        seen["child"] = state.token
        if len(seen) == 2:
            ready.set()

    app.mount("/r", router)
    app.mount("/c", child)
    with make_client(app):
        assert ready.wait(5)
    assert seen == {"router": "T", "child": "T"}


def test_background_task_sees_state_from_mounted_lifespan(make_client: Any) -> None:
    got: list[str] = []
    ready = threading.Event()

    @asynccontextmanager
    async def child_lifespan(router: Router) -> AsyncIterator[dict[str, str]]:
        yield {"child_resource": "CR"}

    app = App()
    child = Router(lifespan=child_lifespan)
    app.mount("/child", child)

    @app.background_task
    async def task(state: Any) -> None:
        got.append(state.child_resource)
        ready.set()

    with make_client(app):
        assert ready.wait(5)
    assert got == ["CR"]


def test_background_tasks_not_started_without_lifespan(make_client: Any) -> None:
    started = threading.Event()
    app = App()

    @app.background_task
    async def worker() -> None:
        started.set()

    @app.get("/")
    async def index() -> str:
        return "ok"

    assert make_client(app).get("/").text == "ok"
    assert not started.wait(0.1)


@pytest.mark.anyio
async def test_startup_failure_is_logged_and_starts_no_background_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        raise KeyError("missing-config")
        yield

    app = App(lifespan=lifespan)

    @app.background_task
    async def worker() -> None:
        started.append("worker")

    caplog.set_level(logging.ERROR, logger="microasgi")
    startup, _ = await run_lifespan(app)
    assert startup["type"] == "lifespan.startup.failed"
    assert "missing-config" in startup["message"]
    await anyio.sleep(0.01)
    assert started == []
    assert any(r.name == "microasgi" and r.exc_info for r in caplog.records)


@pytest.mark.anyio
async def test_child_shutdown_failure_still_runs_parent_exit() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def child_lifespan(router: Router) -> AsyncIterator[None]:
        yield
        raise RuntimeError("child could not close")

    @asynccontextmanager
    async def parent_lifespan(app: App) -> AsyncIterator[None]:
        events.append("parent:up")
        try:
            yield
        finally:  # like nested `async with`, the child's error is raised at the yield
            events.append("parent:down")

    app = App(lifespan=parent_lifespan)
    app.mount("/c", Router(lifespan=child_lifespan))
    startup, shutdown = await run_lifespan(app)
    assert startup["type"] == "lifespan.startup.complete"
    assert shutdown is not None
    assert shutdown["type"] == "lifespan.shutdown.failed"
    assert "child could not close" in shutdown["message"]
    assert events == ["parent:up", "parent:down"]


@pytest.mark.anyio
async def test_standalone_router_passes_lifespan_state_without_server_support() -> None:
    """A Router served on its own fills in state when the server passes none."""

    @asynccontextmanager
    async def lifespan(router: Any) -> AsyncIterator[dict[str, str]]:
        yield {"db": "connected"}

    router = Router(lifespan=lifespan)

    @router.get("/")
    async def index(request: Request) -> dict[str, str]:
        return {"db": request.state.db}

    lifespan_in = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    lifespan_out: list[Message] = []

    async def receive() -> Message:
        return lifespan_in.pop(0)

    async def send(message: Message) -> None:
        lifespan_out.append(message)
        if message["type"] == "lifespan.startup.complete":
            exchange = await run_app(router, http_scope("GET", "/"), [])
            assert exchange.body == b'{"db":"connected"}'

    await router({"type": "lifespan"}, receive, send)  # no "state" key: no server support
    assert [m["type"] for m in lifespan_out] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
