"""Publish/subscribe for fanning messages out, e.g. to WebSocket clients.

`Broadcast("memory://")` works inside one process; `Broadcast("redis://host:port/db")`
across processes and machines through Redis pub/sub (`pip install microasgi[redis]`).
See docs/broadcast.md for delivery guarantees and the slow-subscriber policy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio
from anyio.abc import TaskGroup

from microasgi.broadcast._events import Event, Subscriber
from microasgi.broadcast._memory import MemoryBackend

__all__ = ["Broadcast", "BroadcastError", "Event", "Subscriber"]


class BroadcastError(Exception):
    """The backend cannot be reached (at connect, or for a publish)."""


class Backend(Protocol):
    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def subscribe(self, channel: str) -> None: ...

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, message: str) -> None: ...


class Broadcast:
    """A pub/sub hub: `publish(channel, message)` and `subscribe(channel)`.

    Use it in `async with broadcast:` (for instance in the app's lifespan).
    Messages are strings; encode anything else (e.g. JSON) yourself. Every
    subscriber has its own queue of at most `max_queue` events (see Subscriber).
    """

    def __init__(self, url: str = "memory://", *, max_queue: int = 1000, **options: Any) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.url = url
        self.max_queue = max_queue
        self._subscribers: dict[str, set[Subscriber]] = {}
        # Channels the backend listens to, and a lock per channel so that one
        # subscriber at a time sets that up (the others wait, or retry if it failed).
        self._live: set[str] = set()
        self._locks: dict[str, anyio.Lock] = {}
        self._stack: AsyncExitStack | None = None
        scheme = urlsplit(url).scheme
        self._backend: Backend
        if scheme == "memory":
            if options:
                raise TypeError(f"memory:// takes no options, got {sorted(options)}")
            self._backend = MemoryBackend(self._deliver)
        elif scheme in ("redis", "rediss", "unix"):
            from microasgi.broadcast._redis import RedisBackend

            self._backend = RedisBackend(url, self._deliver, self._task_group, **options)
        else:
            raise ValueError(f"unsupported broadcast URL {url!r}: use memory:// or redis://")

    def _task_group(self) -> TaskGroup:
        if self._stack is None:
            raise RuntimeError("use the Broadcast in `async with broadcast:` first")
        return self._tg

    async def connect(self) -> None:
        """Connect the backend (raises BroadcastError if it cannot be reached)."""
        if self._stack is not None:
            raise RuntimeError("this Broadcast is already connected")
        # Closed in reverse: cancel the backend's tasks, wait for them, then disconnect.
        stack = AsyncExitStack()
        stack.push_async_callback(self._backend.disconnect)
        self._tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(self._tg.cancel_scope.cancel)
        self._stack = stack
        try:
            await self._backend.connect()
        except BaseException:
            await self.disconnect()
            raise

    async def disconnect(self) -> None:
        """Disconnect; every subscriber's iteration ends."""
        stack, self._stack = self._stack, None
        self._live.clear()
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                subscriber.close()
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> Broadcast:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    async def publish(self, channel: str, message: str) -> None:
        """Send `message` to every subscriber of `channel` (raises BroadcastError if
        the backend is unreachable: the message was not sent)."""
        if self._stack is None:
            raise RuntimeError("use the Broadcast in `async with broadcast:` first")
        if not isinstance(message, str):
            raise TypeError(f"messages are str, not {type(message).__name__}: encode it first")
        await self._backend.publish(channel, message)

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscriber]:
        """Subscribe to `channel` for the duration of the `async with` block."""
        if self._stack is None:
            raise RuntimeError("use the Broadcast in `async with broadcast:` first")
        subscriber = Subscriber(channel, self.max_queue)
        subscribers = self._subscribers.setdefault(channel, set())
        subscribers.add(subscriber)
        lock = self._locks.setdefault(channel, anyio.Lock())
        try:
            async with lock:
                if channel not in self._live:
                    await self._backend.subscribe(channel)
                    self._live.add(channel)
            yield subscriber
        finally:
            subscriber.close()
            subscribers.discard(subscriber)
            if not subscribers:
                del self._subscribers[channel]
                self._locks.pop(channel, None)
                if channel in self._live:
                    self._live.discard(channel)
                    if self._stack is not None:
                        with anyio.CancelScope(shield=True):
                            await self._backend.unsubscribe(channel)

    def subscriber_count(self, channel: str) -> int:
        """How many subscribers `channel` has in this process."""
        return len(self._subscribers.get(channel, ()))

    def _deliver(self, event: Event) -> None:
        for subscriber in self._subscribers.get(event.channel, ()):
            subscriber.put(event)
