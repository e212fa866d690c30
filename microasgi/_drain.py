"""The graceful drain of `python -m microasgi run`: what a worker does on SIGTERM.

`DrainMiddleware` wraps the served app (any ASGI app) in each worker process.
When the server adapter calls `Drain.start()` (on SIGTERM or SIGINT):

- every open WebSocket is closed with 1012 (service restart); a handler waiting
  in `receive()` gets ``websocket.disconnect`` with code 1012 at once, one busy
  elsewhere gets it from its next `receive()`, and its later sends raise
  `DrainClosed` (an OSError, as a server raises once a client is gone);
- every event stream (a ``text/event-stream`` response) ends cleanly: the app's
  `receive()` says ``http.disconnect`` (microasgi's EventSourceResponse then
  stops its iterable and closes it), its later sends raise `DrainClosed`, and
  the body ends with the final empty chunk, so the client sees a complete
  response and reconnects (with ``Last-Event-ID``);
- a WebSocket handshake that arrives during the drain is refused (503 where the
  server lets apps answer handshakes, else 403), and an event stream that
  starts during the drain ends right after its headers.

Other requests run on; the server stops accepting connections and waits for
them, up to the grace period (`python -m microasgi run --grace`), then cancels
what is left and exits. The drain needs the lifespan: the app's lifespan runs
inside the middleware's, which keeps a task for closing the connections.
"""

from __future__ import annotations

import contextlib
import logging

import anyio
import anyio.abc

from microasgi.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_GRACE", "Drain", "DrainClosed", "DrainMiddleware", "current"]

logger = logging.getLogger("microasgi")

DEFAULT_GRACE = 10.0
"""Seconds a draining worker waits for handlers to finish before it cancels them."""

CLOSE_CODE = 1012
CLOSE_REASON = "the server is restarting"
_DISCONNECT_WS: Message = {"type": "websocket.disconnect", "code": CLOSE_CODE, "reason": ""}
_DISCONNECT_HTTP: Message = {"type": "http.disconnect"}
_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}
_REFUSAL = b"The server is restarting: try again in a moment.\n"


class DrainClosed(OSError):
    """A send on a connection the drain has closed (what servers raise once a client left)."""


class Drain:
    """The drain of one worker process: the connections to end, and whether it started."""

    def __init__(self) -> None:
        self.draining = False
        self.websockets: set[_WebSocketExchange] = set()
        self.streams: set[_HTTPExchange] = set()
        self._started: anyio.Event | None = None
        self._idle: anyio.Event | None = None

    @property
    def ready(self) -> bool:
        """Whether the lifespan runs (without it there is no task to close connections)."""
        return self._started is not None

    def start(self) -> None:
        """Begin draining (call it in the event loop's thread; again: nothing more)."""
        if self.draining:
            return
        self.draining = True
        logger.info(
            "Draining: closing %d WebSocket(s) with %d and ending %d event stream(s)",
            len(self.websockets),
            CLOSE_CODE,
            len(self.streams),
        )
        if self._started is not None:
            self._started.set()

    @property
    def open_connections(self) -> int:
        """WebSockets and event streams not closed yet."""
        return len(self.websockets) + len(self.streams)

    def forget(self, connection: _WebSocketExchange | _HTTPExchange) -> None:
        """A WebSocket or event stream is closed."""
        self.websockets.discard(connection)
        self.streams.discard(connection)
        if self._idle is not None and not self.open_connections:
            self._idle.set()

    async def wait_closed(self, timeout: float) -> bool:
        """Wait until every WebSocket and event stream is closed (False: `timeout` passed)."""
        with anyio.move_on_after(timeout):
            if self.open_connections:
                self._idle = anyio.Event()
                await self._idle.wait()
            return True
        return False

    async def run(self, task_group: anyio.abc.TaskGroup) -> None:
        """The drain's own task, for the app's lifetime: closes the connections once started."""
        self._started = anyio.Event()
        if self.draining:
            self._started.set()
        await self._started.wait()
        for websocket in list(self.websockets):
            task_group.start_soon(websocket.close_for_drain)
        for stream in list(self.streams):
            stream.end_for_drain()


_current = Drain()


def current() -> Drain:
    """This process's drain."""
    return _current


def _is_event_stream(message: Message) -> bool:
    for name, value in message.get("headers", ()):
        if name.lower() == b"content-type":
            return bytes(value).split(b";", 1)[0].strip().lower() == b"text/event-stream"
    return False


class _HTTPExchange:
    """One HTTP request under the drain: only an event stream is ever touched."""

    __slots__ = ("_receive", "_send", "drain", "ended", "receiving", "stream")

    def __init__(self, drain: Drain, receive: Receive, send: Send) -> None:
        self.drain = drain
        self._receive = receive
        self._send = send
        self.stream = False  # an event stream, registered with the drain
        self.ended = False  # the final body went out (from the app or from us)
        self.receiving: anyio.CancelScope | None = None

    async def receive(self) -> Message:
        if not self.stream:
            return await self._receive()
        if self.drain.draining:
            return _DISCONNECT_HTTP
        with anyio.CancelScope() as scope:
            self.receiving = scope
            try:
                return await self._receive()
            finally:
                self.receiving = None
        return _DISCONNECT_HTTP  # the drain cancelled the wait

    async def send(self, message: Message) -> None:
        if self.stream:
            await self._stream_send(message)
        elif message["type"] == "http.response.start" and _is_event_stream(message):
            await self._send(message)
            self.stream = True
            self.drain.streams.add(self)
            if self.drain.draining:
                self.end_for_drain()
        else:
            await self._send(message)

    async def _stream_send(self, message: Message) -> None:
        if self.drain.draining:
            raise DrainClosed("the event stream was ended: the server is restarting")
        await self._send(message)
        if not message.get("more_body", False):
            self.ended = True
            self.drain.forget(self)

    def end_for_drain(self) -> None:
        if self.receiving is not None:
            self.receiving.cancel()

    async def finish(self) -> None:
        """After the app returned: end a drained event stream it left open."""
        if not self.stream:
            return
        self.drain.forget(self)
        if self.drain.draining and not self.ended:
            self.ended = True
            with contextlib.suppress(OSError):
                await self._send(_END)


class _WebSocketExchange:
    """One WebSocket under the drain."""

    __slots__ = ("_receive", "_send", "closed", "drain", "open", "receiving", "sending")

    def __init__(self, drain: Drain, receive: Receive, send: Send) -> None:
        self.drain = drain
        self._receive = receive
        self._send = send
        self.open = False  # accepted by the app, not closed yet
        self.closed = False  # closed by the drain
        self.sending = False
        self.receiving: anyio.CancelScope | None = None

    async def receive(self) -> Message:
        if self.closed:
            return _DISCONNECT_WS
        if not self.open:
            return await self._receive()
        with anyio.CancelScope() as scope:
            self.receiving = scope
            try:
                message = await self._receive()
            finally:
                self.receiving = None
            if not self.closed:
                return message
        # The drain closed the connection (and cancelled the wait, or the server
        # answered it with its own disconnect): the handler hears 1012.
        await self.close_for_drain()
        return _DISCONNECT_WS

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.closed:
            if kind == "websocket.close":
                return
            raise DrainClosed("the WebSocket was closed with 1012: the server is restarting")
        if kind == "websocket.accept" and self.drain.draining:
            await self.refuse()
            return
        self.sending = True
        try:
            await self._send(message)
        finally:
            self.sending = False
        if kind == "websocket.accept":
            self.open = True
            self.drain.websockets.add(self)
        elif kind != "websocket.send":  # closed or denied by the app
            self.open = False
            self.drain.forget(self)
        elif self.drain.draining:
            await self.close_for_drain()

    async def refuse(self) -> None:
        """Deny a handshake that arrived during the drain."""
        self.closed = True
        with contextlib.suppress(OSError):
            await self._send({"type": "websocket.close", "code": CLOSE_CODE})

    async def close_for_drain(self) -> None:
        if self.closed or not self.open:
            return
        if self.sending:  # the send under way closes it when it returns
            return
        self.closed = True
        self.open = False
        self.drain.forget(self)
        close = {"type": "websocket.close", "code": CLOSE_CODE, "reason": CLOSE_REASON}
        with contextlib.suppress(OSError):  # closed already? (uvicorn sends 1012 itself)
            await self._send(close)
        # Only now, with the close frame on its way: a handler that returns at once
        # must not leave the server to close the connection some other way.
        if self.receiving is not None:
            self.receiving.cancel()


class DrainMiddleware:
    """Wraps the served app so that `Drain.start()` closes its long-lived connections."""

    def __init__(self, app: ASGIApp, drain: Drain | None = None) -> None:
        self.app = app
        self.drain = drain if drain is not None else current()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            exchange = _HTTPExchange(self.drain, receive, send)
            try:
                await self.app(scope, exchange.receive, exchange.send)
            finally:
                await exchange.finish()
        elif kind == "websocket":
            ws = _WebSocketExchange(self.drain, receive, send)
            if self.drain.draining:
                await self._refuse_handshake(scope, ws)
                return
            try:
                await self.app(scope, ws.receive, ws.send)
            finally:
                ws.open = False
                self.drain.forget(ws)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self.drain.run, task_group)
            try:
                await self.app(scope, receive, send)
            finally:
                task_group.cancel_scope.cancel()

    async def _refuse_handshake(self, scope: Scope, ws: _WebSocketExchange) -> None:
        message = await ws.receive()
        if message["type"] != "websocket.connect":
            return
        if "websocket.http.response" in (scope.get("extensions") or {}):
            headers = [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(_REFUSAL)),
                (b"retry-after", b"1"),
            ]
            start = {"type": "websocket.http.response.start", "status": 503, "headers": headers}
            await ws._send(start)
            await ws._send({"type": "websocket.http.response.body", "body": _REFUSAL})
        else:
            await ws.refuse()
