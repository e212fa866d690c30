"""The in-process backend: `memory://`."""

from __future__ import annotations

from collections.abc import Callable

from microasgi.broadcast._events import Event

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Delivers each message straight to this process's subscribers.

    Nothing is ever lost in transit (there is no transit); only a slow
    subscriber's own queue can overflow.
    """

    def __init__(self, deliver: Callable[[Event], None]) -> None:
        self._deliver = deliver

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass

    async def subscribe(self, channel: str) -> None:
        pass

    async def unsubscribe(self, channel: str) -> None:
        pass

    async def publish(self, channel: str, message: str) -> None:
        self._deliver(Event(channel, message))
