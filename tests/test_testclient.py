"""TestClient and AsyncTestClient: HTTP, lifespan, streaming, errors, WebSockets."""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

import microasgi
from microasgi import App, PlainTextResponse, Request, StreamingResponse, WebSocket
from microasgi.testclient import AsyncTestClient, TestClient, WebSocketDenied
from microasgi.types import Message, Receive, Scope, Send


def make_app(events: list[str] | None = None) -> App:
    events = events if events is not None else []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, str]]:
        events.append("startup")
        yield {"greeting": "hello"}
        events.append("shutdown")

    app = App(lifespan=lifespan)

    @app.get("/")
    async def index(request: Request) -> dict[str, Any]:
        return {
            "greeting": getattr(request.state, "greeting", None),
            "client": list(request.client or ()),
            "host": request.headers.get("host"),
        }

    @app.post("/echo")
    async def echo(request: Request) -> PlainTextResponse:
        body = await request.body()
        return PlainTextResponse(
            body.decode(), headers={"x-content-type": request.headers.get("content-type", "")}
        )

    @app.get("/query")
    async def query(request: Request) -> dict[str, list[str]]:
        return {"a": request.query_params.getlist("a")}

    return app


# -- basics -----------------------------------------------------------------------------


def test_sync_client_basic_requests(make_client: Any) -> None:
    client = make_client(make_app())
    r = client.get("/")
    assert r.status_code == 200
    body = r.json()
    assert body["client"] == ["testclient", 50000]
    assert body["host"] == "testserver"
    r = client.post("/echo", content=b"raw bytes")
    assert r.text == "raw bytes"
    r = client.post("/echo", json={"k": [1, 2]})
    assert r.json() == {"k": [1, 2]}
    assert r.headers["x-content-type"] == "application/json"
    assert client.get("/query", params=[("a", "1"), ("a", "2")]).json() == {"a": ["1", "2"]}
    assert client.get("/missing").status_code == 404


@pytest.mark.anyio
async def test_async_client_basic_requests() -> None:
    async with AsyncTestClient(make_app()) as client:
        r = await client.get("/")
        assert r.json()["greeting"] == "hello"
        r = await client.post("/echo", content=b"async body")
        assert r.text == "async body"
        assert (await client.get("/missing")).status_code == 404


@pytest.mark.anyio
async def test_async_client_requires_async_with() -> None:
    client = AsyncTestClient(make_app())
    with pytest.raises(RuntimeError):
        await client.get("/")


@pytest.mark.anyio
async def test_async_client_lifespan_false() -> None:
    events: list[str] = []
    async with AsyncTestClient(make_app(events), lifespan=False) as client:
        assert (await client.get("/")).json()["greeting"] is None
    assert events == []


def test_request_without_with_does_not_run_lifespan(make_client: Any) -> None:
    events: list[str] = []
    client = make_client(make_app(events))
    assert client.get("/").json()["greeting"] is None
    client.close()
    assert events == []


def test_with_block_runs_lifespan(make_client: Any) -> None:
    events: list[str] = []
    with make_client(make_app(events)) as client:
        assert events == ["startup"]
        assert client.get("/").json()["greeting"] == "hello"
        assert client.app_state == {"greeting": "hello"}
    assert events == ["startup", "shutdown"]


@pytest.mark.anyio
async def test_async_with_block_runs_lifespan() -> None:
    events: list[str] = []
    async with AsyncTestClient(make_app(events)) as client:
        assert events == ["startup"]
        assert (await client.get("/")).json()["greeting"] == "hello"
    assert events == ["startup", "shutdown"]


def test_with_block_twice_in_a_row(make_client: Any) -> None:
    events: list[str] = []
    app = make_app(events)
    with make_client(app) as client:
        client.get("/")
    with make_client(app) as client:
        assert client.get("/").json()["greeting"] == "hello"
    assert events == ["startup", "shutdown", "startup", "shutdown"]


def test_app_without_lifespan_support(make_client: Any) -> None:
    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError("only http")
        await PlainTextResponse("raw ok")(scope, receive, send)

    with make_client(raw, raise_server_exceptions=False) as client:
        assert client.get("/").text == "raw ok"


def test_cookies_persist_between_requests(make_client: Any) -> None:
    app = App()

    @app.get("/login")
    async def login() -> PlainTextResponse:
        response = PlainTextResponse("logged in")
        response.set_cookie("session", "abc123")
        return response

    @app.get("/me")
    async def me(request: Request) -> dict[str, str]:
        return request.cookies

    client = make_client(app)
    assert client.get("/me").json() == {}
    client.get("/login")
    assert client.get("/me").json() == {"session": "abc123"}


def test_redirects_are_followed_by_default(make_client: Any) -> None:
    app = App()

    @app.get("/target")
    async def target() -> str:
        return "arrived"

    from microasgi import RedirectResponse

    @app.get("/go")
    async def go() -> RedirectResponse:
        return RedirectResponse("/target")

    client = make_client(app)
    assert client.get("/go").text == "arrived"
    r = client.get("/go", follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == "/target"


# -- streaming --------------------------------------------------------------------------


def test_stream_yields_chunks_as_produced(make_client: Any) -> None:
    app = App()
    proceed = threading.Event()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            yield b"first"
            # Wait for the test to have *received* the first chunk.
            released = await anyio.to_thread.run_sync(proceed.wait, 3)
            yield b"second" if released else b"client buffered the stream"

        return StreamingResponse(gen())

    with make_client(app).stream("GET", "/stream") as r:
        assert r.status_code == 200
        chunks = r.iter_bytes()
        assert next(chunks) == b"first"
        proceed.set()
        assert b"".join(chunks) == b"second"


@pytest.mark.anyio
async def test_async_stream_yields_chunks_as_produced() -> None:
    app = App()
    proceed = anyio.Event()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            yield b"first"
            with anyio.move_on_after(3) as scope:
                await proceed.wait()
            yield b"client buffered the stream" if scope.cancelled_caught else b"second"

        return StreamingResponse(gen())

    async with AsyncTestClient(app) as client, client.stream("GET", "/stream") as r:
        chunks = r.aiter_bytes()
        assert await chunks.__anext__() == b"first"
        proceed.set()
        rest = b"".join([chunk async for chunk in chunks])
        assert rest == b"second"


def test_closing_stream_early_disconnects_the_app(make_client: Any) -> None:
    app = App()
    finished = threading.Event()
    produced: list[int] = []

    @app.get("/forever")
    async def forever() -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            try:
                i = 0
                while True:
                    produced.append(i)
                    yield f"{i},".encode()
                    i += 1
                    await anyio.sleep(0.01)
            finally:
                finished.set()

        return StreamingResponse(gen())

    client = make_client(app)
    with client.stream("GET", "/forever") as r:
        for chunk in r.iter_bytes():
            assert chunk == b"0,"
            break
    assert finished.wait(5), "the generator's finally did not run after the client left"
    count = len(produced)
    time.sleep(0.05)
    assert len(produced) == count


@pytest.mark.anyio
async def test_async_closing_stream_early_disconnects_the_app() -> None:
    app = App()
    finished = anyio.Event()

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

    async with AsyncTestClient(app) as client:
        async with client.stream("GET", "/forever") as r:
            async for chunk in r.aiter_bytes():
                assert chunk == b"tick"
                break
        with anyio.fail_after(5):
            await finished.wait()


def test_request_is_disconnected_after_response(make_client: Any) -> None:
    app = App()
    seen: list[Message] = []
    done = threading.Event()

    async def raw(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        with anyio.fail_after(3):
            seen.append(await receive())
        done.set()

    app.mount("/raw", raw)
    assert make_client(app).post("/raw/x", content=b"payload").text == "ok"
    assert done.wait(5)
    assert seen[0] == {"type": "http.request", "body": b"payload", "more_body": False}
    assert seen[1]["type"] == "http.disconnect"


# -- server errors ------------------------------------------------------------------------


async def raising_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        return
    raise ValueError("raw app failed")


def test_raise_server_exceptions_default(make_client: Any) -> None:
    client = make_client(raising_app)
    with pytest.raises(ValueError, match="raw app failed"):
        client.get("/")


def test_raise_server_exceptions_false_gives_500(make_client: Any) -> None:
    client = make_client(raising_app, raise_server_exceptions=False)
    r = client.get("/")
    assert r.status_code == 500


@pytest.mark.anyio
async def test_async_raise_server_exceptions() -> None:
    async with AsyncTestClient(raising_app) as client:
        with pytest.raises(ValueError, match="raw app failed"):
            await client.get("/")
    async with AsyncTestClient(raising_app, raise_server_exceptions=False) as client:
        assert (await client.get("/")).status_code == 500


def test_app_raising_after_response_started(make_client: Any) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise ValueError("mid-body failure")

    with pytest.raises(ValueError, match="mid-body failure"):
        make_client(app).get("/")
    with pytest.raises(httpx.RemoteProtocolError):
        make_client(app, raise_server_exceptions=False).get("/")


def test_app_returning_without_response_is_runtime_error(make_client: Any) -> None:
    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    with pytest.raises(RuntimeError):
        make_client(silent).get("/")


def test_app_that_never_responds_times_out(make_client: Any) -> None:
    saw_disconnect = threading.Event()

    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        saw_disconnect.set()

    client = make_client(stuck)
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.get("/", timeout=0.5)
    assert time.monotonic() - start < 3
    # The app is told the client went away.
    assert saw_disconnect.wait(3)


@pytest.mark.anyio
async def test_async_app_that_never_responds_times_out() -> None:
    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep_forever()

    with anyio.fail_after(5):
        async with AsyncTestClient(stuck, lifespan=False) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/", timeout=0.3)


# -- WebSockets -----------------------------------------------------------------------------


def ws_app() -> App:
    app = App()

    @app.websocket("/echo")
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("text:" + await ws.receive_text())
        await ws.send_bytes(b"bytes:" + await ws.receive_bytes())
        data = await ws.receive_json()
        await ws.send_json({"got": data})
        await ws.close()

    @app.websocket("/proto")
    async def proto(ws: WebSocket) -> None:
        offered = ws.scope.get("subprotocols", [])
        await ws.accept(subprotocol="chat.v2" if "chat.v2" in offered else None)
        await ws.send_json({"offered": offered, "header": ws.headers.get("x-token")})

    @app.websocket("/headers")
    async def headers(ws: WebSocket) -> None:
        await ws.accept(headers={"X-Server": "microasgi", "Set-Cookie": "a=b"})
        await ws.send_text("ok")

    @app.websocket("/quiet")
    async def quiet(ws: WebSocket) -> None:
        await ws.accept()
        with contextlib.suppress(microasgi.WebSocketDisconnect):
            await ws.receive_text()

    @app.websocket("/deny")
    async def deny(ws: WebSocket) -> None:
        await ws.close()

    @app.websocket("/deny-response")
    async def deny_response(ws: WebSocket) -> None:
        await ws.send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"www-authenticate", b"Bearer")],
            }
        )
        await ws.send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await ws.send({"type": "websocket.http.response.body", "body": b"token"})

    @app.websocket("/closer")
    async def closer(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("bye")
        await ws.close(code=4001, reason="go away")

    return app


def test_websocket_send_and_receive(make_client: Any) -> None:
    client = make_client(ws_app())
    with client.websocket_connect("/echo") as ws:
        ws.send_text("hello")
        assert ws.receive_text(timeout=5) == "text:hello"
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_bytes(timeout=5) == b"bytes:\x00\x01"
        ws.send_json({"a": [1, "é"]})
        assert ws.receive_json(timeout=5) == {"got": {"a": [1, "é"]}}
        with pytest.raises(microasgi.WebSocketDisconnect) as info:
            ws.receive_text(timeout=5)
        assert info.value.code == 1000


def test_websocket_raw_receive(make_client: Any) -> None:
    client = make_client(ws_app())
    with client.websocket_connect("/closer") as ws:
        message = ws.receive(timeout=5)
        assert message == {"type": "websocket.send", "text": "bye"}


def test_websocket_receive_wrong_kind_is_type_error(make_client: Any) -> None:
    client = make_client(ws_app())
    with client.websocket_connect("/closer") as ws, pytest.raises(TypeError):
        ws.receive_bytes(timeout=5)


def test_websocket_subprotocol_negotiation(make_client: Any) -> None:
    client = make_client(ws_app())
    with client.websocket_connect(
        "/proto", subprotocols=["chat.v1", "chat.v2"], headers={"X-Token": "t0k"}
    ) as ws:
        assert ws.accepted_subprotocol == "chat.v2"
        assert ws.receive_json(timeout=5) == {"offered": ["chat.v1", "chat.v2"], "header": "t0k"}
    with client.websocket_connect("/proto") as ws:
        assert ws.accepted_subprotocol is None
        assert ws.receive_json(timeout=5)["offered"] == []


def test_websocket_accept_headers(make_client: Any) -> None:
    client = make_client(ws_app())
    with client.websocket_connect("/headers") as ws:
        headers = dict(ws.extra_headers)
        assert headers[b"x-server"] == b"microasgi"
        assert headers[b"set-cookie"] == b"a=b"
        assert ws.receive_text(timeout=5) == "ok"


def test_websocket_receive_timeout(make_client: Any) -> None:
    client = make_client(ws_app())
    with client.websocket_connect("/quiet") as ws:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            ws.receive_text(timeout=0.2)
        assert time.monotonic() - start < 2
        with pytest.raises(TimeoutError):
            ws.receive_json(timeout=0.2)
        with pytest.raises(TimeoutError):
            ws.receive_bytes(timeout=0.2)


def test_websocket_denied_when_app_closes_before_accept(make_client: Any) -> None:
    client = make_client(ws_app())
    with pytest.raises(WebSocketDenied) as info:
        client.websocket_connect("/deny")
    assert info.value.status_code == 403


def test_websocket_denial_response(make_client: Any) -> None:
    client = make_client(ws_app())
    with pytest.raises(WebSocketDenied) as info:
        client.websocket_connect("/deny-response")
    assert info.value.status_code == 401
    assert info.value.body == b"no token"
    assert info.value.headers["www-authenticate"] == "Bearer"


def test_websocket_receive_after_app_closed(make_client: Any) -> None:
    client = make_client(ws_app())
    with client.websocket_connect("/closer") as ws:
        assert ws.receive_text(timeout=5) == "bye"
        with pytest.raises(microasgi.WebSocketDisconnect) as info:
            ws.receive_text(timeout=5)
        assert info.value.code == 4001
        assert info.value.reason == "go away"


def test_websocket_connect_to_silent_app_times_out(make_client: Any) -> None:
    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep_forever()

    client = make_client(silent)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        client.websocket_connect("/", timeout=0.2)
    assert time.monotonic() - start < 2


def test_websocket_client_close_reaches_handler(make_client: Any) -> None:
    app = App()
    codes: list[int] = []

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.receive_text()
        except microasgi.WebSocketDisconnect as exc:
            codes.append(exc.code)

    session = make_client(app).websocket_connect("/ws")
    session.close(code=4321)
    # close() waits for the handler to finish.
    assert codes == [4321]


def test_websocket_uses_base_url_and_query(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(
            {
                "scheme": websocket.url.scheme,
                "path": websocket.url.path,
                "q": websocket.query_params.get("q"),
            }
        )

    with make_client(app).websocket_connect("/ws?q=1") as session:
        assert session.receive_json(timeout=5) == {"scheme": "ws", "path": "/ws", "q": "1"}


@pytest.mark.anyio
async def test_async_websocket_session() -> None:
    async with AsyncTestClient(ws_app()) as client:
        async with client.websocket_connect("/echo") as ws:
            await ws.send_text("hi")
            assert await ws.receive_text(timeout=5) == "text:hi"
            await ws.send_bytes(b"b")
            assert await ws.receive_bytes(timeout=5) == b"bytes:b"
            await ws.send_json([1, 2])
            assert await ws.receive_json(timeout=5) == {"got": [1, 2]}
        async with client.websocket_connect("/quiet") as ws:
            with pytest.raises(TimeoutError):
                await ws.receive_text(timeout=0.2)
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/deny"):
                pass
        assert info.value.status_code == 403
        async with client.websocket_connect("/closer") as ws:
            assert await ws.receive_text(timeout=5) == "bye"
            with pytest.raises(microasgi.WebSocketDisconnect) as closed:
                await ws.receive_text(timeout=5)
            assert closed.value.code == 4001


def test_testclient_is_an_httpx_client() -> None:
    assert issubclass(TestClient, httpx.Client)
    assert issubclass(AsyncTestClient, httpx.AsyncClient)


# -- root_path, lifespan on errors, raw WebSocket apps ----------------------------------


def test_root_path_is_prepended_to_the_path(make_client: Any) -> None:
    app = App()

    @app.get("/x")
    async def x(request: Request) -> dict[str, str]:
        return {"path": request.scope["path"], "root_path": request.scope["root_path"]}

    client = make_client(app, root_path="/api")
    assert client.get("/x").json() == {"path": "/api/x", "root_path": "/api"}
    # A URL that already carries the root path is not prefixed twice.
    assert client.get("/api/x").json() == {"path": "/api/x", "root_path": "/api"}


def test_root_path_prefix_only_at_segment_boundary(make_client: Any) -> None:
    """`/apix` does not start with the root path `/api`: the scope path must be `/api/apix`."""
    app = App()

    @app.get("/apix")
    async def apix(request: Request) -> dict[str, str]:
        return {"path": request.scope["path"], "url_path": request.url.path}

    client = make_client(app, root_path="/api")
    assert client.get("/apix").json() == {"path": "/api/apix", "url_path": "/api/apix"}


def test_lifespan_shuts_down_when_the_with_block_raises(make_client: Any) -> None:
    events: list[str] = []
    with pytest.raises(ZeroDivisionError), make_client(make_app(events)) as client:
        client.get("/")
        1 / 0  # noqa: B018
    assert events == ["startup", "shutdown"]


def test_raw_websocket_app_raising_after_accept(make_client: Any) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise ValueError("raw websocket failure")

    client = make_client(app)
    with (
        pytest.raises(ValueError, match="raw websocket failure"),
        client.websocket_connect("/") as ws,
    ):
        ws.receive_text(timeout=5)


def test_raw_websocket_app_ending_without_close(make_client: Any) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    client = make_client(app)
    with client.websocket_connect("/") as ws, pytest.raises(RuntimeError):
        ws.receive_text(timeout=5)


def test_closing_sync_generator_stream_early_disconnects_the_app(make_client: Any) -> None:
    app = App()
    finished = threading.Event()

    @app.get("/forever")
    async def forever() -> StreamingResponse:
        def gen() -> Any:
            try:
                while True:
                    yield b"tick"
                    time.sleep(0.01)
            finally:
                finished.set()

        return StreamingResponse(gen())

    with make_client(app).stream("GET", "/forever") as r:
        assert next(r.iter_bytes()) == b"tick"
    assert finished.wait(5), "the sync generator's finally did not run after the client left"


def test_a_client_dropped_without_close_stops_its_thread(anyio_backend: str) -> None:
    """Its event loop thread must not outlive it (the interpreter would hang at exit)."""
    import gc

    app = App()

    @app.get("/")
    async def index() -> str:
        return "ok"

    before = threading.active_count()
    client = TestClient(app, backend=anyio_backend)
    assert client.get("/").text == "ok"
    assert threading.active_count() > before
    del client
    gc.collect()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


# -- after the with block; handlers that never return; the handshake scope --------------------


def test_client_is_usable_after_its_with_block(anyio_backend: str) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = App(lifespan=lifespan)

    @app.get("/")
    async def index() -> str:
        return "ok"

    client = TestClient(app, backend=anyio_backend)
    with client:
        assert client.get("/").text == "ok"
    assert events == ["startup", "shutdown"]
    assert client.get("/").text == "ok"  # as with Starlette's: no lifespan this time
    assert events == ["startup", "shutdown"]
    client.close()
    with pytest.raises(RuntimeError):
        client.get("/")


def test_leaving_a_session_cancels_a_handler_that_never_returns(anyio_backend: str) -> None:
    app = App()
    state: dict[str, Any] = {}

    @app.websocket("/stuck")
    async def stuck(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("accepted")
        try:
            await anyio.sleep_forever()  # never reads the disconnect
        finally:
            state["cleaned_up"] = True

    with TestClient(app, backend=anyio_backend) as client:
        started = time.monotonic()
        with client.websocket_connect("/stuck") as session:
            assert session.receive_text() == "accepted"
        assert time.monotonic() - started < 2
        assert state == {"cleaned_up": True}


def test_a_handler_that_reads_the_disconnect_may_finish_its_cleanup(anyio_backend: str) -> None:
    app = App()
    log: list[str] = []

    @app.websocket("/polite")
    async def polite(ws: WebSocket) -> None:
        await ws.accept()
        async for _ in ws.iter_text():
            pass
        await anyio.sleep(0.3)  # e.g. telling the others in the room, over the network
        log.append("said goodbye")

    with TestClient(app, backend=anyio_backend) as client:
        with client.websocket_connect("/polite"):
            pass
        assert log == ["said goodbye"]


def test_websocket_handshake_scope_has_the_headers_real_servers_send(
    anyio_backend: str,
) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json({k: ws.headers.get(k) for k in HANDSHAKE})

    HANDSHAKE = ("connection", "upgrade", "sec-websocket-key", "sec-websocket-version")
    with TestClient(app, backend=anyio_backend) as client:
        with client.websocket_connect("/ws") as session:
            got = session.receive_json()
        with client.websocket_connect("/ws", headers={"sec-websocket-key": "given"}) as session:
            assert session.receive_json()["sec-websocket-key"] == "given"
    assert got["connection"] == "upgrade"
    assert got["upgrade"] == "websocket"
    assert got["sec-websocket-version"] == "13"
    assert len(base64.b64decode(got["sec-websocket-key"])) == 16
