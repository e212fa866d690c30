"""TestClient and AsyncTestClient: httpx clients that talk to an ASGI app in process.

Requests run the app as a task; the response streams back chunk by chunk, so
streaming endpoints can be tested as they stream. `with TestClient(app)` (or
`async with AsyncTestClient(app)`) runs the lifespan. WebSocket sessions fail
with TimeoutError instead of hanging when the app says nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import anyio
import anyio.from_thread
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from microasgi.types import ASGIApp, Message

__all__ = [
    "AsyncTestClient",
    "AsyncWebSocketSession",
    "TestClient",
    "WebSocketDenied",
    "WebSocketSession",
]

_DEFAULT_TIMEOUT = 10.0


class WebSocketDenied(Exception):
    """The app refused the WebSocket handshake (closed before accepting, or sent a response)."""

    def __init__(
        self, status_code: int, headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b""
    ) -> None:
        super().__init__(f"WebSocket handshake denied with HTTP {status_code}")
        self.status_code = status_code
        self.headers = httpx.Headers(headers or [])
        self.body = body


def _stream_pair() -> tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Message]]:
    return anyio.create_memory_object_stream[Message](math.inf)


class _Core:
    """The async half shared by both clients: a task group running the app's tasks."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        lifespan: bool,
        raise_server_exceptions: bool,
        root_path: str,
        client: tuple[str, int],
    ) -> None:
        self.app = app
        self.lifespan = lifespan
        self.raise_server_exceptions = raise_server_exceptions
        self.root_path = root_path
        self.client = client
        self.state: dict[str, Any] = {}
        self._stack = contextlib.AsyncExitStack()
        self._lifespan_to_app: MemoryObjectSendStream[Message] | None = None
        self._lifespan_from_app: MemoryObjectReceiveStream[Message] | None = None
        self._lifespan_done = anyio.Event()
        self._lifespan_error: BaseException | None = None

    async def __aenter__(self) -> _Core:
        self.tg = await self._stack.enter_async_context(anyio.create_task_group())
        if self.lifespan:
            try:
                await self._startup()
            except BaseException:
                await self.__aexit__(None, None, None)
                raise
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            if self.lifespan and self._lifespan_to_app is not None:
                await self._shutdown()
        finally:
            self.tg.cancel_scope.cancel()  # whatever the app left running (e.g. open sockets)
            await self._stack.aclose()

    # -- lifespan --------------------------------------------------------------------

    async def _startup(self) -> None:
        to_app, app_receive = _stream_pair()
        app_send, from_app = _stream_pair()
        self._lifespan_to_app, self._lifespan_from_app = to_app, from_app
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }

        async def run() -> None:
            try:
                await self.app(scope, app_receive.receive, app_send.send)
            except BaseException as exc:
                self._lifespan_error = exc
            finally:
                app_send.close()
                self._lifespan_done.set()

        self.tg.start_soon(run)
        await to_app.send({"type": "lifespan.startup"})
        try:
            message = await from_app.receive()
        except anyio.EndOfStream:
            # The app does not speak lifespan (raised or returned at once): go on without it.
            self._lifespan_to_app = None
            return
        if message["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"lifespan startup failed: {message.get('message', '')}")

    async def _shutdown(self) -> None:
        assert self._lifespan_to_app is not None and self._lifespan_from_app is not None
        await self._lifespan_to_app.send({"type": "lifespan.shutdown"})
        try:
            message = await self._lifespan_from_app.receive()
        except anyio.EndOfStream:
            message = {"type": "lifespan.shutdown.complete"}
        await self._lifespan_done.wait()
        if message["type"] == "lifespan.shutdown.failed":
            raise RuntimeError(f"lifespan shutdown failed: {message.get('message', '')}")
        if self._lifespan_error is not None and self.raise_server_exceptions:
            raise self._lifespan_error

    # -- HTTP ------------------------------------------------------------------------

    def _scope(self, kind: str, request: httpx.Request) -> dict[str, Any]:
        url = request.url
        scheme = url.scheme
        default_port = 443 if scheme in ("https", "wss") else 80
        raw_path, _, _ = url.raw_path.partition(b"?")
        root = self.root_path
        inside = url.path == root or url.path.startswith(root + "/")
        path = url.path if not root or inside else root + url.path
        return {
            "type": kind,
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": scheme
            if kind == "http"
            else {"http": "ws", "https": "wss"}.get(scheme, scheme),
            "path": path,
            "raw_path": raw_path,
            "root_path": self.root_path,
            "query_string": url.query,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "client": self.client,
            "server": (url.host, url.port or default_port),
            "state": dict(self.state),
            "extensions": {},
        }

    async def http(self, request: httpx.Request, body: bytes) -> httpx.Response:
        scope = self._scope("http", request)
        scope["method"] = request.method
        timeout = (request.extensions.get("timeout") or {}).get("read") or _DEFAULT_TIMEOUT
        exchange = _HTTPExchange(self, scope, body)
        self.tg.start_soon(exchange.run)
        try:
            with anyio.fail_after(timeout):
                await exchange.started.wait()
        except TimeoutError:
            exchange.disconnect()
            raise httpx.ReadTimeout(
                f"the app sent no response within {timeout}s", request=request
            ) from None
        if exchange.start is None:
            if exchange.error is not None:
                if self.raise_server_exceptions:
                    raise exchange.error
                return httpx.Response(500, request=request)
            raise RuntimeError("the ASGI app returned without sending a response")
        headers = [(bytes(k), bytes(v)) for k, v in exchange.start.get("headers", [])]
        return httpx.Response(
            exchange.start["status"], headers=headers, stream=exchange, request=request
        )


class _HTTPExchange(httpx.AsyncByteStream):
    """One request/response: feeds the app its body, collects what it sends."""

    def __init__(self, core: _Core, scope: dict[str, Any], body: bytes) -> None:
        self.core = core
        self.scope = scope
        self.body: bytes | None = body
        self.started = anyio.Event()
        self.over = anyio.Event()  # response complete or client gone: receive() says disconnect
        self.finished = anyio.Event()  # the app returned (background tasks included)
        self.start: Message | None = None
        self.error: BaseException | None = None
        self.chunks_in, self.chunks_out = anyio.create_memory_object_stream[bytes](math.inf)
        self.complete = False

    async def receive(self) -> Message:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        if not self.over.is_set():  # no checkpoint when there is an answer already
            await self.over.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.start is not None:
                raise RuntimeError("http.response.start sent twice")
            self.start = message
            self.started.set()
        elif kind == "http.response.body":
            if self.start is None:
                raise RuntimeError("http.response.body sent before http.response.start")
            if self.complete:
                raise RuntimeError("http.response.body sent after the response was complete")
            chunk = message.get("body", b"")
            if chunk and self.scope["method"] != "HEAD":
                await self.chunks_in.send(bytes(chunk))
            if not message.get("more_body", False):
                self.complete = True
                self.chunks_in.close()
                self.over.set()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in an HTTP exchange")

    async def run(self) -> None:
        try:
            await self.core.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            self.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            self.started.set()
            self.chunks_in.close()
            self.over.set()
            self.finished.set()

    def disconnect(self) -> None:
        self.over.set()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self.next_chunk()) is not None:
            yield chunk

    async def next_chunk(self) -> bytes | None:
        try:
            return await self.chunks_out.receive()
        except anyio.EndOfStream:
            if not self.complete:
                if self.error is not None and self.core.raise_server_exceptions:
                    raise self.error from None
                raise httpx.RemoteProtocolError(
                    "the app ended the response before its end"
                ) from None
            return None

    async def aclose(self) -> None:
        """The client is done with the response: wait for the app to finish.

        So background tasks have run when `client.get()` returns; an app that
        ignores the disconnect is given the default timeout, then left running.
        """
        self.disconnect()
        with anyio.move_on_after(_DEFAULT_TIMEOUT):
            await self.finished.wait()


class _SyncStream(httpx.SyncByteStream):
    def __init__(self, portal: anyio.from_thread.BlockingPortal, exchange: _HTTPExchange) -> None:
        self.portal = portal
        self.exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self.portal.call(self.exchange.next_chunk)) is not None:
            yield chunk

    def close(self) -> None:
        self.portal.call(self.exchange.aclose)


# -- WebSocket -------------------------------------------------------------------------


class AsyncWebSocketSession:
    """The client side of one WebSocket connection to the app."""

    def __init__(self, core: _Core, scope: dict[str, Any]) -> None:
        self.core = core
        self.scope = scope
        self.to_app, self._app_receive = _stream_pair()
        self._app_send, self.from_app = _stream_pair()
        self.accepted_subprotocol: str | None = None
        self.extra_headers: list[tuple[bytes, bytes]] = []
        self.error: BaseException | None = None
        self.done = anyio.Event()
        self.closed = False

    async def _run(self) -> None:
        try:
            await self.core.app(self.scope, self._app_receive.receive, self._app_send.send)
        except BaseException as exc:
            self.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            self._app_send.close()
            self.done.set()

    async def connect(self, timeout: float) -> None:
        self.core.tg.start_soon(self._run)
        await self.to_app.send({"type": "websocket.connect"})
        message = await self._next(timeout)
        kind = message["type"]
        if kind == "websocket.accept":
            self.accepted_subprotocol = message.get("subprotocol")
            self.extra_headers = list(message.get("headers") or [])
            return
        self.closed = True
        if kind == "websocket.close":
            raise WebSocketDenied(403)
        if kind == "websocket.http.response.start":
            body = b""
            while True:
                part = await self._next(timeout)
                body += part.get("body", b"")
                if not part.get("more_body", False):
                    break
            raise WebSocketDenied(message["status"], list(message.get("headers") or []), body)
        raise RuntimeError(f"unexpected ASGI message {kind!r} during the handshake")

    async def _next(self, timeout: float | None) -> Message:
        try:
            with anyio.fail_after(timeout if timeout is not None else _DEFAULT_TIMEOUT):
                return await self.from_app.receive()
        except TimeoutError:
            raise TimeoutError(f"the app sent nothing within {timeout}s") from None
        except anyio.EndOfStream:
            if self.error is not None and self.core.raise_server_exceptions:
                raise self.error from None
            raise RuntimeError("the app ended the WebSocket without closing it") from None

    async def send(self, message: Message) -> None:
        await self.to_app.send(message)

    async def send_text(self, data: str) -> None:
        await self.send({"type": "websocket.receive", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        await self.send({"type": "websocket.receive", "bytes": data})

    async def send_json(self, data: Any, mode: str = "text") -> None:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if mode == "text":
            await self.send_text(text)
        else:
            await self.send_bytes(text.encode("utf-8"))

    async def receive(self, timeout: float | None = _DEFAULT_TIMEOUT) -> Message:
        """The next raw message the app sent; raises WebSocketDisconnect on its close."""
        from microasgi.websockets import WebSocketDisconnect

        message = await self._next(timeout)
        if message["type"] == "websocket.close":
            self.closed = True
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        return message

    async def receive_text(self, timeout: float | None = _DEFAULT_TIMEOUT) -> str:
        message = await self.receive(timeout)
        if message.get("text") is None:
            raise TypeError("expected a text message, received a binary one")
        text: str = message["text"]
        return text

    async def receive_bytes(self, timeout: float | None = _DEFAULT_TIMEOUT) -> bytes:
        message = await self.receive(timeout)
        if message.get("bytes") is None:
            raise TypeError("expected a binary message, received a text one")
        data: bytes = message["bytes"]
        return data

    async def receive_json(
        self, timeout: float | None = _DEFAULT_TIMEOUT, mode: str = "text"
    ) -> Any:
        message = await self.receive(timeout)
        return json.loads(message["text"] if mode == "text" else message["bytes"])

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close from the client side and wait for the app's handler to finish."""
        if not self.closed:
            self.closed = True
            await self.send({"type": "websocket.disconnect", "code": code, "reason": reason or ""})
        await self.finish()

    async def finish(self, timeout: float = _DEFAULT_TIMEOUT) -> None:
        with anyio.move_on_after(timeout):
            await self.done.wait()
        if self.error is not None and self.core.raise_server_exceptions:
            from microasgi.websockets import WebSocketDisconnect

            if not isinstance(self.error, WebSocketDisconnect):
                raise self.error


class WebSocketSession:
    """The blocking twin of AsyncWebSocketSession, for TestClient."""

    def __init__(
        self, portal: anyio.from_thread.BlockingPortal, session: AsyncWebSocketSession
    ) -> None:
        self._portal = portal
        self._session = session

    @property
    def accepted_subprotocol(self) -> str | None:
        return self._session.accepted_subprotocol

    @property
    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        return self._session.extra_headers

    def send(self, message: Message) -> None:
        self._portal.call(self._session.send, message)

    def send_text(self, data: str) -> None:
        self._portal.call(self._session.send_text, data)

    def send_bytes(self, data: bytes) -> None:
        self._portal.call(self._session.send_bytes, data)

    def send_json(self, data: Any, mode: str = "text") -> None:
        self._portal.call(self._session.send_json, data, mode)

    def receive(self, timeout: float | None = _DEFAULT_TIMEOUT) -> Message:
        return self._portal.call(self._session.receive, timeout)

    def receive_text(self, timeout: float | None = _DEFAULT_TIMEOUT) -> str:
        return self._portal.call(self._session.receive_text, timeout)

    def receive_bytes(self, timeout: float | None = _DEFAULT_TIMEOUT) -> bytes:
        return self._portal.call(self._session.receive_bytes, timeout)

    def receive_json(self, timeout: float | None = _DEFAULT_TIMEOUT, mode: str = "text") -> Any:
        return self._portal.call(self._session.receive_json, timeout, mode)

    def close(self, code: int = 1000, reason: str | None = None) -> None:
        self._portal.call(self._session.close, code, reason)

    def __enter__(self) -> WebSocketSession:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _websocket_request(
    client: httpx.Client | httpx.AsyncClient,
    url: str,
    subprotocols: Sequence[str] | None,
    headers: Mapping[str, str] | None,
) -> tuple[httpx.Request, list[str]]:
    request = client.build_request("GET", url, headers=headers)
    protocols = list(subprotocols or [])
    if protocols:
        request.headers["sec-websocket-protocol"] = ", ".join(protocols)
    return request, protocols


def _websocket_scope(core: _Core, request: httpx.Request, protocols: list[str]) -> dict[str, Any]:
    scope = core._scope("websocket", request)
    scope["subprotocols"] = protocols
    scope["extensions"] = {"websocket.http.response": {}}
    return scope


# -- the clients -----------------------------------------------------------------------


class _SyncTransport(httpx.BaseTransport):
    def __init__(self, client: TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        portal, core = self.client._ensure_running()
        body = request.read()
        response = portal.call(core.http, request, body)
        if isinstance(response.stream, _HTTPExchange):  # not for a made-up 500
            response.stream = _SyncStream(portal, response.stream)
        return response


class TestClient(httpx.Client):
    """An httpx.Client for an ASGI app, run in a background event loop thread.

    Use it in a `with` block to run the app's lifespan. `backend` is "asyncio"
    or "trio". Exceptions the app lets escape are raised in the test unless
    `raise_server_exceptions=False` (then a 500 comes back).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: ASGIApp,
        base_url: str = "http://testserver",
        *,
        raise_server_exceptions: bool = True,
        root_path: str = "",
        backend: str = "asyncio",
        backend_options: dict[str, Any] | None = None,
        client: tuple[str, int] = ("testclient", 50000),
        follow_redirects: bool = True,
        **httpx_options: Any,
    ) -> None:
        self.app = app
        self._options = {
            "raise_server_exceptions": raise_server_exceptions,
            "root_path": root_path,
            "client": client,
        }
        self._backend = backend
        self._backend_options = backend_options
        self._running: (
            tuple[contextlib.ExitStack, anyio.from_thread.BlockingPortal, _Core] | None
        ) = None
        super().__init__(
            base_url=base_url,
            transport=_SyncTransport(self),
            follow_redirects=follow_redirects,
            **httpx_options,
        )

    def _start(self, lifespan: bool) -> tuple[anyio.from_thread.BlockingPortal, _Core]:
        stack = contextlib.ExitStack()
        try:
            portal = stack.enter_context(
                anyio.from_thread.start_blocking_portal(self._backend, self._backend_options)
            )
            core = _Core(self.app, lifespan=lifespan, **self._options)  # type: ignore[arg-type]
            stack.enter_context(portal.wrap_async_context_manager(core))
        except BaseException:
            stack.close()
            raise
        self._running = (stack, portal, core)
        # A client dropped without close() must not leave its event loop thread
        # behind: the interpreter would wait for it forever at exit.
        self._finalizer = weakref.finalize(self, stack.close)
        return portal, core

    def _ensure_running(self) -> tuple[anyio.from_thread.BlockingPortal, _Core]:
        if self._running is None:
            return self._start(lifespan=False)
        return self._running[1], self._running[2]

    @property
    def app_state(self) -> dict[str, Any]:
        """The lifespan state (what the lifespan yielded)."""
        return self._ensure_running()[1].state

    def __enter__(self) -> TestClient:
        if self._running is not None:
            raise RuntimeError("this TestClient is already running")
        self._start(lifespan=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()

    def close(self) -> None:
        running, self._running = self._running, None
        try:
            if running is not None:
                self._finalizer.detach()
                running[0].close()
        finally:
            super().close()

    def websocket_connect(
        self,
        url: str,
        subprotocols: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
    ) -> WebSocketSession:
        """Open a WebSocket to the app; raises WebSocketDenied if it refuses."""
        portal, core = self._ensure_running()
        request, protocols = _websocket_request(self, url, subprotocols, headers)
        session = AsyncWebSocketSession(core, _websocket_scope(core, request, protocols))
        portal.call(session.connect, timeout)
        return WebSocketSession(portal, session)


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, client: AsyncTestClient) -> None:
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = self.client._core_or_fail()
        body = await request.aread()
        return await core.http(request, body)


class AsyncTestClient(httpx.AsyncClient):
    """An httpx.AsyncClient for an ASGI app in the running event loop.

    Use it as `async with AsyncTestClient(app) as client:` (this runs the
    lifespan, and owns the tasks that run the app).
    """

    __test__ = False

    def __init__(
        self,
        app: ASGIApp,
        base_url: str = "http://testserver",
        *,
        raise_server_exceptions: bool = True,
        root_path: str = "",
        lifespan: bool = True,
        client: tuple[str, int] = ("testclient", 50000),
        follow_redirects: bool = True,
        **httpx_options: Any,
    ) -> None:
        self.app = app
        self._core = _Core(
            app,
            lifespan=lifespan,
            raise_server_exceptions=raise_server_exceptions,
            root_path=root_path,
            client=client,
        )
        self._entered = False
        super().__init__(
            base_url=base_url,
            transport=_AsyncTransport(self),
            follow_redirects=follow_redirects,
            **httpx_options,
        )

    def _core_or_fail(self) -> _Core:
        if not self._entered:
            raise RuntimeError("use AsyncTestClient in an `async with` block")
        return self._core

    @property
    def app_state(self) -> dict[str, Any]:
        return self._core.state

    async def __aenter__(self) -> AsyncTestClient:
        await self._core.__aenter__()
        self._entered = True
        await super().__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc_value, traceback)
        finally:
            self._entered = False
            await self._core.__aexit__(exc_type, exc_value, traceback)

    @contextlib.asynccontextmanager
    async def websocket_connect(
        self,
        url: str,
        subprotocols: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
    ) -> AsyncIterator[AsyncWebSocketSession]:
        """Open a WebSocket to the app; raises WebSocketDenied if it refuses."""
        core = self._core_or_fail()
        request, protocols = _websocket_request(self, url, subprotocols, headers)
        session = AsyncWebSocketSession(core, _websocket_scope(core, request, protocols))
        await session.connect(timeout)
        try:
            yield session
        finally:
            await session.close()
