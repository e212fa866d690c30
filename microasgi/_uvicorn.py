"""The WebSocket protocol `python -m microasgi run` gives uvicorn: every handshake answered.

uvicorn's default WebSocket implementation (``--ws auto``, the websockets
library's Sans-I/O protocol) has a gap: when that library cannot parse the
handshake request (a request line or a header line over 8 KiB, more than 128
headers, a line it does not understand), uvicorn sends nothing and leaves the
socket open, so each such request holds a connection until the client gives up.
The websockets library has already written its refusal (414 or 431) or at least
ended its side; `HandshakeAnsweringProtocol` sends that refusal, or a plain 400
when there is none, and closes the connection. Everything else is uvicorn's.

This module imports uvicorn and websockets: only the CLI imports it, when both are there.
"""

from __future__ import annotations

import logging

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["PROTOCOL", "HandshakeAnsweringProtocol"]

logger = logging.getLogger("uvicorn.error")

PROTOCOL = "microasgi._uvicorn:HandshakeAnsweringProtocol"
"""The import string for uvicorn's `ws` setting (strings also reach worker processes)."""

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
