"""What streamed bodies share: iterating any iterable, closing it, sending, and
watching for the client's ``http.disconnect`` meanwhile."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from microasgi.types import Message, Receive, Send

__all__ = ["aiter_chunks", "close_unused", "sent", "until_disconnect", "unwrap_single_error"]

T = TypeVar("T")


async def until_disconnect(receive: Receive, work: Callable[[], Awaitable[bool]]) -> bool:
    """What `work` returns, or False if the client disconnects first (`work` is cancelled).

    An exception of `work` is raised as itself, not in an ExceptionGroup.
    """
    result = False
    with unwrap_single_error():
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                message: Message = await receive()
                while message["type"] != "http.disconnect":
                    message = await receive()
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            result = await work()
            tg.cancel_scope.cancel()
    return result


async def sent(send: Send, message: Message) -> bool:
    """Send `message`; False if the client is gone.

    ASGI 2.4 servers raise an OSError from send() once the client has left.
    Only send() is guarded, so an OSError of the application's own (a
    database that refused a connection) is never taken for a disconnect.
    """
    try:
        await send(message)
    except OSError:
        return False
    return True


@contextmanager
def unwrap_single_error() -> Iterator[None]:
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


async def aiter_chunks(content: AsyncIterable[T] | Iterable[T]) -> AsyncGenerator[T, None]:
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


async def close_unused(iterable: Any) -> None:
    """Close an iterator that was never iterated (an async one, or a sync one in a thread)."""
    aclose = getattr(iterable, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    close = getattr(iterable, "close", None)
    if close is not None:
        await anyio.to_thread.run_sync(close)
