"""The app the server matrix (tests/test_servers*.py) serves under every server.

One process per server: what happened inside it (disconnects seen, background
tasks run, iterables closed) is kept in `EVENTS` and read back from ``GET /events``.
The servers serve `asgi`: ``/raw/...`` goes to `raw_app`, a hand-written ASGI
app (no microasgi at all) for the reproductions of server bugs, everything else
to `app`. The chat example is mounted at ``/chat``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from examples.chat.app import app as chat_app
from microasgi import (
    App,
    BackgroundTasks,
    EventSourceResponse,
    FileResponse,
    JSONResponse,
    Request,
    Response,
    ServerSentEvent,
    StreamingResponse,
    WebSocket,
    WebSocketDisconnect,
)
from microasgi.staticfiles import StaticFiles
from microasgi.types import Message, Receive, Scope, Send
from microasgi.wsgi import WSGIApp

MiB = 1024 * 1024
MAX_BODY = 3 * MiB
FILE_DATA = bytes(range(256)) * 4096 + b"end"  # 1 MiB and 3 bytes
EVENTS: list[Any] = []

FILES = Path(tempfile.mkdtemp(prefix="microasgi-server-matrix-"))
(FILES / "data.bin").write_bytes(FILE_DATA)
(FILES / "hello.txt").write_text("hello from a static file\n")


@asynccontextmanager
async def lifespan(app: App) -> AsyncIterator[dict[str, Any]]:
    await anyio.to_thread.run_sync(_note, "startup")
    yield {"greeting": "hello from lifespan", "ticks": [0]}
    await anyio.to_thread.run_sync(_note, "shutdown")


def _note(what: str) -> None:
    """Append to $SERVER_APP_LIFESPAN_FILE, if set (the lifespan test reads it)."""
    record = os.environ.get("SERVER_APP_LIFESPAN_FILE")
    if record:
        with open(record, "a") as file:
            file.write(what + "\n")


app = App(lifespan=lifespan, max_body_size=MAX_BODY)
app.mount("/static", StaticFiles(directory=FILES))
app.mount("/chat", chat_app)


@app.background_task
async def ticker(state: Any) -> None:
    while True:
        state.ticks[0] += 1
        await anyio.sleep(0.05)


# -- HTTP ---------------------------------------------------------------------------------------


@app.get("/events")
async def events() -> list[Any]:
    return EVENTS


@app.get("/json")
async def json_route(request: Request) -> dict[str, Any]:
    scope = request.scope
    return {
        "greeting": request.state.greeting,
        "http_version": scope["http_version"],
        "scheme": request.url.scheme,
        "ticks": request.state.ticks[0],
    }


@app.get("/items/{n:int}", name="item")
def item(request: Request, n: int) -> dict[str, Any]:
    return {"n": n, "url": str(request.url_for("item", n=n + 1))}


@app.get("/where")
async def where(request: Request) -> dict[str, Any]:
    return {
        "path": request.url.path,
        "query": request.url.query,
        "url": str(request.url),
        "root_path": request.scope.get("root_path", ""),
        "multi": request.query_params.getlist("m"),
        "headers": request.headers.getlist("x-multi"),
        "cookie": request.cookies.get("flavour"),
        "client_port_is_int": isinstance((request.client or ("", 0))[1], int),
    }


@app.get("/cookie")
async def cookie() -> Response:
    response = JSONResponse({"set": True})
    response.set_cookie("flavour", "oat", httponly=True)
    response.set_cookie("size", "big")
    return response


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("matrix failure")


@app.post("/echo")
async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


@app.post("/upload")
async def upload(request: Request) -> dict[str, Any]:
    form = await request.form()
    result: dict[str, Any] = {"fields": {}, "files": {}}
    for name, value in form.multi_items():
        if isinstance(value, str):
            result["fields"][name] = value
        else:
            data = await value.read()
            result["files"][name] = [value.filename, len(data), hashlib.sha256(data).hexdigest()]
    return result


@app.get("/chunks")
async def chunks(request: Request) -> StreamingResponse:
    """Three chunks, the next one only after the client asked for it (GET /release)."""

    async def gen() -> AsyncIterator[bytes]:
        for i in range(3):
            yield b"chunk-%d;" % i
            with anyio.fail_after(10):
                await RELEASE.receive()

    return StreamingResponse(gen(), media_type="text/plain")


RELEASE_SEND, RELEASE = anyio.create_memory_object_stream[None](10)


@app.get("/chunks-http10")
async def chunks_http10() -> StreamingResponse:
    async def gen() -> AsyncIterator[bytes]:
        yield b"one,"
        yield b"two"

    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/release")
async def release() -> str:
    RELEASE_SEND.send_nowait(None)
    return "released"


@app.get("/endless/{tag}")
async def endless(tag: str) -> StreamingResponse:
    """A stream that ends only when the client leaves (bounded: 30 s)."""

    async def gen() -> AsyncIterator[bytes]:
        try:
            for _ in range(3000):
                yield b"tick " * 100
                await anyio.sleep(0.01)
        finally:
            EVENTS.append(["endless closed", tag])

    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/background/{tag}")
async def background(tag: str, request: Request) -> Response:
    tasks = BackgroundTasks()

    async def after() -> None:
        await anyio.sleep(0.05)
        EVENTS.append(["background", tag])

    tasks.add_task(after)
    return Response(b"queued", media_type="text/plain", background=tasks)


@app.get("/file")
async def file() -> FileResponse:
    return FileResponse(FILES / "data.bin")


@app.get("/sse/{tag}")
async def sse(tag: str, request: Request) -> EventSourceResponse:
    start = int(request.last_event_id or 0)

    async def gen() -> AsyncIterator[ServerSentEvent]:
        try:
            for i in range(start + 1, start + 4):
                yield ServerSentEvent({"n": i}, id=i)
            await anyio.sleep_forever()  # then silence, until the client leaves
        finally:
            EVENTS.append(["sse closed", tag])

    return EventSourceResponse(gen(), ping=None)


# -- WSGI ---------------------------------------------------------------------------------------


def legacy(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    path = environ["PATH_INFO"]
    if path == "/endless":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _endless_wsgi(environ.get("QUERY_STRING", ""))
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Set-Cookie", " wsgi=yes")])
    text = f"{environ['REQUEST_METHOD']} {environ['SCRIPT_NAME']} {path} {len(body)}"
    return iter([text.encode()])


def _endless_wsgi(tag: str) -> Iterator[bytes]:
    import time

    try:
        for _ in range(3000):
            yield b"tock " * 100
            time.sleep(0.01)
    finally:
        EVENTS.append(["wsgi closed", tag])


app.mount("/wsgi", WSGIApp(legacy))


# -- WebSockets ---------------------------------------------------------------------------------


@app.websocket("/ws")
async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(websocket.state.greeting)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                tag = websocket.query_params.get("tag", "")
                EVENTS.append(["ws disconnect", tag, message.get("code")])
                return
            text = message.get("text")
            if text is None:
                await websocket.send_bytes(message["bytes"][::-1])
            elif text.startswith("close:"):
                _, code, reason = text.split(":", 2)
                await websocket.close(int(code), reason)
                return
            elif text == "raise":
                raise RuntimeError("handler failure")
            else:
                await websocket.send_text("echo: " + text)
    except WebSocketDisconnect:  # pragma: no cover - receive() returns it above
        raise


@app.websocket("/ws-pid")
async def ws_pid(websocket: WebSocket) -> None:
    """Says which worker process serves it, then waits for the client (or a drain)."""
    await websocket.accept()
    await websocket.send_text(str(os.getpid()))
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect as exc:
        EVENTS.append(["ws-pid disconnect", exc.code])


@app.get("/sleep/{seconds:float}")
async def sleep(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "slept"


@app.websocket("/ws-small", max_message_size=1024)
async def ws_small(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        async for text in websocket.iter_text():
            await websocket.send_text(f"got {len(text)}")
    finally:
        EVENTS.append(["ws-small ended"])


@app.websocket("/ws-deny")
async def ws_deny(websocket: WebSocket) -> None:
    await websocket.close(1008, "not you")


BYE_MESSAGES = 10


@app.websocket("/ws-bye")
async def ws_bye(websocket: WebSocket) -> None:
    """Answers the client's first message with a burst of messages and a close: a client
    whose close frame follows its message at once has the two close frames cross
    (tests/test_servers_bugs.py)."""
    await websocket.accept()
    await websocket.receive_text()
    for _ in range(BYE_MESSAGES):
        await websocket.send_text("bye")
    await websocket.close()


@app.websocket("/ws-accept")
async def ws_accept(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(
        subprotocol="chat.v2" if "chat.v2" in offered else None,
        headers={"x-accepted": "yes"},
    )
    await websocket.send_json({"offered": offered})
    await websocket.close()


# -- without microasgi: the server bugs, reproduced ---------------------------------------------

RAW_EVENTS: list[Any] = []


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A hand-written ASGI app, for reproductions without microasgi."""
    path = scope["path"]
    if scope["type"] == "http":
        if path == "/raw/stream":
            start: Message = {"type": "http.response.start", "status": 200, "headers": []}
            start["headers"] = [(b"content-type", b"text/plain")]
            await send(start)
            await send({"type": "http.response.body", "body": b"one,", "more_body": True})
            await send({"type": "http.response.body", "body": b"two"})
            return
        if path == "/raw/stream-watching":  # as above, with a receive() pending meanwhile
            await send({"type": "http.response.start", "status": 200, "headers": []})
            async with anyio.create_task_group() as task_group:

                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    task_group.cancel_scope.cancel()

                task_group.start_soon(watch)
                await send({"type": "http.response.body", "body": b"one,", "more_body": True})
                await send({"type": "http.response.body", "body": b"two"})
                task_group.cancel_scope.cancel()
            return
        if path == "/raw/early":  # answers without reading the request body
            headers = [(b"content-length", b"4"), (b"content-type", b"text/plain")]
            await send({"type": "http.response.start", "status": 413, "headers": headers})
            await send({"type": "http.response.body", "body": b"big!"})
            return
        body = json.dumps(
            {
                "events": RAW_EVENTS,
                "http_version": scope["http_version"],
                "client": scope.get("client"),
                "server": scope.get("server"),
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # websocket.connect
    if path == "/raw/accept-headers":
        await send({"type": "websocket.accept", "headers": [(b"x-accepted", b"yes")]})
        await send({"type": "websocket.close", "code": 1000})
        return
    if path == "/raw/bye":  # as /ws-bye
        await send({"type": "websocket.accept"})
        if (await receive())["type"] != "websocket.receive":
            return
        for _ in range(BYE_MESSAGES):
            await send({"type": "websocket.send", "text": "bye"})
        await send({"type": "websocket.close", "code": 1000})
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            tag = scope.get("query_string", b"").decode()
            RAW_EVENTS.append(["disconnect", tag, message.get("code")])
            return


async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """What the servers serve: ``/raw/...`` goes to `raw_app`, all else to microasgi."""
    if scope["type"] != "lifespan" and scope["path"].startswith("/raw/"):
        await raw_app(scope, receive, send)
    else:
        await app(scope, receive, send)
