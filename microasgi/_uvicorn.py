"""The WebSocket protocol `python -m microasgi run` gives uvicorn: every handshake answered.

uvicorn's default WebSocket implementation (``--ws auto``, the websockets
library's Sans-I/O protocol) has a gap: when that library cannot parse the
handshake request (a request line or a header line over 8 KiB, more than 128
headers, a line it does not understand), uvicorn sends nothing and leaves the
socket open, so each such request holds a connection until the client gives up.
The websockets library has already written its refusal (414 or 431) or at least
ended its side; `HandshakeAnsweringProtocol` sends that refusal, or a plain 400
when there is none, and closes the connection. Everything else is uvicorn's.

`PerMessageProtocol` also negotiates permessage-deflate without context takeover
in either direction (RFC 7692, 7.1.1): each message is compressed on its own, so an
idle connection keeps no zlib state. uvicorn's own setting keeps both contexts (a
12-bit window each way, zlib memLevel 5), about 40 KiB per connection for as long
as it is open; `--ws-deflate context` chooses that.

This module imports uvicorn and websockets: only the CLI imports it, when both are there.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

__all__ = ["PROTOCOLS", "HandshakeAnsweringProtocol", "PerMessageProtocol"]

logger = logging.getLogger("uvicorn.error")

PROTOCOLS = {
    "message": "microasgi._uvicorn:PerMessageProtocol",
    "context": "microasgi._uvicorn:HandshakeAnsweringProtocol",
    "off": "microasgi._uvicorn:HandshakeAnsweringProtocol",  # with ws_per_message_deflate off
}
"""The import string for uvicorn's `ws` setting, for each `--ws-deflate` choice
(strings, not classes, so that they reach worker processes)."""

_BODY = b"Failed to open a WebSocket connection: the handshake request is invalid.\n"
_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n"
    b"\r\n%s" % (len(_BODY), _BODY)
)


class HandshakeAnsweringProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, answering handshakes it cannot parse."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        error = self.conn.handshake_exc
        if self.handshake_initiated or error is None or self.transport.is_closing():
            return
        # The request never became a handshake: refuse it, as the library would have.
        answer = b"".join(self.conn.data_to_send()) or _BAD_REQUEST
        logger.warning("Invalid WebSocket handshake request: %s", error.__cause__ or error)
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.transport.write(answer)
        self.transport.close()


class PerMessageProtocol(HandshakeAnsweringProtocol):
    """The same, compressing each message on its own (no context takeover either way)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate:
            # What the handshake may agree to: read only when the request comes.
            self.conn.available_extensions = [_PER_MESSAGE]


_PER_MESSAGE = ServerPerMessageDeflateFactory(
    server_no_context_takeover=True,
    client_no_context_takeover=True,
    server_max_window_bits=12,
    compress_settings={"memLevel": 5},
)
"""One for every connection: a factory keeps no state of its own."""
