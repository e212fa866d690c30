"""TestClient and AsyncTestClient: httpx clients that talk to an ASGI app in process.

Requests run the app as a task; the response streams back chunk by chunk, so
streaming endpoints can be tested as they stream. `with TestClient(app)` (or
`async with AsyncTestClient(app)`) runs the lifespan. WebSocket sessions fail
with TimeoutError instead of hanging when the app says nothing.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import anyio
import anyio.from_thread
import httpx

from microasgi.testclient._core import (
    DEFAULT_TIMEOUT,
    Core,
    HTTPExchange,
    SyncStream,
)
from microasgi.testclient._websocket import (
    AsyncWebSocketSession,
    WebSocketDenied,
    WebSocketSession,
    websocket_request,
    websocket_scope,
)
from microasgi.types import ASGIApp

__all__ = [
    "AsyncTestClient",
    "AsyncWebSocketSession",
    "TestClient",
    "WebSocketDenied",
    "WebSocketSession",
]


class _SyncTransport(httpx.BaseTransport):
    def __init__(self, client: TestClient) -> None:
        self.client = client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        portal, core = self.client._ensure_running()
        body = request.read()
        response = portal.call(core.http, request, body)
        if isinstance(response.stream, HTTPExchange):  # not for a made-up 500
            response.stream = SyncStream(portal, response.stream)
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
            tuple[contextlib.ExitStack, anyio.from_thread.BlockingPortal, Core] | None
        ) = None
        super().__init__(
            base_url=base_url,
            transport=_SyncTransport(self),
            follow_redirects=follow_redirects,
            **httpx_options,
        )

    def _start(self, lifespan: bool) -> tuple[anyio.from_thread.BlockingPortal, Core]:
        stack = contextlib.ExitStack()
        try:
            portal = stack.enter_context(
                anyio.from_thread.start_blocking_portal(self._backend, self._backend_options)
            )
            core = Core(self.app, lifespan=lifespan, **self._options)  # type: ignore[arg-type]
            stack.enter_context(portal.wrap_async_context_manager(core))
        except BaseException:
            stack.close()
            raise
        self._running = (stack, portal, core)
        # A client dropped without close() must not leave its event loop thread
        # behind: the interpreter would wait for it forever at exit.
        self._finalizer = weakref.finalize(self, stack.close)
        return portal, core

    def _ensure_running(self) -> tuple[anyio.from_thread.BlockingPortal, Core]:
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
        """Shut the lifespan down; the client stays usable (without a lifespan)."""
        self._stop()

    def _stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            self._finalizer.detach()
            running[0].close()

    def close(self) -> None:
        """Stop the app's event loop and close the client."""
        try:
            self._stop()
        finally:
            super().close()

    def websocket_connect(
        self,
        url: str,
        subprotocols: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> WebSocketSession:
        """Open a WebSocket to the app; raises WebSocketDenied if it refuses."""
        portal, core = self._ensure_running()
        request, protocols = websocket_request(self, url, subprotocols, headers)
        session = AsyncWebSocketSession(core, websocket_scope(core, request, protocols))
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
        self._core = Core(
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

    def _core_or_fail(self) -> Core:
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
        timeout: float = DEFAULT_TIMEOUT,
    ) -> AsyncIterator[AsyncWebSocketSession]:
        """Open a WebSocket to the app; raises WebSocketDenied if it refuses."""
        core = self._core_or_fail()
        request, protocols = websocket_request(self, url, subprotocols, headers)
        session = AsyncWebSocketSession(core, websocket_scope(core, request, protocols))
        await session.connect(timeout)
        try:
            yield session
        finally:
            await session.close()
