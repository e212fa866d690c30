"""StreamingResponse: a body sent as an iterable produces it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from typing import Any

import anyio

from microasgi.responses._base import Response
from microasgi.responses._stream import aiter_chunks, close_unused, sent, until_disconnect
from microasgi.types import Message, Receive, Scope, Send

__all__ = ["StreamingResponse"]


ContentStream = AsyncIterable[str | bytes] | Iterable[str | bytes]


class StreamingResponse(Response):
    """A body sent chunk by chunk as an (async or sync) iterable produces it.

    `StreamingResponse(content, status_code=200, headers=None, media_type=None,
    background=None)`, `content` an iterable of str or bytes chunks; there is
    no Content-Length. Sync iterables are advanced in a worker thread. When the
    client goes away the iteration stops and the iterable is closed
    (`aclose()` / `close()`), so `finally:` blocks in generators run; background
    tasks then do not run. An exception the iterable raises (an `OSError`
    included: only `send()` speaks for the client) ends the response short and
    is logged.
    """

    body_iterator: Any

    def _take(self, content: Any) -> int | None:
        self.body = b""
        self.body_iterator = content
        return None  # sent with chunked encoding (HTTP/1.1) or its HTTP/2 framing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        iterator = aiter_chunks(self.body_iterator)
        streamed = completed = False
        try:
            start = {"type": "http.response.start", "status": self.status_code}
            if not await sent(send, {**start, "headers": self.raw_headers}):
                pass  # the client left before the headers
            elif scope.get("method") == "HEAD":
                completed = await sent(send, {"type": "http.response.body", "body": b""})
            else:
                streamed = True
                # Told through `ended`, not a return value: a disconnect noticed after
                # the last message went out must not turn a complete stream incomplete.
                ended: list[bool] = []
                await until_disconnect(receive, lambda: self._stream(iterator, send, ended))
                completed = bool(ended)
        finally:
            with anyio.CancelScope(shield=True):
                await iterator.aclose()
                if not streamed:
                    await close_unused(self.body_iterator)  # never iterated: close it here
        if completed and self.background is not None:
            await self.background()

    async def _stream(
        self, iterator: AsyncGenerator[Any, None], send: Send, ended: list[bool]
    ) -> bool:
        """Send every chunk, then the end (True, also put in `ended`); False as soon as
        the client is gone."""
        charset = self.charset
        async for chunk in iterator:
            body = chunk.encode(charset) if isinstance(chunk, str) else chunk
            message: Message = {"type": "http.response.body", "body": body, "more_body": True}
            if not await sent(send, message):
                return False
        if await sent(send, {"type": "http.response.body", "body": b""}):
            ended.append(True)
            return True
        return False
