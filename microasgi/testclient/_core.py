"""The async core shared by both test clients: the app's task group, lifespan, HTTP."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.from_thread
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from microasgi.types import ASGIApp, Message

DEFAULT_TIMEOUT = 10.0


def stream_pair() -> tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Message]]:
    return anyio.create_memory_object_stream[Message](math.inf)


class Core:
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

    async def __aenter__(self) -> Core:
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
        to_app, app_receive = stream_pair()
        app_send, from_app = stream_pair()
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
        timeout = (request.extensions.get("timeout") or {}).get("read") or DEFAULT_TIMEOUT
        exchange = HTTPExchange(self, scope, body)
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


class HTTPExchange(httpx.AsyncByteStream):
    """One request/response: feeds the app its body, collects what it sends."""

    def __init__(self, core: Core, scope: dict[str, Any], body: bytes) -> None:
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
        with anyio.move_on_after(DEFAULT_TIMEOUT):
            await self.finished.wait()


class SyncStream(httpx.SyncByteStream):
    def __init__(self, portal: anyio.from_thread.BlockingPortal, exchange: HTTPExchange) -> None:
        self.portal = portal
        self.exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self.portal.call(self.exchange.next_chunk)) is not None:
            yield chunk

    def close(self) -> None:
        self.portal.call(self.exchange.aclose)
