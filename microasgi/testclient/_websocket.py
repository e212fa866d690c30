"""WebSocket sessions of the test clients."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import anyio.from_thread
import httpx

from microasgi.testclient._core import DEFAULT_TIMEOUT, Core, stream_pair
from microasgi.types import Message
from microasgi.websockets import WebSocketDisconnect, _payload

#: How long a disconnect may sit unread before the handler counts as not
#: listening and is cancelled (a handler that reads it gets `timeout` to finish).
UNREAD_GRACE = 0.1


class WebSocketDenied(Exception):
    """The app refused the WebSocket handshake (closed before accepting, or sent a response)."""

    def __init__(
        self, status_code: int, headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b""
    ) -> None:
        super().__init__(f"WebSocket handshake denied with HTTP {status_code}")
        self.status_code = status_code
        self.headers = httpx.Headers(headers or [])
        self.body = body


class AsyncWebSocketSession:
    """The client side of one WebSocket connection to the app."""

    def __init__(self, core: Core, scope: dict[str, Any]) -> None:
        self.core = core
        self.scope = scope
        self.to_app, self._app_receive = stream_pair()
        self._app_send, self.from_app = stream_pair()
        self.accepted_subprotocol: str | None = None
        self.extra_headers: list[tuple[bytes, bytes]] = []
        self.error: BaseException | None = None
        self.done = anyio.Event()
        self.closed = False
        self._cancel_scope: anyio.CancelScope | None = None

    async def _run(self) -> None:
        try:
            with anyio.CancelScope() as self._cancel_scope:
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
            with anyio.fail_after(timeout if timeout is not None else DEFAULT_TIMEOUT):
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

    async def receive(self, timeout: float | None = DEFAULT_TIMEOUT) -> Message:
        """The next raw message the app sent; raises WebSocketDisconnect on its close."""
        message = await self._next(timeout)
        if message["type"] == "websocket.close":
            self.closed = True
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        return message

    async def receive_text(self, timeout: float | None = DEFAULT_TIMEOUT) -> str:
        text: str = _payload(await self.receive(timeout), "text")
        return text

    async def receive_bytes(self, timeout: float | None = DEFAULT_TIMEOUT) -> bytes:
        data: bytes = _payload(await self.receive(timeout), "bytes")
        return data

    async def receive_json(
        self, timeout: float | None = DEFAULT_TIMEOUT, mode: str = "text"
    ) -> Any:
        message = await self.receive(timeout)
        return json.loads(message["text"] if mode == "text" else message["bytes"])

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close from the client side and wait for the app's handler to finish."""
        if not self.closed:
            self.closed = True
            await self.send({"type": "websocket.disconnect", "code": code, "reason": reason or ""})
        await self.finish()

    async def finish(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait for the handler to end, and cancel it if it will not.

        A handler that reads the disconnect gets `timeout` seconds to finish (its
        cleanup may still send or publish); one that leaves it unread is not
        listening and is cancelled at once.
        """
        unread_since: float | None = None
        deadline = anyio.current_time() + timeout
        while not self.done.is_set() and anyio.current_time() < deadline:
            if self.to_app.statistics().current_buffer_used:
                now = anyio.current_time()
                unread_since = now if unread_since is None else unread_since
                if now - unread_since >= UNREAD_GRACE:
                    break
            else:
                unread_since = None
            with anyio.move_on_after(0.01):
                await self.done.wait()
        if not self.done.is_set():
            if self._cancel_scope is not None:
                self._cancel_scope.cancel()
            await self.done.wait()
        error = self.error
        if self.core.raise_server_exceptions and not isinstance(error, WebSocketDisconnect | None):
            raise error


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

    def receive(self, timeout: float | None = DEFAULT_TIMEOUT) -> Message:
        return self._portal.call(self._session.receive, timeout)

    def receive_text(self, timeout: float | None = DEFAULT_TIMEOUT) -> str:
        return self._portal.call(self._session.receive_text, timeout)

    def receive_bytes(self, timeout: float | None = DEFAULT_TIMEOUT) -> bytes:
        return self._portal.call(self._session.receive_bytes, timeout)

    def receive_json(self, timeout: float | None = DEFAULT_TIMEOUT, mode: str = "text") -> Any:
        return self._portal.call(self._session.receive_json, timeout, mode)

    def close(self, code: int = 1000, reason: str | None = None) -> None:
        self._portal.call(self._session.close, code, reason)

    def __enter__(self) -> WebSocketSession:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def websocket_request(
    client: httpx.Client | httpx.AsyncClient,
    url: str,
    subprotocols: Sequence[str] | None,
    headers: Mapping[str, str] | None,
) -> tuple[httpx.Request, list[str]]:
    request = client.build_request("GET", url, headers=headers)
    # What every real client sends with the handshake (RFC 6455, section 4.1).
    request.headers["connection"] = "upgrade"
    request.headers["upgrade"] = "websocket"
    request.headers.setdefault("sec-websocket-key", base64.b64encode(os.urandom(16)).decode())
    request.headers.setdefault("sec-websocket-version", "13")
    protocols = list(subprotocols or [])
    if protocols:
        request.headers["sec-websocket-protocol"] = ", ".join(protocols)
    return request, protocols


def websocket_scope(core: Core, request: httpx.Request, protocols: list[str]) -> dict[str, Any]:
    scope = core._scope("websocket", request)
    scope["subprotocols"] = protocols
    scope["extensions"] = {"websocket.http.response": {}}
    return scope
