"""WSGIApp: a PEP 3333 application served as an ASGI app from a pool of worker threads."""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO
from wsgiref.types import WSGIApplication

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from microasgi._context import DEFAULT_MAX_BODY_SIZE, context_of
from microasgi._lifespan import serve_empty_lifespan
from microasgi._spool import Spool
from microasgi.types import Message, Receive, Scope, Send
from microasgi.wsgi._environ import ErrorStream, build_environ
from microasgi.wsgi._response import (
    NO_CONTENT,
    ClientDisconnected,
    content_length,
    encode_headers,
    status_code,
)

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_SEND_TIMEOUT",
    "DEFAULT_SPOOL_THRESHOLD",
    "WSGIApp",
    "default_max_threads",
]

logger = logging.getLogger("microasgi")

DEFAULT_BODY_TIMEOUT = 30.0
"""Seconds a request body may pause (no piece of it arriving) before the answer is 408."""
DEFAULT_SEND_TIMEOUT = 60.0
"""Seconds a response chunk may wait for the client to take it before the client is dropped."""
DEFAULT_SPOOL_THRESHOLD = 1024 * 1024
"""Bytes of request body kept in memory; beyond that the body goes to a temporary file."""
WATCHER_GRACE = 1.0
"""Seconds to wait, after a complete response, for a server to say http.disconnect."""

_UNSET: Any = object()  # max_body_size not given: the App's limit, else the default
_Gone = tuple[type[BaseException], ...]  # what a bridge call raises once the loop gives up


def default_max_threads() -> int:
    """min(32, CPUs + 4), the default of concurrent.futures.ThreadPoolExecutor."""
    return min(32, (os.cpu_count() or 1) + 4)


class WSGIApp:
    """Serve the WSGI application `app` (Flask, Django, ...) as an ASGI app.

    Each request runs in a worker thread, at most `max_threads` at a time
    (default `default_max_threads()`). A request gets its thread only once its
    whole body has arrived: the body is read first, in memory up to
    `spool_threshold` bytes and in a temporary file beyond, so a client that
    sends slowly holds no thread. A body larger than `max_body_size` is
    answered 413 (by default the limit of the microasgi App this is mounted
    in, or 10 MiB outside one; None for no limit); a body that stops arriving
    for `body_timeout` seconds is answered 408. The response streams back
    chunk by chunk, the thread waiting when the client is slow, at most
    `send_timeout` seconds per chunk. Mount it like any ASGI app:
    ``app.mount("/legacy", WSGIApp(flask_app))``.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        max_threads: int | None = None,
        max_body_size: int | None = _UNSET,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
        send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
        spool_threshold: int = DEFAULT_SPOOL_THRESHOLD,
    ) -> None:
        if max_threads is None:
            max_threads = default_max_threads()
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        if max_body_size is not _UNSET and max_body_size is not None and max_body_size < 0:
            raise ValueError("max_body_size must be at least 0 (or None for no limit)")
        for name, timeout in (("body_timeout", body_timeout), ("send_timeout", send_timeout)):
            if timeout is not None and timeout <= 0:
                raise ValueError(f"{name} must be more than 0 (or None for no deadline)")
        if spool_threshold < 0:
            raise ValueError("spool_threshold must be at least 0")
        self.app = app
        self.max_threads = max_threads
        self.max_body_size: int | None = max_body_size
        self.body_timeout = body_timeout
        self.send_timeout = send_timeout
        self.spool_threshold = spool_threshold
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

    def body_limit(self, scope: Scope) -> int | None:
        """The body size limit for `scope`: our own if given, else the serving App's."""
        if self.max_body_size is not _UNSET:
            return self.max_body_size
        context = context_of(scope)
        return DEFAULT_MAX_BODY_SIZE if context is None else context.max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            limiter, gone = self._for_this_loop()
            await _Exchange(self, scope, receive, send, gone).serve(limiter)
        elif kind == "websocket":
            # WSGI has no WebSockets: refuse the handshake (the server answers 403).
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1000, "reason": ""})
        elif kind == "lifespan":
            await serve_empty_lifespan(receive, send)
        else:
            raise ValueError(f"WSGIApp cannot serve a {kind!r} connection")

    def __repr__(self) -> str:
        return f"WSGIApp({self.app!r}, max_threads={self.max_threads})"


class _Exchange:
    """One request, shared by its event-loop side and its worker thread.

    The loop side reads the whole request body first (`_read_body`), so the
    app never waits for the client in its thread; then one loop task owns
    receive() for the rest of the request and watches for the disconnect,
    whatever the protocol. The thread runs the whole WSGI call (app, iteration,
    close()), so that thread-locals and context variables stay put for the app.
    It hands each response chunk to the loop with `anyio.from_thread.run` and
    waits there until the server's send() has taken it: at most one chunk per
    request is in flight, and a slow client holds the app back (for at most
    `send_timeout` per chunk). Flags written by one side and read by the other
    are plain attributes.
    """

    def __init__(
        self, wsgi: WSGIApp, scope: Scope, receive: Receive, send: Send, gone: _Gone
    ) -> None:
        self.app = wsgi.app
        self.wsgi = wsgi
        self.scope = scope
        self.receive = receive
        self.send = send
        self.gone = gone
        self.errors = ErrorStream()
        self.environ = build_environ(scope, None, self.errors)
        self.body: BinaryIO | None = None  # wsgi.input, closed by whoever finishes with it
        self.ran = False  # the thread started the WSGI call (and will close the body)
        self.disconnected = False  # the client is gone: answer nothing more
        self.error: Exception | None = None  # raised by the app, its iterable or close()
        self.loop_error: Exception | None = None  # raised by send() or receive()
        self.start_failed = False  # the server refused the http.response.start message
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
        body = await self._read_body()
        if body is None:  # answered (413, 408), or the client left
            return
        self.body = self.environ["wsgi.input"] = body
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_disconnect)
                await anyio.to_thread.run_sync(self._run, limiter=limiter)
                with contextlib.suppress(OSError):  # ASGI 2.4: the client is gone
                    await self._finish()
                if self.completed:
                    # Once the response is complete the server answers receive() with
                    # http.disconnect (ASGI spec), which ends the watcher: cheaper than
                    # cancelling it. The deadline is for servers that do not.
                    tg.cancel_scope.deadline = anyio.current_time() + WATCHER_GRACE
                else:
                    tg.cancel_scope.cancel()
        finally:
            if not self.ran:  # cancelled while waiting for a thread
                body.close()
        if self.start_failed:
            # Logged by _send_start. Raising would make an outer error handler report an
            # error "after the response started", which it did not.
            return
        if self.loop_error is not None:
            raise self.loop_error

    async def _read_body(self) -> BinaryIO | None:
        """The whole request body, or None once it was refused or the client left.

        A body over the size limit gets 413 (at once when its Content-Length says
        so), one that stops arriving for `body_timeout` seconds gets 408. Bytes
        beyond the Content-Length are dropped. CONTENT_LENGTH is set to the size
        read, so apps that trust it (Django) also get chunked and HTTP/2 bodies.
        """
        environ, wsgi = self.environ, self.wsgi
        limit = wsgi.body_limit(self.scope)
        declared = content_length(environ.get("CONTENT_LENGTH"))
        if declared is not None and limit is not None and declared > limit:
            await self._answer(413, f"The request body is larger than {limit} bytes.\n")
            return None
        if declared == 0 or (
            declared is None
            and "HTTP_TRANSFER_ENCODING" not in environ
            and self.scope.get("http_version", "1.1") in ("1.0", "1.1")
        ):  # HTTP/1 without Content-Length or Transfer-Encoding: no body
            return io.BytesIO()
        body = Spool(wsgi.spool_threshold)
        received: BinaryIO | None = None
        try:
            left = declared
            while True:
                message = await self._receive_body_message()
                if message is None:
                    await self._answer(408, "The request body did not arrive in time.\n")
                    break
                if message["type"] == "http.disconnect":
                    self.disconnected = True
                    break
                chunk: bytes = message.get("body", b"")
                more = message.get("more_body", False)
                if left is not None:
                    if len(chunk) >= left:  # the rest is beyond Content-Length: dropped
                        chunk, more = chunk[:left], False
                    left -= len(chunk)
                if limit is not None and body.size + len(chunk) > limit:
                    await self._answer(413, f"The request body is larger than {limit} bytes.\n")
                    break
                if chunk:
                    await body.write(chunk)
                if not more:
                    if body.size or declared is not None:
                        environ["CONTENT_LENGTH"] = str(body.size)
                    received = await body.finish()
                    return received
        finally:
            if received is None:
                body.close()
        return None

    async def _receive_body_message(self) -> Message | None:
        """The next message, or None if none came within `body_timeout`."""
        with anyio.move_on_after(self.wsgi.body_timeout):
            return await self.receive()
        return None

    async def _answer(self, status: int, text: str, *, close: bool = True) -> None:
        """Answer `status` with `text` ourselves (for 408 and 413, the body is left unread)."""
        content = text.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(content)).encode()),
        ]
        if close and self.scope.get("http_version", "1.1") in ("1.0", "1.1"):
            headers.append((b"connection", b"close"))  # the rest of the body is not read
        with contextlib.suppress(OSError):  # ASGI 2.4: the client is gone
            await self.send({"type": "http.response.start", "status": status, "headers": headers})
            await self.send({"type": "http.response.body", "body": content})

    async def _send_chunk(self, chunk: bytes) -> None:
        """Send a piece of the body written by the thread (which waits meanwhile)."""
        if self.disconnected:
            raise ClientDisconnected("the client went away during the response")
        try:
            with anyio.move_on_after(self.wsgi.send_timeout) as deadline:
                if not self.started:
                    await self._send_start()
                await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        except OSError as exc:  # ASGI 2.4: the client is gone
            self.disconnected = True
            raise ClientDisconnected("the client went away during the response") from exc
        except Exception as exc:
            self.loop_error = exc
            self.disconnected = True
            raise ClientDisconnected("the server failed to send the response") from exc
        if deadline.cancelled_caught:
            self.disconnected = True
            logger.info(
                "WSGI response dropped: the client took no data for %s s (%s %s)",
                self.wsgi.send_timeout,
                self.scope["method"],
                self.scope["path"],
            )
            raise ClientDisconnected("the client stopped reading the response")

    async def _send_start(self) -> None:
        """Send the status and headers. A server that refuses them (say, a header value
        its HTTP library rejects) is logged here; the request then ends unanswered."""
        try:
            await self.send(
                {"type": "http.response.start", "status": self.status, "headers": self.headers}
            )
        except OSError:
            raise
        except Exception as exc:
            self.start_failed = True
            self._log(
                "WSGI response failed to start: the server refused its status line or headers",
                exc,
            )
            raise
        self.started = True

    async def _watch_disconnect(self) -> None:
        """Once the body is read, the next message can only be http.disconnect."""
        try:
            while (await self.receive())["type"] != "http.disconnect":
                pass  # body beyond Content-Length, dropped
        except Exception as exc:
            self.loop_error = exc
        self.disconnected = True

    async def _finish(self) -> None:
        """Complete the response, answer 500 for an error, or leave it unfinished."""
        error = self.error
        if self.start_failed:  # logged by _send_start
            return
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
                await self._answer(500, "Internal Server Error", close=False)
                self.completed = True
            return
        if self.length_left and self.body_allowed:
            self._log(f"WSGI app sent {self.length_left} bytes fewer than its Content-Length")
            return
        if not self.started:
            try:
                await self._send_start()
            except Exception:
                if self.start_failed:  # logged by _send_start
                    return
                raise
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        self.completed = True

    def _log(self, what: str, error: BaseException | None = None) -> None:
        logger.error("%s (%s %s)", what, self.scope["method"], self.scope["path"], exc_info=error)

    # -- the worker thread side ----------------------------------------------------------

    def _run(self) -> None:
        """The WSGI call: the app, its iterable to the end, and close() whatever happens."""
        self.ran = True
        iterable: Iterable[bytes] | None = None
        try:
            iterable = self.app(self.environ, self._start_response)
            if isinstance(iterable, (bytes, str)):
                raise TypeError("a WSGI app must return an iterable of bytes, not bytes or str")
            if self.disconnected:  # gone while the app worked: do not iterate
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
            if self.body is not None:
                self.body.close()

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
        code = status_code(status)
        raw_headers, length = encode_headers(headers)
        no_body = code < 200 or code in NO_CONTENT or self.environ["REQUEST_METHOD"] == "HEAD"
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
