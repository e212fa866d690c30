"""Running a response's body next to a watch for the client's ``http.disconnect``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from microasgi.responses._streaming import _unwrap_single_error
from microasgi.types import Message, Receive, Send

__all__ = ["sent", "until_disconnect"]


async def until_disconnect(receive: Receive, work: Callable[[], Awaitable[bool]]) -> bool:
    """What `work` returns, or False if the client disconnects first (`work` is cancelled).

    An exception of `work` is raised as itself, not in an ExceptionGroup.
    """
    result = False
    with _unwrap_single_error():
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
