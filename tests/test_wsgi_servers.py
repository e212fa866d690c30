"""WSGIApp behind real servers, where the server passes hostile input through:

- uvicorn: slow clients that announce a body and never send it hold no worker thread
  and get 408; the App's body limit covers a mounted WSGI app; a Django-style
  Set-Cookie value (leading space) gets through uvicorn's h11 backend;
- hypercorn over HTTP/2 (h2c): a client that abandons a streaming response stops
  the WSGI app, and abandoned streams do not use up the worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from http.cookies import SimpleCookie
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import hypercorn.asyncio
import hypercorn.config
import pytest

from microasgi import App
from microasgi.wsgi import WSGIApp, default_max_threads
from tests.helpers import free_port
from tests.test_integration_uvicorn import run_server

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
SLOW_CLIENTS = 40


class Probe:
    """A WSGI app with a few paths, reporting from its threads what happened to it."""

    def __init__(self) -> None:
        self.calls = 0
        self.streams_closed = 0
        self.closed = threading.Condition()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.calls += 1
        path = environ["PATH_INFO"]
        if path == "/endless":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return self.endless()
        if path == "/login":
            cookie: SimpleCookie = SimpleCookie()
            cookie["sessionid"] = "abc123"
            cookie["sessionid"]["path"] = "/"
            cookie["sessionid"]["httponly"] = True
            # What Django's WSGIHandler passes to start_response: a leading space.
            headers = [("Content-Type", "text/plain"), ("Set-Cookie", cookie.output(header=""))]
            start_response("302 Found", [*headers, ("Location", "/admin/")])
            return [b""]
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"got %d" % len(body)]

    def endless(self) -> Iterator[bytes]:
        try:
            for _ in range(3000):  # about 30 s at most: a bound, not a hang
                yield b"tick\n" * 200
                time.sleep(0.01)
        finally:
            with self.closed:
                self.streams_closed += 1
                self.closed.notify_all()

    def wait_closed(self, count: int, timeout: float) -> bool:
        with self.closed:
            return self.closed.wait_for(lambda: self.streams_closed >= count, timeout)


def build(probe: Probe, **options: Any) -> App:
    app = App(max_body_size=1 * MiB)
    app.mount("/wsgi", WSGIApp(probe, **options))

    @app.get("/native")
    async def native() -> str:
        return "native"

    return app


def stalled_upload(port: int, path: str = "/wsgi/upload") -> socket.socket:
    """A client that announces 100 bytes, sends 5 and then waits."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhello".encode())
    return sock


# -- uvicorn ----------------------------------------------------------------------------------


def test_slow_uploads_do_not_block_other_wsgi_requests() -> None:
    """Forty stalled uploads; before, min(32, CPUs + 4) of them took every thread and a
    GET to the WSGI mount got no answer at all (native routes still did)."""
    assert default_max_threads() < SLOW_CLIENTS
    probe = Probe()
    port = free_port()
    with run_server(build(probe), port), contextlib.ExitStack() as stack:
        for _ in range(SLOW_CLIENTS):
            stack.enter_context(stalled_upload(port))
        time.sleep(0.3)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            start = time.monotonic()
            response = client.get("/wsgi/")
            elapsed = time.monotonic() - start
            assert (response.status_code, response.text) == (200, "got 0")
            assert elapsed < 2, elapsed
            assert client.get("/native").text == "native"
        assert probe.calls == 1  # the stalled uploads never reached the app


def read_response(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_stalled_upload_gets_408_and_the_connection_closes() -> None:
    probe = Probe()
    port = free_port()
    with run_server(build(probe, body_timeout=0.5), port), stalled_upload(port) as sock:
        start = time.monotonic()
        answer = read_response(sock, timeout=5)  # a timeout here fails the test
        assert 0.4 < time.monotonic() - start < 3
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in head.lower()
    assert body == b"The request body did not arrive in time.\n"
    assert probe.calls == 0


def test_the_apps_body_limit_covers_a_wsgi_mount() -> None:
    """App(max_body_size=1 MiB): a larger POST to the WSGI mount is 413 (before: 200,
    and the whole body held in memory). Chunked uploads are stopped at the limit."""
    probe = Probe()
    port = free_port()
    big = b"x" * (2 * MiB)
    with (
        run_server(build(probe), port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        declared = client.post("/wsgi/upload", content=big)
        assert declared.status_code == 413
        assert declared.text == f"The request body is larger than {MiB} bytes.\n"
        chunked = client.post("/wsgi/upload", content=iter([big[:MiB], big[MiB:]]))
        assert chunked.status_code == 413
        at_limit = client.post("/wsgi/upload", content=big[:MiB])
        assert at_limit.text == f"got {MiB}"
    assert probe.calls == 1


def test_django_style_set_cookie_gets_through_h11() -> None:
    """uvicorn's h11 backend (a plain `pip install uvicorn`) refuses a header value with
    a leading space and closes the connection without an answer: Django's admin login."""
    port = free_port()
    with (
        run_server(build(Probe()), port, http="h11"),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client,
    ):
        response = client.post("/wsgi/login")
    assert response.status_code == 302
    assert response.headers["set-cookie"] == "sessionid=abc123; HttpOnly; Path=/"
    assert response.cookies["sessionid"] == "abc123"


# -- hypercorn, HTTP/2 ------------------------------------------------------------------------


@contextlib.contextmanager
def run_hypercorn(app: Any, port: int) -> Iterator[None]:
    """hypercorn serving `app` on 127.0.0.1:`port` (HTTP/1.1, and h2c by prior knowledge)."""
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    serve = hypercorn.asyncio.serve(app, config, shutdown_trigger=stop.wait, mode="asgi")
    thread = threading.Thread(target=loop.run_until_complete, args=(serve,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert thread.is_alive(), "hypercorn stopped during startup"
            assert time.monotonic() < deadline, "hypercorn did not start within 10 s"
            time.sleep(0.05)
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        assert not thread.is_alive(), "hypercorn did not shut down"
        loop.close()


class H2Client:
    """A bare HTTP/2 client over a socket (h2c, prior knowledge), to abandon streams
    with RST_STREAM while the connection stays open, as browsers do."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def get(self, path: str) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "http")]
        self.conn.send_headers(stream_id, [*headers, (":authority", "t")], end_stream=True)
        self.flush()
        return stream_id

    def read_some(self, stream_id: int, at_least: int) -> int:
        """Read until `at_least` body bytes of the stream arrived; their number."""
        received = 0
        while received < at_least:
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                    received += len(event.data)
                    self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            self.flush()
        return received

    def abandon(self, stream_id: int) -> None:
        self.conn.reset_stream(stream_id)
        self.flush()

    def close(self) -> None:
        self.sock.close()


def test_http2_client_abandoning_a_stream_stops_the_wsgi_app() -> None:
    """hypercorn reports the reset stream with http.disconnect and ignores later sends;
    before, WSGIApp never read past the (empty) body on HTTP/2, so it never heard of
    it: the generator ran on and close() never came."""
    probe = Probe()
    port = free_port()
    with run_hypercorn(build(probe), port):
        client = H2Client(port)
        try:
            stream = client.get("/wsgi/endless")
            client.read_some(stream, 2000)
            client.abandon(stream)
            assert probe.wait_closed(1, timeout=5), "the WSGI iterable was not closed"
        finally:
            client.close()


def test_http2_abandoned_streams_do_not_use_up_the_threads() -> None:
    """Before: with two threads, two abandoned streams kept both busy for ever, and every
    further WSGI request hung. Now each is closed, and an HTTP/2 request is answered."""
    probe = Probe()
    port = free_port()
    with run_hypercorn(build(probe, max_threads=2), port):
        for _ in range(3):
            client = H2Client(port)
            try:
                stream = client.get("/wsgi/endless")
                client.read_some(stream, 1000)
                client.abandon(stream)
            finally:
                client.close()
        assert probe.wait_closed(3, timeout=5)
        with httpx.Client(http1=False, http2=True, timeout=5) as h2_client:
            response = h2_client.get(f"http://127.0.0.1:{port}/wsgi/")
        assert response.http_version == "HTTP/2"
        assert response.text == "got 0"
