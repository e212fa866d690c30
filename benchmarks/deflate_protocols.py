"""uvicorn WebSocket protocols for measuring permessage-deflate's cost per connection.

`python -m microasgi run` gives uvicorn `microasgi._uvicorn:HandshakeAnsweringProtocol`
(uvicorn's websockets-sansio protocol), which accepts permessage-deflate with 12-bit
windows and zlib memLevel 5. `benchmarks/chat_load.py --server-deflate small` serves the
chat with the protocol below instead (9-bit windows, memLevel 1), to measure what a
smaller window would save; `--server-deflate off` runs uvicorn with
`ws_per_message_deflate=False`. Only the benchmark uses this module.
"""

from __future__ import annotations

import logging
from typing import Any

from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol

from microasgi._uvicorn import HandshakeAnsweringProtocol

__all__ = ["SmallWindowProtocol"]


class SmallWindowProtocol(HandshakeAnsweringProtocol):
    """The CLI's protocol, negotiating 9-bit deflate windows and zlib memLevel 1."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.config.ws_per_message_deflate:
            deflate = ServerPerMessageDeflateFactory(
                server_max_window_bits=9,
                client_max_window_bits=9,
                compress_settings={"memLevel": 1},
            )
            self.conn = ServerProtocol(
                extensions=[deflate],
                max_size=self.config.ws_max_size,
                logger=logging.getLogger("uvicorn.error"),
            )
