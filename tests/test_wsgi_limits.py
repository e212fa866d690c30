"""WSGIApp against slow and oversized requests, in process: a request takes a worker
thread only once its body is there, a stalled body gets 408, a body over the limit 413
(the App's limit or WSGIApp's own), and a client that stops reading the response lets
go of its thread. Behind real servers: tests/test_wsgi_servers.py.

Every async test runs on asyncio and on trio.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import anyio
import pytest

from microasgi._context import CONTEXT_KEY, DEFAULT_MAX_BODY_SIZE, AppContext
from microasgi.types import Message
from microasgi.wsgi import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_SEND_TIMEOUT,
    DEFAULT_SPOOL_THRESHOLD,
    WSGIApp,
)
from tests.helpers import Exchange, body_messages, http_scope, run_app

pytestmark = pytest.mark.anyio


class Recorder:
    """A WSGI app that echoes the length of its body and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.calls += 1
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"got %d" % len(body)]


class StalledClient(Exchange):
    """Announces `declared` bytes, sends `first`, then nothing until `resume` is set."""

    def __init__(self, first: bytes, declared: int) -> None:
        super().__init__([{"type": "http.request", "body": first, "more_body": True}])
        self.rest = {"type": "http.request", "body": b"x" * (declared - len(first))}
        self.resume = anyio.Event()

    async def receive(self) -> Message:
        if not self.messages and self.rest is not None:
            await self.resume.wait()
            self.messages.append(self.rest)
            self.rest = None  # type: ignore[assignment]
        return await super().receive()


def post(length: int | None, **extra: Any) -> dict[str, Any]:
    headers = [(b"host", b"t")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    else:
        headers.append((b"transfer-encoding", b"chunked"))
    return http_scope("POST", "/", headers=headers, **extra)


def header(ex: Exchange, name: bytes) -> bytes | None:
    return ex.header(name)


# -- slow clients hold no thread ------------------------------------------------------------


async def test_stalled_bodies_hold_no_thread() -> None:
    """Forty clients that announce 100 bytes and send 5 do not keep a GET from its thread
    (before: each held a worker thread in wsgi.input.read(), with no deadline)."""
    recorder = Recorder()
    wsgi = WSGIApp(recorder, max_threads=2)
    stalled = [StalledClient(b"hello", 100) for _ in range(40)]
    async with anyio.create_task_group() as tg:
        for client in stalled:
            tg.start_soon(client.run, wsgi, post(100))
        await anyio.sleep(0.05)
        start = time.monotonic()
        ex = await run_app(wsgi, http_scope("GET"), timeout=2)
        assert ex.status == 200
        assert time.monotonic() - start < 1
        assert recorder.calls == 1  # only the GET: the stalled ones are not running
        for client in stalled:
            client.resume.set()  # the bodies arrive: now they run, and get their bytes
    assert [client.body for client in stalled] == [b"got 100"] * 40
    assert recorder.calls == 41


async def test_stalled_body_gets_408_and_the_app_is_not_called() -> None:
    recorder = Recorder()
    client = StalledClient(b"hello", 100)
    start = time.monotonic()
    await client.run(WSGIApp(recorder, body_timeout=0.2), post(100))
    assert 0.2 <= time.monotonic() - start < 2
    assert client.status == 408
    assert header(client, b"connection") == b"close"
    assert b"did not arrive in time" in client.body
    assert recorder.calls == 0


async def test_body_timeout_is_a_pause_not_a_total() -> None:
    """Five pieces 0.1 s apart: 0.4 s in all, under a 0.25 s timeout per pause."""

    class Trickle(Exchange):
        async def receive(self) -> Message:
            if self.messages and self.messages[0]["type"] == "http.request":
                await anyio.sleep(0.1)
            return await super().receive()

    client = Trickle(body_messages(*[b"abcd"] * 5))
    await client.run(WSGIApp(Recorder(), body_timeout=0.25), post(20))
    assert (client.status, client.body) == (200, b"got 20")


async def test_no_connection_close_on_http2() -> None:
    """HTTP/2 forbids connection-specific headers: the 408 goes without one."""
    client = StalledClient(b"hello", 100)
    await client.run(WSGIApp(Recorder(), body_timeout=0.1), post(100, http_version="2"))
    assert client.status == 408
    assert header(client, b"connection") is None


# -- body size limits ----------------------------------------------------------------------


async def test_declared_length_over_the_limit_is_413_before_reading() -> None:
    recorder = Recorder()
    ex = Exchange(body_messages(b"x" * 1000))
    await ex.run(WSGIApp(recorder, max_body_size=999), post(1000))
    assert ex.status == 413
    assert b"larger than 999 bytes" in ex.body
    assert header(ex, b"connection") == b"close"
    assert ex.receive_calls == 0  # not a byte read
    assert recorder.calls == 0


async def test_chunked_body_over_the_limit_is_413_as_soon_as_it_passes() -> None:
    recorder = Recorder()
    ex = Exchange(body_messages(*[b"x" * 300] * 10))
    await ex.run(WSGIApp(recorder, max_body_size=1000), post(None))
    assert ex.status == 413
    assert ex.receive_calls == 4  # 1,200 bytes: the fourth piece crosses the line
    assert recorder.calls == 0


async def test_a_body_at_the_limit_passes() -> None:
    for length in (None, 1000):
        ex = await run_app(
            WSGIApp(Recorder(), max_body_size=1000), post(length), body_messages(b"x" * 1000)
        )
        assert (ex.status, ex.body) == (200, b"got 1000")


def in_app(scope: dict[str, Any], max_body_size: int | None) -> dict[str, Any]:
    """`scope` as a microasgi App with this body limit would pass it on to a mount."""
    scope[CONTEXT_KEY] = AppContext(errors=None, max_body_size=max_body_size)  # type: ignore[arg-type]
    return scope


@pytest.mark.parametrize(
    ("own", "apps", "status"),
    [
        ("unset", 100, 413),  # the App's limit covers the mount
        ("unset", None, 200),  # the App has no limit
        (1000, 100, 200),  # WSGIApp's own limit wins, larger ...
        (50, None, 413),  # ... or smaller
        (None, 100, 200),  # or none at all
    ],
)
async def test_the_apps_limit_unless_wsgiapp_has_its_own(
    own: Any, apps: int | None, status: int
) -> None:
    wsgi = WSGIApp(Recorder()) if own == "unset" else WSGIApp(Recorder(), max_body_size=own)
    for length in (None, 200):  # chunked, and with a Content-Length
        ex = await run_app(wsgi, in_app(post(length), apps), body_messages(b"x" * 200))
        assert ex.status == status


def test_default_limit_outside_an_app_and_validation() -> None:
    wsgi = WSGIApp(Recorder())
    assert wsgi.body_limit(http_scope()) == DEFAULT_MAX_BODY_SIZE == 10 * 1024 * 1024
    assert (wsgi.body_timeout, wsgi.send_timeout) == (DEFAULT_BODY_TIMEOUT, DEFAULT_SEND_TIMEOUT)
    assert wsgi.spool_threshold == DEFAULT_SPOOL_THRESHOLD == 1024 * 1024
    assert WSGIApp(Recorder(), body_timeout=None, send_timeout=None).body_timeout is None
    for bad in (
        {"max_body_size": -1},
        {"body_timeout": 0},
        {"send_timeout": -1},
        {"spool_threshold": -1},
    ):
        with pytest.raises(ValueError):
            WSGIApp(Recorder(), **bad)


async def test_chunked_and_http2_bodies_get_a_content_length() -> None:
    """Django reads CONTENT_LENGTH bytes (none if it is absent): with the body read first,
    it is known, so chunked uploads and HTTP/2 requests without one reach it whole."""
    seen: list[str | None] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.append(environ.get("CONTENT_LENGTH"))
        start_response("204 No Content", [])
        return []

    wsgi = WSGIApp(app)
    await run_app(wsgi, post(None), body_messages(b"abc", b"defg"))
    h2 = http_scope("POST", headers=[(b"host", b"t")], http_version="2")
    await run_app(wsgi, h2, body_messages(b"abc"))
    h2_get = http_scope("GET", headers=[(b"host", b"t")], http_version="2")
    await run_app(wsgi, h2_get)
    assert seen == ["7", "3", None]


# -- a client that stops reading the response -------------------------------------------------


async def test_a_client_that_stops_reading_lets_go_of_the_thread() -> None:
    produced = 0

    def endless() -> Iterator[bytes]:
        nonlocal produced
        try:
            for _ in range(1000):
                produced += 1
                yield b"x" * 65536
        finally:
            closed_at.append(time.monotonic())

    closed_at: list[float] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/ping":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"pong"]
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return endless()

    class StopsReading(Exchange):
        async def send(self, message: Message) -> None:
            if len(self.sent) >= 3:
                await anyio.sleep_forever()  # the socket buffer is full, for good
            await super().send(message)

    wsgi = WSGIApp(app, max_threads=1, send_timeout=0.3)
    start = time.monotonic()
    ex = await StopsReading().run(wsgi)
    assert closed_at and closed_at[0] - start < 2
    assert produced == 3
    assert ex.status == 200 and not any(m.get("more_body") is False for m in ex.sent)
    other = await run_app(wsgi, http_scope("GET", "/ping"), timeout=2)
    assert other.body == b"pong"  # the only thread is free again
