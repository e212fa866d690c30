"""WebSocket: friendly calls over the raw websocket.* events, with a state machine."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from microasgi._context import DEFAULT_MAX_MESSAGE_SIZE, context_of
from microasgi._json import decode_json, encode_json
from microasgi.requests import HTTPConnection
from microasgi.responses import PlainTextResponse, Response
from microasgi.types import Message, Receive, Scope, Send, WebSocketState

__all__ = ["WebSocket", "WebSocketDisconnect", "WebSocketState"]


class WebSocketDisconnect(Exception):
    """The connection is over: the client left (or the app closed it)."""

    def __init__(self, code: int = 1000, reason: str | None = None) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason or ""

    def __str__(self) -> str:
        return f"WebSocket closed with code {self.code}" + (
            f": {self.reason}" if self.reason else ""
        )


_WRONG_KIND = {
    "text": "expected a text message, received a binary one",
    "bytes": "expected a binary message, received a text one",
}


def _payload(message: Message, kind: str) -> Any:
    """The message's "text" or "bytes"; the other kind of message is a TypeError."""
    payload = message.get(kind)
    if payload is None:
        raise TypeError(_WRONG_KIND[kind])
    return payload


class WebSocket(HTTPConnection):
    """One WebSocket connection.

    `client_state` follows what the client did (connect, disconnect),
    `application_state` what the app did (accept, close). Calls that make no
    sense in the current state raise RuntimeError saying why.
    """

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise ValueError("WebSocket needs a websocket scope")
        super().__init__(scope, receive, send)
        self.client_state = WebSocketState.CONNECTING
        self.application_state = WebSocketState.CONNECTING
        # Looked up once per connection, not per message.
        context = context_of(scope)
        self.max_message_size = (
            DEFAULT_MAX_MESSAGE_SIZE if context is None else context.max_message_size
        )

    async def receive(self) -> Message:
        """The next raw event from the client."""
        client = self.client_state
        if client is WebSocketState.CLOSED:
            raise RuntimeError("cannot receive: the client has already disconnected")
        if self.application_state is WebSocketState.CLOSED:
            raise RuntimeError("cannot receive: the application has closed the connection")
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive" and client is WebSocketState.CONNECTED:
            # The common case first: a message on an open connection.
            if self.max_message_size is not None and self._too_big(message):
                limit = self.max_message_size
                await self.close(1009, f"message larger than {limit} bytes")
                raise WebSocketDisconnect(1009, f"message larger than {limit} bytes")
            return message
        if client is WebSocketState.CONNECTING:
            if kind != "websocket.connect":
                raise RuntimeError(f'expected "websocket.connect", got {kind!r}')
            self.client_state = WebSocketState.CONNECTED
        elif kind == "websocket.disconnect":
            self.client_state = WebSocketState.CLOSED
        else:
            raise RuntimeError(
                f'expected "websocket.receive" or "websocket.disconnect", got {kind!r}'
            )
        return message

    def _too_big(self, message: Message) -> bool:
        limit: int = self.max_message_size  # type: ignore[assignment]  # checked by the caller
        data = message.get("bytes")
        if data is not None:
            return len(data) > limit
        text = message.get("text") or ""
        # A character is 1 to 4 bytes in UTF-8: encode only when it could matter.
        return len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit)

    async def send(self, message: Message) -> None:
        """Send a raw event, checked against the connection state."""
        kind = message["type"]
        state = self.application_state
        if state is WebSocketState.CONNECTING:
            if kind == "websocket.accept":
                self.application_state = WebSocketState.CONNECTED
            elif kind == "websocket.close":
                self.application_state = WebSocketState.CLOSED
            elif kind == "websocket.http.response.start":
                self.application_state = WebSocketState.RESPONSE
            else:
                raise RuntimeError(f"cannot send {kind!r} before the connection is accepted")
        elif state is WebSocketState.CONNECTED:
            if kind == "websocket.close":
                self.application_state = WebSocketState.CLOSED
            elif kind != "websocket.send":
                raise RuntimeError(f"cannot send {kind!r} on an open connection")
        elif state is WebSocketState.RESPONSE:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"cannot send {kind!r} while sending a denial response")
            if not message.get("more_body", False):
                self.application_state = WebSocketState.CLOSED
        else:
            raise RuntimeError(f"cannot send {kind!r}: the connection is closed")
        await self._sent(message)

    async def accept(
        self, subprotocol: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        """Accept the handshake, optionally choosing a subprotocol and adding headers."""
        if self.client_state is WebSocketState.CONNECTING:
            await self.receive()  # the websocket.connect event
        raw = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ]
        # Always a "headers" list, so a middleware can append to it.
        await self.send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": raw})

    def _check_can_receive(self) -> None:
        if self.application_state is WebSocketState.CONNECTING:
            raise RuntimeError('WebSocket is not connected: call "accept()" first')
        if self.application_state is not WebSocketState.CONNECTED:
            raise RuntimeError("cannot receive: the application has closed the connection")

    async def _receive_data(self) -> Message:
        self._check_can_receive()
        message = await self.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        return message

    async def receive_text(self) -> str:
        """The next text message; a binary one raises TypeError."""
        text: str = _payload(await self._receive_data(), "text")
        return text

    async def receive_bytes(self) -> bytes:
        """The next binary message; a text one raises TypeError."""
        data: bytes = _payload(await self._receive_data(), "bytes")
        return data

    async def receive_json(self, mode: str = "text") -> Any:
        """The next message parsed as JSON.

        A message that is not JSON (RFC 8259: no NaN, no lone surrogates, not
        nested too deeply...) raises ValueError, the same error whatever the
        cause, and the connection stays open: catch it to answer the client.
        """
        if mode not in ("text", "binary"):
            raise ValueError('mode must be "text" or "binary"')
        data: str | bytes = await (self.receive_text() if mode == "text" else self.receive_bytes())
        return decode_json(data)

    def iter_text(self) -> AsyncIterator[str]:
        """Text messages until the client disconnects; a binary one raises TypeError."""
        return self._iter_payloads("text")

    def iter_bytes(self) -> AsyncIterator[bytes]:
        """Binary messages until the client disconnects; a text one raises TypeError."""
        return self._iter_payloads("bytes")

    async def _iter_payloads(self, kind: str) -> AsyncIterator[Any]:
        self._check_can_receive()
        with contextlib.suppress(WebSocketDisconnect):  # too big: closed with 1009
            while (message := await self.receive())["type"] != "websocket.disconnect":
                yield _payload(message, kind)

    async def iter_json(self) -> AsyncIterator[Any]:
        """JSON messages until the client disconnects."""
        try:
            while True:
                yield await self.receive_json()
        except WebSocketDisconnect:
            pass

    async def send_text(self, data: str) -> None:
        """Send a text message."""
        if self.application_state is WebSocketState.CONNECTED:  # the common case, direct
            await self._sent({"type": "websocket.send", "text": data})
        else:
            await self.send({"type": "websocket.send", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        if self.application_state is WebSocketState.CONNECTED:
            await self._sent({"type": "websocket.send", "bytes": data})
        else:
            await self.send({"type": "websocket.send", "bytes": data})

    async def _sent(self, message: Message) -> None:
        """Send to the server; an OSError (ASGI 2.4: the client has gone) becomes a
        WebSocketDisconnect(1006), as when receiving."""
        try:
            await self._send(message)
        except OSError:
            self.client_state = WebSocketState.CLOSED
            raise WebSocketDisconnect(1006) from None

    async def send_json(self, data: Any, mode: str = "text") -> None:
        """Send `data` as compact JSON (NaN and infinities are refused: ValueError)."""
        if mode == "text":
            await self.send_text(encode_json(data).decode("utf-8"))
        elif mode == "binary":
            await self.send_bytes(encode_json(data))
        else:
            raise ValueError('mode must be "text" or "binary"')

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection; before accept() this denies the handshake (HTTP 403,
        with `reason` as the body where the server supports denial responses).

        Closing a connection that is already closed does nothing.
        """
        if self.application_state is WebSocketState.CLOSED:
            return
        if self.application_state is WebSocketState.CONNECTING and self.can_send_denial_response:
            await self.send_denial_response(PlainTextResponse(reason or "Forbidden", 403))
            return
        await self.send({"type": "websocket.close", "code": code, "reason": reason})

    @property
    def can_send_denial_response(self) -> bool:
        """Whether the server lets the app refuse a handshake with an HTTP response."""
        return "websocket.http.response" in (self.scope.get("extensions") or {})

    async def send_denial_response(self, response: Response) -> None:
        """Refuse the handshake with `response` (status, headers and body).

        Needs the server's websocket.http.response extension (uvicorn has it);
        without it, use close(), which the server turns into a 403.
        """
        if self.application_state is not WebSocketState.CONNECTING:
            raise RuntimeError("a denial response can only be sent before accept()")
        if not self.can_send_denial_response:
            raise RuntimeError("the server does not support WebSocket denial responses")

        async def send(message: Message) -> None:
            await self.send({**message, "type": "websocket." + message["type"]})

        await response(self.scope, self._receive, send)
