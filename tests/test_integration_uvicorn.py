"""The app behind a real uvicorn server (in a thread), spoken to with httpx and websockets."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx
import pytest

from microasgi import App, Request, Response, StreamingResponse, WebSocket, WebSocketDisconnect
from tests.helpers import free_port

uvicorn = pytest.importorskip("uvicorn")

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
MAX_BODY = 3 * MiB


@dataclass
class Served:
    base_url: str
    port: int
    events: list[str]
    proceed: threading.Event = field(default_factory=threading.Event)


def build_app(events: list[str], proceed: threading.Event) -> App:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, str]]:
        events.append("startup")
        yield {"greeting": "hello from lifespan"}
        events.append("shutdown")

    app = App(lifespan=lifespan, max_body_size=MAX_BODY)

    @app.get("/json")
    async def json_route(request: Request) -> dict[str, Any]:
        return {"ok": True, "greeting": request.state.greeting}

    @app.get("/items/{n:int}")
    def item(n: int) -> dict[str, int]:
        return {"n": n}

    @app.get("/where")
    async def where(request: Request) -> dict[str, str]:
        return {"path": request.url.path, "query": request.url.query, "url": str(request.url)}

    @app.get("/conn")
    async def conn(request: Request) -> dict[str, Any]:
        return {"client": list(request.client or ())}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            yield b"chunk-1"
            released = await anyio.to_thread.run_sync(proceed.wait, 3)
            yield b"chunk-2" if released else b"buffered"

        return StreamingResponse(gen(), media_type="text/plain")

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("integration failure")

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.state.greeting)
        try:
            async for text in websocket.iter_text():
                await websocket.send_text("echo: " + text)
        except WebSocketDisconnect:
            pass

    return app


@contextlib.contextmanager
def run_server(app: Any, port: int, **options: Any) -> Iterator[uvicorn.Server]:
    """`app` served by uvicorn in a thread on 127.0.0.1:`port` (`options` go to its Config)."""
    settings = {"lifespan": "on", "log_level": "warning", "timeout_keep_alive": 5, **options}
    config = uvicorn.Config(app, host="127.0.0.1", port=port, **settings)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn stopped during startup")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 10 s")
            time.sleep(0.01)
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():  # pragma: no cover - last resort
            server.force_exit = True
            thread.join(timeout=5)
        assert not thread.is_alive(), "uvicorn did not shut down"


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    events: list[str] = []
    proceed = threading.Event()
    port = free_port()
    with run_server(build_app(events, proceed), port):
        yield Served(f"http://127.0.0.1:{port}", port, events, proceed)


@pytest.fixture
def client(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.base_url, timeout=10) as c:
        yield c


def test_json_routes_and_status_codes(client: httpx.Client) -> None:
    r = client.get("/json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"ok": True, "greeting": "hello from lifespan"}
    assert client.get("/items/12").json() == {"n": 12}
    assert client.get("/items/abc").status_code == 404
    assert client.get("/missing").status_code == 404
    r = client.post("/json")
    assert r.status_code == 405
    assert "GET" in r.headers["allow"]


def test_lifespan_ran_and_state_reaches_requests(served: Served, client: httpx.Client) -> None:
    assert served.events == ["startup"]
    assert client.get("/json").json()["greeting"] == "hello from lifespan"


def test_500_route(client: httpx.Client) -> None:
    r = client.get("/boom")
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    assert "integration failure" not in r.text


def test_streaming_arrives_in_chunks(served: Served, client: httpx.Client) -> None:
    served.proceed.clear()
    with client.stream("GET", "/stream") as r:
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding") == "chunked"
        chunks = r.iter_raw()
        assert next(chunks) == b"chunk-1"
        served.proceed.set()
        assert b"".join(chunks) == b"chunk-2"


def test_large_upload_echoes_back(client: httpx.Client) -> None:
    payload = bytes(range(256)) * (2 * MiB // 256)
    assert len(payload) == 2 * MiB
    r = client.post("/echo", content=payload)
    assert r.status_code == 200
    assert len(r.content) == 2 * MiB
    assert r.content == payload


def test_large_chunked_upload_echoes_back(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for i in range(32):
            yield bytes([i]) * 65536

    r = client.post("/echo", content=chunks())
    assert r.status_code == 200
    assert r.content == b"".join(bytes([i]) * 65536 for i in range(32))


def test_body_over_limit_without_content_length_gets_413(client: httpx.Client) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        chunk = b"x" * 65536
        for _ in range((MAX_BODY // 65536) + 16):
            sent += len(chunk)
            yield chunk

    request = client.build_request("POST", "/echo", content=chunks())
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    r = client.send(request)
    assert r.status_code == 413
    # The server is still fine afterwards.
    assert client.get("/json").status_code == 200


def test_body_over_limit_with_content_length_gets_413(client: httpx.Client) -> None:
    r = client.post("/echo", content=b"y" * (MAX_BODY + 1))
    assert r.status_code == 413


def test_hostile_host_header(served: Served, client: httpx.Client) -> None:
    r = client.get("/where?a=1", headers={"Host": "example.com/?"})
    assert r.status_code == 200
    data = r.json()
    assert data["path"] == "/where"
    assert data["query"] == "a=1"
    parts = urlsplit(data["url"])
    assert parts.path == "/where"
    assert parts.query == "a=1"


def test_keep_alive_reuses_the_connection(client: httpx.Client) -> None:
    ports = {tuple(client.get("/conn").json()["client"]) for _ in range(5)}
    assert len(ports) == 1
    r = client.get("/conn")
    assert r.headers.get("connection", "keep-alive").lower() != "close"


def test_websocket_round_trip(served: Served) -> None:
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{served.port}/ws", open_timeout=5, close_timeout=5) as ws:
        assert ws.recv(timeout=5) == "hello from lifespan"
        ws.send("ping")
        assert ws.recv(timeout=5) == "echo: ping"
        ws.send("pong")
        assert ws.recv(timeout=5) == "echo: pong"


def test_websocket_to_unknown_path_is_rejected(served: Served) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with (
        pytest.raises(InvalidStatus) as info,
        connect(f"ws://127.0.0.1:{served.port}/nowhere", open_timeout=5),
    ):
        pass
    assert info.value.response.status_code == 403


def test_startup_and_clean_shutdown() -> None:
    events: list[str] = []
    port = free_port()
    with run_server(build_app(events, threading.Event()), port):
        assert events == ["startup"]
        r = httpx.get(f"http://127.0.0.1:{port}/json", timeout=5)
        assert r.json()["greeting"] == "hello from lifespan"
    assert events == ["startup", "shutdown"]
