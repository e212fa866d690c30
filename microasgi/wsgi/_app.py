"""WSGIApp: a PEP 3333 application served as an ASGI app from a pool of worker threads."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.types import WSGIApplication

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from microasgi.responses import PlainTextResponse
from microasgi.types import Message, Receive, Scope, Send
from microasgi.wsgi._environ import ErrorStream, build_environ
from microasgi.wsgi._input import ClientDisconnected, InputStream

__all__ = ["WSGIApp", "default_max_threads"]

logger = logging.getLogger("microasgi")

WATCHER_GRACE = 1.0
"""Seconds to wait, after a complete response, for a server to say http.disconnect."""

_Gone = tuple[type[BaseException], ...]  # what a bridge call raises once the loop gives up
_NO_CONTENT = frozenset({204, 304})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def default_max_threads() -> int:
    """min(32, CPUs + 4), the default of concurrent.futures.ThreadPoolExecutor."""
    return min(32, (os.cpu_count() or 1) + 4)


class WSGIApp:
    """Serve the WSGI application `app` (Flask, Django, ...) as an ASGI app.

    Each request runs in a worker thread, at most `max_threads` at a time
    (default `default_max_threads()`); requests beyond that wait, unread, for a
    thread. The request body streams to `wsgi.input` as the app reads it, and
    the response streams back chunk by chunk, the thread waiting when the
    client is slow. Mount it like any ASGI app: ``app.mount("/legacy", WSGIApp(flask_app))``.
    """

    def __init__(self, app: WSGIApplication, *, max_threads: int | None = None) -> None:
        if max_threads is None:
            max_threads = default_max_threads()
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self.app = app
        self.max_threads = max_threads
        # One limiter per event loop (an app may be served by several, one after the other).
        self._loop_local = anyio.lowlevel.RunVar[tuple[anyio.CapacityLimiter, _Gone]]("wsgi")

    def _for_this_loop(self) -> tuple[anyio.CapacityLimiter, _Gone]:
        """The limiter, and the exceptions a bridge call raises when the loop gives up on it."""
        try:
            return self._loop_local.get()
        except LookupError:
            gone: _Gone = (
                anyio.RunFinishedError,
                concurrent.futures.CancelledError,  # asyncio's, as anyio raises it in threads
                anyio.get_cancelled_exc_class(),  # trio's
            )
            local = (anyio.CapacityLimiter(self.max_threads), gone)
            self._loop_local.set(local)
            return local

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            limiter, gone = self._for_this_loop()
            await _Exchange(self.app, scope, receive, send, gone).serve(limiter)
        elif kind == "websocket":
            # WSGI has no WebSockets: refuse the handshake (the server answers 403).
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1000, "reason": ""})
        elif kind == "lifespan":
            while True:  # nothing to start or stop, but say so: servers wait for an answer
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:
            raise ValueError(f"WSGIApp cannot serve a {kind!r} connection")

    def __repr__(self) -> str:
        return f"WSGIApp({self.app!r}, max_threads={self.max_threads})"


class _Exchange:
    """One request, shared by its event-loop side and its worker thread.

    The thread runs the whole WSGI call (app, iteration, close()), so that
    thread-locals and context variables stay put for the app. It reaches the
    loop through `anyio.from_thread.run`, and waits there: to pull the next
    request body chunk, and to hand a response chunk to the server's send().
    So at most one chunk per request is in flight, and a slow client (a send()
    that waits for the socket) holds the app back. A loop task watches for a
    disconnect once the request body has been read. Flags written by one side
    and read by the other are plain attributes.
    """

    tg: anyio.abc.TaskGroup

    def __init__(
        self, app: WSGIApplication, scope: Scope, receive: Receive, send: Send, gone: _Gone
    ) -> None:
        self.app = app
        self.scope = scope
        self.receive = receive
        self.send = send
        self.gone = gone
        self.errors = ErrorStream()
        self.environ = environ = build_environ(scope, None, self.errors)
        self.body_left = _content_length(environ.get("CONTENT_LENGTH"))
        self.body_done = self.body_left == 0 or (
            self.body_left is None
            and "HTTP_TRANSFER_ENCODING" not in environ
            and scope.get("http_version", "1.1") in ("1.0", "1.1")
        )  # HTTP/1 without Content-Length or Transfer-Encoding: no body
        environ["wsgi.input"] = InputStream(self._read_chunk, at_end=self.body_done)
        self.watching = False  # the disconnect watcher was started
        self.disconnected = False  # the client is gone: answer nothing more
        self.error: Exception | None = None  # raised by the app, its iterable or close()
        self.loop_error: Exception | None = None  # raised by send() or receive()
        # The response, as the thread sets it. Once headers_sent, it no longer changes.
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_sent = False  # a body chunk was handed to the loop
        self.length_left: int | None = None  # of the response's Content-Length
        self.body_allowed = True
        self.body_full = False  # all the body the response may have has been written
        self.started = False  # http.response.start was sent (loop side)
        self.completed = False  # the whole response was sent

    # -- the event loop side -----------------------------------------------------------

    async def serve(self, limiter: anyio.CapacityLimiter) -> None:
        async with anyio.create_task_group() as tg:
            self.tg = tg
            if self.body_done:
                self._start_watching()
            await anyio.to_thread.run_sync(self._run, limiter=limiter)
            with contextlib.suppress(OSError):  # ASGI 2.4: the client is gone
                await self._finish()
            if self.watching:
                if self.completed:
                    # Once the response is complete the server answers receive() with
                    # http.disconnect (ASGI spec), which ends the watcher: cheaper than
                    # cancelling it. The deadline is for servers that do not.
                    tg.cancel_scope.deadline = anyio.current_time() + WATCHER_GRACE
                else:
                    tg.cancel_scope.cancel()
        if self.loop_error is not None:
            raise self.loop_error

    async def _send_chunk(self, chunk: bytes) -> None:
        """Send a piece of the body written by the thread (which waits meanwhile)."""
        if self.disconnected:
            raise ClientDisconnected("the client went away during the response")
        try:
            if not self.started:
                self.started = True
                await self.send(self._start_message())
            await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        except OSError as exc:  # ASGI 2.4: the client is gone
            self.disconnected = True
            raise ClientDisconnected("the client went away during the response") from exc
        except Exception as exc:
            self.loop_error = exc
            self.disconnected = True
            raise ClientDisconnected("the server failed to send the response") from exc

    def _start_watching(self) -> None:
        self.watching = True
        self.tg.start_soon(self._watch_disconnect)

    async def _watch_disconnect(self) -> None:
        """Once the body is read, the next message can only be http.disconnect."""
        try:
            while (await self.receive())["type"] != "http.disconnect":
                pass  # body beyond Content-Length, dropped
        except Exception as exc:
            self.loop_error = exc
        self.disconnected = True

    async def _next_chunk(self) -> bytes:
        """The next non-empty piece of the request body, b"" at its end."""
        while not self.body_done:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.body_done = self.disconnected = True
                raise ClientDisconnected("the client went away while sending the request body")
            chunk: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            left = self.body_left
            if left is not None:
                if len(chunk) >= left:  # the rest is beyond Content-Length: dropped
                    chunk, more = chunk[:left], False
                self.body_left = left - len(chunk)
            if not more:
                self.body_done = True
                self._start_watching()
            if chunk:
                return chunk
        return b""

    def _start_message(self) -> Message:
        return {"type": "http.response.start", "status": self.status, "headers": self.headers}

    async def _finish(self) -> None:
        """Complete the response, answer 500 for an error, or leave it unfinished."""
        scope, error = self.scope, self.error
        if self.disconnected or self.loop_error is not None:
            if error is not None and not isinstance(error, OSError):
                self._log("WSGI app error after the client went away", error)
            return
        if error is not None:
            if self.started:
                # Ending without more_body=False makes the server drop the connection, so
                # the client cannot take a cut-off body for a whole one.
                self._log("WSGI app error after the response started", error)
            else:
                self._log("WSGI app error", error)
                await PlainTextResponse("Internal Server Error", 500)(
                    scope, self.receive, self.send
                )
                self.completed = True
            return
        if self.length_left and self.body_allowed:
            self._log(f"WSGI app sent {self.length_left} bytes fewer than its Content-Length")
            return
        if not self.started:
            self.started = True
            await self.send(self._start_message())
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        self.completed = True

    def _log(self, what: str, error: BaseException | None = None) -> None:
        logger.error("%s (%s %s)", what, self.scope["method"], self.scope["path"], exc_info=error)

    # -- the worker thread side ----------------------------------------------------------

    def _run(self) -> None:
        """The WSGI call: the app, its iterable to the end, and close() whatever happens."""
        iterable: Iterable[bytes] | None = None
        try:
            iterable = self.app(self.environ, self._start_response)
            if isinstance(iterable, (bytes, str)):
                raise TypeError("a WSGI app must return an iterable of bytes, not bytes or str")
            if self.disconnected:  # gone while the app worked: do not ask for the body
                return
            for chunk in iterable:
                self._write(chunk)
                del chunk  # sent: let it go before the app makes the next one
                if self.body_full or self.disconnected:
                    return
            if self.status is None:
                raise RuntimeError("the WSGI app returned without calling start_response()")
        except Exception as exc:
            self.error = exc
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    if self.error is None:
                        self.error = exc
                    else:
                        self._log("WSGI iterable close() failed", exc)
            self.errors.flush()

    def _read_chunk(self) -> bytes:
        try:
            anyio.from_thread.check_cancelled()
            return anyio.from_thread.run(self._next_chunk)
        except ClientDisconnected:
            raise
        except self.gone as exc:
            self.disconnected = True
            raise ClientDisconnected("the request was cancelled") from exc

    def _start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and exc_info[1] is not None:
            try:
                if self.headers_sent:  # too late to replace: PEP 3333 says re-raise
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no reference cycle through the traceback
        elif self.status is not None:
            raise RuntimeError("start_response() called again without exc_info")
        code = _status_code(status)
        raw_headers, length = _encode_headers(headers)
        no_body = code < 200 or code in _NO_CONTENT or self.environ["REQUEST_METHOD"] == "HEAD"
        self.status, self.headers, self.length_left = code, raw_headers, length
        self.body_allowed = not no_body
        return self._write

    def _write(self, data: bytes) -> None:
        """Send `data` as the next piece of the body (also the `write()` of start_response)."""
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise TypeError(f"a WSGI response body is bytes, not {type(data).__name__}")
            data = bytes(data)
        if self.disconnected:
            raise ClientDisconnected("the client went away during the response")
        if not data or self.body_full:
            return
        if self.status is None:
            raise RuntimeError("the WSGI app wrote body before calling start_response()")
        if not self.body_allowed:
            self.body_full = True  # HEAD, 1xx, 204, 304: no body to send, stop iterating
            return
        left = self.length_left
        if left is not None:
            if len(data) >= left:
                if len(data) > left:
                    logger.warning(
                        "WSGI app sent more than its Content-Length (%s %s); the rest is dropped",
                        self.scope["method"],
                        self.scope["path"],
                    )
                    data = data[:left]
                self.body_full = True
            self.length_left = left - len(data)
            if not data:
                return
        self.headers_sent = True
        try:
            # A send() that does not wait is no cancellation point: ask, so that a
            # request the server cancels (say, at shutdown) stops the app too.
            anyio.from_thread.check_cancelled()
            anyio.from_thread.run(self._send_chunk, data)
        except ClientDisconnected:
            raise
        except self.gone as exc:
            self.disconnected = True
            raise ClientDisconnected("the client went away during the response") from exc


def _content_length(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()):  # absent, or not a number
        return None
    return int(value)


def _status_code(status: str) -> int:
    """The code of a PEP 3333 status line such as "200 OK"."""
    if (
        not isinstance(status, str)
        or len(status) < 3
        or not (status[:3].isascii() and status[:3].isdigit())
        or (len(status) > 3 and status[3] != " ")
        or int(status[:3]) < 100
    ):
        raise ValueError(f"invalid WSGI status {status!r}: expected e.g. '200 OK'")
    return int(status[:3])


def _encode_headers(headers: list[tuple[str, str]]) -> tuple[list[tuple[bytes, bytes]], int | None]:
    """ASGI headers (lowercase names, latin-1) and the Content-Length if one is given."""
    raw: list[tuple[bytes, bytes]] = []
    length: int | None = None
    for name, value in headers:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"WSGI header names and values are str: {(name, value)!r}")
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid WSGI header name {name!r}")
        if _BAD_VALUE.search(value):
            raise ValueError(f"invalid WSGI header value for {name!r}: {value!r}")
        lower = name.lower()
        raw.append((lower.encode("latin-1"), value.encode("latin-1")))
        if lower == "content-length" and length is None:
            length = _content_length(value.strip())
    return raw, length
