"""The ASGI callable types every piece of microasgi is built from."""

import enum
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class WebSocketState(enum.Enum):
    """Where one side of a WebSocket connection is (see `WebSocket`)."""

    CONNECTING = 0
    CONNECTED = 1
    CLOSED = 2
    RESPONSE = 3  # the app is sending a denial response instead of accepting


__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send", "WebSocketState"]
