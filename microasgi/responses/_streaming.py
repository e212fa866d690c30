"""StreamingResponse: a body sent as an iterable produces it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from microasgi.responses._base import Response
from microasgi.types import Message, Receive, Scope, Send

__all__ = ["StreamingResponse"]

T = TypeVar("T")


ContentStream = AsyncIterable[str | bytes] | Iterable[str | bytes]


class StreamingResponse(Response):
    """A body sent chunk by chunk as an (async or sync) iterable produces it.

    `StreamingResponse(content, status_code=200, headers=None, media_type=None,
    background=None)`, `content` an iterable of str or bytes chunks; there is
    no Content-Length. Sync iterables are advanced in a worker thread. When the client goes away
    the iteration stops and the iterator is closed (`aclose()` / `close()`),
    so `finally:` blocks in generators run; background tasks then do not run.
    """

    body_iterator: ContentStream

    def _take(self, content: ContentStream) -> int | None:
        self.body = b""
        self.body_iterator = content
        return None  # sent with chunked encoding (HTTP/1.1) or its HTTP/2 framing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        iterator = _aiter_chunks(self.body_iterator)
        completed = False
        start = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        try:
            if not await _sent(send, start):
                pass  # the client is gone already
            elif scope.get("method") == "HEAD":
                completed = await _sent(send, {"type": "http.response.body", "body": b""})
            else:
                with _unwrap_single_error():
                    async with anyio.create_task_group() as tg:

                        async def watch_disconnect() -> None:
                            while (await receive())["type"] != "http.disconnect":
                                pass
                            tg.cancel_scope.cancel()

                        tg.start_soon(watch_disconnect)
                        completed = await self._send_body(iterator, send)
                        tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await iterator.aclose()
        if completed and self.background is not None:
            await self.background()

    async def _send_body(self, iterator: AsyncGenerator[str | bytes, None], send: Send) -> bool:
        """Send every chunk; False if the client went away (send raised OSError).

        An OSError the iterator itself raises (a failing upstream, a disk read)
        is an error of the app's, not a disconnect: it propagates.
        """
        charset = self.charset
        while True:
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                break
            except OSError as exc:
                # Not the client leaving (that is send's OSError): logged as the error it is.
                raise RuntimeError(f"the streaming response's iterator raised {exc!r}") from exc
            if isinstance(chunk, str):
                chunk = chunk.encode(charset)
            message = {"type": "http.response.body", "body": chunk, "more_body": True}
            if not await _sent(send, message):
                return False
        return await _sent(send, {"type": "http.response.body", "body": b""})


async def _sent(send: Send, message: Message) -> bool:
    """Send `message`; False if the client is gone (ASGI 2.4 servers raise OSError)."""
    try:
        await send(message)
    except OSError:
        return False
    return True


@contextmanager
def _unwrap_single_error() -> Iterator[None]:
    """Let the iterator's own exception out of the task group, not an ExceptionGroup."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            error = group.exceptions[0]
            raise error from error.__cause__  # its own cause kept, the group dropped
        raise


_STOP = object()


def _next_or_stop(iterator: Iterator[Any]) -> Any:
    return next(iterator, _STOP)


async def _aiter_chunks(content: AsyncIterable[T] | Iterable[T]) -> AsyncGenerator[T, None]:
    """One async generator over either kind of iterable, closing the source when closed.

    A sync iterable is advanced in a worker thread.
    """
    if isinstance(content, AsyncIterable):
        source = content.__aiter__()
        try:
            async for chunk in source:
                yield chunk
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
    else:
        sync_iter = iter(content)
        try:
            while (chunk := await anyio.to_thread.run_sync(_next_or_stop, sync_iter)) is not _STOP:
                yield chunk
        finally:
            close = getattr(sync_iter, "close", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(close)
