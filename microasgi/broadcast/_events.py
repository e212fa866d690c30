"""Events and subscribers: what `Broadcast.subscribe` hands out."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import anyio

__all__ = ["Event", "Subscriber"]

EventKind = Literal["message", "gap", "reconnected"]


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened on a channel.

    `kind` is "message" for a published message (in `message`); "gap" when
    messages were lost before this point (`missed` of them, or None when the
    number is unknown): the subscriber fell behind, or the backend lost its
    connection; "reconnected" when the backend came back and nothing was lost.
    """

    channel: str
    message: str | None = None
    kind: EventKind = "message"
    missed: int | None = None


class Subscriber:
    """A subscription to one channel: an async iterator of Events.

    Events wait in a bounded queue (`max_queue`). When a slow subscriber
    falls behind, the oldest events are dropped and counted in `dropped`, and
    the next event it reads is a "gap" saying how many it missed: publishers
    and other subscribers never wait for it.
    """

    def __init__(self, channel: str, max_queue: int) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.channel = channel
        self.max_queue = max_queue
        self.dropped = 0
        self._queue: deque[Event] = deque()
        self._missed = 0  # dropped since the subscriber last read: reported as a gap
        self._wakeup = anyio.Event()
        self._closed = False

    def put(self, event: Event) -> None:
        """Queue an event (never waits; drops the oldest when full)."""
        if self._closed:
            return
        if len(self._queue) >= self.max_queue:
            self._queue.popleft()
            self.dropped += 1
            self._missed += 1
        self._queue.append(event)
        self._wakeup.set()

    def close(self) -> None:
        """End the iteration once the queued events are read."""
        self._closed = True
        self._wakeup.set()

    async def get(self) -> Event:
        """The next event; raises StopAsyncIteration once closed and drained."""
        while not self._queue and not self._missed:
            if self._closed:
                raise StopAsyncIteration
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
        if self._missed:
            missed, self._missed = self._missed, 0
            return Event(self.channel, None, "gap", missed)
        return self._queue.popleft()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self.get()

    def __repr__(self) -> str:
        return f"<Subscriber {self.channel!r} queued={len(self._queue)} dropped={self.dropped}>"
