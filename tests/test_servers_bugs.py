"""Server bugs, each reproduced without microasgi (tests/server_app.py's `raw_app`, a
hand-written ASGI app) next to the same check through microasgi, under every server
it applies to. A bug is an expected failure (strict) where it occurs, so a server
release that fixes it turns the test red until the mark is removed here, in
tests/servers.py and in docs/servers.md."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import subprocess
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.servers import (
    GRANIAN_ACCEPT_HEADERS,
    GRANIAN_HTTP10_VERSION,
    GRANIAN_PORTS,
    HYPERCORN_H2_KEYERROR,
    HYPERCORN_TRIO_CLOSE_RACE,
    HYPERCORN_TRIO_NO_CLOSE,
    HYPERCORN_WS_1006,
    SERVERS,
    TARGETS,
    UVICORN_HTTPTOOLS_HTTP10_CHUNKED,
    RawH2,
    Server,
    ServerPool,
    known_bug,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=list(SERVERS))
def server(server_pool: ServerPool, request: pytest.FixtureRequest) -> Server:
    return server_pool.get(request.param, request.node.nodeid)


def raw_info(server: Server) -> dict[str, Any]:
    return httpx.get(server.http_url + "/raw/info", timeout=5).json()  # type: ignore[no-any-return]


def http10(server: Server, path: str, version: bytes = b"1.0") -> tuple[bytes, bytes]:
    """GET `path` as HTTP/1.0 (or 1.1 with Connection: close) on a socket: the response
    head and body, read until the server closes the connection (2 s at most)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        request = b"GET %s HTTP/%s\r\nHost: t\r\nConnection: close\r\n\r\n"
        sock.sendall(request % (path.encode(), version))
        data = b""
        with contextlib.suppress(ConnectionResetError):  # a close, if a rude one
            while chunk := sock.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


# -- WebSockets -----------------------------------------------------------------------------


def test_raw_the_clients_close_code_reaches_the_app(
    request: pytest.FixtureRequest, server: Server
) -> None:
    """microasgi's row: tests/test_servers_websockets.py::test_the_clients_close_code..."""
    known_bug(request, server.kind.id.startswith("hypercorn"), HYPERCORN_WS_1006)
    tag = f"raw-{server.kind.id}"

    async def scenario() -> None:
        async with connect(f"{server.ws_url}/raw/ws?{tag}", open_timeout=5) as ws:
            await ws.close(4005, "client leaves")

    asyncio.run(asyncio.wait_for(scenario(), 10))
    deadline = time.monotonic() + 5
    while not (codes := [e[2] for e in raw_info(server)["events"] if e[1] == tag]):
        assert time.monotonic() < deadline, "the app was never told of the disconnect"
        time.sleep(0.05)
    assert codes == [4005]


def test_raw_accept_headers_reach_the_client(
    request: pytest.FixtureRequest, server: Server
) -> None:
    """microasgi's row: tests/test_servers_websockets.py::test_accept_headers_reach..."""
    known_bug(request, server.kind.id == "granian", GRANIAN_ACCEPT_HEADERS)

    async def scenario() -> str | None:
        async with connect(f"{server.ws_url}/raw/accept-headers", open_timeout=5) as ws:
            assert ws.response is not None
            # The app closes at once: wait for its close frame, as leaving now would
            # cross it (HYPERCORN_TRIO_CLOSE_RACE, tested on its own below).
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.response.headers.get("x-accepted")

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == "yes"


CROSSING_CLOSES = 300  # connections, one after the other


def leave_at_once(server: Server, path: str) -> None:
    """Open a WebSocket on a bare socket, send a message and a close frame in one write,
    and read until the server closes. (A client library writes the two apart: the
    race in the test below wants them to arrive together.)"""
    key = base64.b64encode(os.urandom(16))
    handshake = (
        b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ) % (path.encode(), key)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(handshake)
        head = b""
        while b"\r\n\r\n" not in head:
            if not (chunk := sock.recv(4096)):
                raise ConnectionError("closed without answering the handshake")
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 "), head
        # A client masks its frames; with a zero mask the payload reads as it is.
        message = b"\x81\x84\0\0\0\0bye?"
        close = b"\x88\x82\0\0\0\0" + (1000).to_bytes(2, "big")
        sock.sendall(message + close)
        while sock.recv(65536):
            pass


@pytest.mark.parametrize("path", ["/raw/bye", "/ws-bye"], ids=["raw", "microasgi"])
def test_close_frames_crossing_leave_the_server_running(
    request: pytest.FixtureRequest, server_pool: ServerPool, server: Server, path: str
) -> None:
    """Each client sends a message and its close frame at once; the app answers the
    message with a burst of messages and its own close. The two close frames cross
    (RFC 6455, 5.5.1 and 7.1.2 allow it): the server must serve on.

    A race, reproduced by repetition: under hypercorn's trio worker about one connection
    in two brings the server down, and the next one fails (one of the first ten in
    each of 50 runs measured, the machine's cores idle or busy)."""
    crashes = server.kind.id == "hypercorn-trio"
    known_bug(request, crashes, HYPERCORN_TRIO_CLOSE_RACE)
    failure = None
    try:
        for number in range(1, CROSSING_CLOSES + 1):
            try:
                leave_at_once(server, path)
            except OSError as exc:
                failure = f"connection {number} of {CROSSING_CLOSES}: {exc!r}"
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.process.wait(timeout=5)  # if it is going down, let it say why
                break
        assert failure is None and server.answers(), (
            f"{failure or 'the server no longer answers'}; it printed:\n{server.output(20000)}"
        )
    finally:
        if crashes:
            server_pool.restart(server.kind.id)  # dead or dying: the next test gets a new one


# -- HTTP/1.0 -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/raw/stream", "/chunks-http10"], ids=["raw", "microasgi"])
def test_a_streamed_response_to_http10_is_not_chunked(
    request: pytest.FixtureRequest, server: Server, path: str
) -> None:
    """HTTP/1.0 has no chunked coding: the body goes as is, ended by the close."""
    known_bug(request, server.kind.id == "uvicorn-httptools", UVICORN_HTTPTOOLS_HTTP10_CHUNKED)
    # microasgi's StreamingResponse listens for a disconnect while it streams:
    known_bug(
        request, server.kind.id == "hypercorn-trio" and path[1] == "c", HYPERCORN_TRIO_NO_CLOSE
    )
    head, body = http10(server, path)
    assert b"transfer-encoding" not in head.lower()
    assert body == b"one,two"


@pytest.mark.parametrize(
    "path", ["/raw/stream-watching", "/chunks-http10"], ids=["raw", "microasgi"]
)
def test_the_connection_closes_after_a_streamed_response(
    request: pytest.FixtureRequest, server: Server, path: str
) -> None:
    """HTTP/1.1 with Connection: close; the app waits for a disconnect as it streams."""
    known_bug(request, server.kind.id == "hypercorn-trio", HYPERCORN_TRIO_NO_CLOSE)
    head, _ = http10(server, path, b"1.1")
    assert head.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("path", ["/raw/info", "/json"], ids=["raw", "microasgi"])
def test_http10_is_reported_as_1_0(
    request: pytest.FixtureRequest, server: Server, path: str
) -> None:
    known_bug(request, server.kind.id == "granian", GRANIAN_HTTP10_VERSION)
    _, body = http10(server, path)
    assert json.loads(body)["http_version"] == "1.0"


# -- the scope ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/raw/info", "/where"], ids=["raw", "microasgi"])
def test_ports_in_the_scope_are_ints(
    request: pytest.FixtureRequest, server: Server, path: str
) -> None:
    known_bug(request, server.kind.id == "granian", GRANIAN_PORTS)
    data = httpx.get(server.http_url + path, timeout=5).json()
    if path == "/where":
        assert data["client_port_is_int"] is True
    else:
        assert isinstance(data["client"][1], int)
        assert isinstance(data["server"][1], int)


# -- HTTP/2 ---------------------------------------------------------------------------------

H2_TARGETS = [target for target in TARGETS if target.http2]


@pytest.mark.parametrize("target", H2_TARGETS, ids=lambda t: t.id)
def test_raw_request_data_after_the_response_keeps_the_connection(
    request: pytest.FixtureRequest, server_pool: ServerPool, target: Any
) -> None:
    """microasgi's row: test_servers_http.py::test_body_over_the_limit_gets_413..."""
    known_bug(request, target.server.startswith("hypercorn"), HYPERCORN_H2_KEYERROR)
    server = server_pool.get(target.server, request.node.nodeid)
    h2 = RawH2(server, target.protocol)
    try:
        stream = h2.request("POST", "/raw/early", body=True, length=40000)
        h2.receive(0.5)  # the 413 arrives before the body is sent
        h2.send_body(stream, b"x" * 40000)
        assert h2.wait(stream)["status"] == 413
        assert h2.wait(h2.request("GET", "/raw/info"))["status"] == 200, "the connection died"
    finally:
        h2.close()
        if target.server.startswith("hypercorn"):
            server_pool.restart(target.server)  # see HYPERCORN_H2_KEYERROR_TRIO
