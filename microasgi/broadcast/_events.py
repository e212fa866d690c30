"""Events and subscribers: what `Broadcast.subscribe` hands out.

A subscriber knows its place in the channel: the epoch and number of the last
message it queued. A live message that comes next in line is queued; one it
already has (it came through a catch-up) is skipped; one that leaves a hole,
or belongs to another epoch, stops the live flow: the subscriber holds live
messages back while the Broadcast reads what is missing from the backend's
history (a "catch-up"), then queues what the history holds and lets the held
messages through, skipping those the history already gave.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import anyio

from microasgi.broadcast._base import Replay, format_position

__all__ = ["Event", "Subscriber"]

EventKind = Literal["message", "gap", "reset"]

# How a subscriber's next catch-up reads the history.
START = 0  # no position: begin at the channel's latest message
HISTORY = 1  # no position: begin with the newest `history` kept messages
SINCE = 2  # from a position: every message after it

Held = tuple["Event", str | None, int]  # a live event, its epoch and number


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened on a channel.

    `kind` is "message" for a published message (in `message`); "gap" when
    `missed` messages could not be delivered at this point (the subscriber fell
    behind, or the backend no longer keeps them); "reset" when the channel's
    history started over (its backend lost it, or the channel expired) so that
    the subscriber cannot know what it missed before this point.

    `position` is where the event leaves the subscriber in the channel, as an
    opaque string: a message's own position, the last missed one for a gap, the
    start of the new history for a reset. Pass the last position you saw to
    `Broadcast.subscribe(channel, since=...)` to get what followed it. Messages
    published with `keep=False`, or by other programs, have none.
    """

    channel: str
    message: str | None = None
    kind: EventKind = "message"
    missed: int | None = None
    position: str | None = None


class Subscriber:
    """A subscription to one channel: an async iterator of Events.

    Events wait in a bounded queue (`max_queue`). When a slow subscriber
    falls behind, the oldest events are dropped and counted in `dropped`, and
    the next event it reads is a "gap" saying how many it missed: publishers
    and other subscribers never wait for it.
    """

    # A server may hold thousands of these, one per connection: no __dict__.
    __slots__ = (
        "_before_read",
        "_closed",
        "_epoch",
        "_failure",
        "_held",
        "_history",
        "_live_since",
        "_missed",
        "_missed_position",
        "_mode",
        "_queue",
        "_read_for",
        "_ready",
        "_reset",
        "_seq",
        "_stale",
        "_wakeup",
        "channel",
        "dropped",
        "max_queue",
    )

    def __init__(self, channel: str, max_queue: int) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.channel = channel
        self.max_queue = max_queue
        self.dropped = 0
        # None while empty: an idle subscriber keeps no deque (each takes a 64-slot block).
        self._queue: deque[Event] | None = None
        self._missed = 0  # dropped since the subscriber last read: reported as a gap
        self._missed_position: str | None = None
        self._reset: Event | None = None  # a dropped reset: told before the gap
        self._wakeup: anyio.Event | None = None  # set by put() while a reader waits
        self._closed = False
        # Where the subscriber is: the epoch and number of the last message queued.
        self._epoch: str | None = None
        self._seq = 0
        # Live events held back during a catch-up (None: flowing live).
        # (A list, not a deque: an empty deque already takes a block of 64 slots.)
        self._held: list[Held] | None = []
        self._mode = START
        self._history = 0
        self._stale = False  # the backend reconnected during the catch-up: read again
        self._before_read = 0  # held events that arrived before the current read was made
        self._live_since = -1  # the channel's count of live messages when this one went live
        self._read_for: tuple[str, int, int] = ("", 0, 0)
        # Set once the first catch-up is done (or failed): subscribe() waits for it.
        self._ready: anyio.Event | None = None
        self._failure: BaseException | None = None

    # -- reading -----------------------------------------------------------------------

    def put(self, event: Event) -> None:
        """Queue an event (never waits; drops the oldest when full)."""
        if self._closed:
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        elif len(queue) >= self.max_queue:
            self._drop(queue.popleft())
        queue.append(event)
        self._wake()

    def _wake(self) -> None:
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            wakeup.set()

    def _drop(self, old: Event) -> None:
        if old.kind == "reset":  # what was missed before it no longer counts
            self._reset, self._missed, self._missed_position = old, 0, None
            return
        if old.kind == "gap":
            self._missed += old.missed or 0
        else:
            self._missed += 1
            self.dropped += 1
        if old.position is not None:
            self._missed_position = old.position

    def close(self) -> None:
        """End the iteration once the queued events are read."""
        self._closed = True
        self._wake()
        self._set_ready()

    def _set_ready(self) -> None:
        ready, self._ready = self._ready, None
        if ready is not None:
            ready.set()

    async def get(self) -> Event:
        """The next event; raises StopAsyncIteration once closed and drained."""
        while not self._queue and not self._missed and self._reset is None:
            if self._closed:
                raise StopAsyncIteration
            wakeup = self._wakeup = self._wakeup or anyio.Event()
            await wakeup.wait()
        return self._next()

    def _next(self) -> Event:
        if self._reset is not None:
            reset, self._reset = self._reset, None
            return reset
        if self._missed:
            missed, self._missed = self._missed, 0
            position, self._missed_position = self._missed_position, None
            return Event(self.channel, None, "gap", missed, position)
        queue = self._queue
        assert queue is not None
        event = queue.popleft()
        if not queue:
            self._queue = None
        return event

    async def get_batch(self, limit: int = 100) -> list[Event]:
        """The next events: waits for one, then takes up to `limit` that are queued.

        For forwarding under load: one write for many events. Raises
        StopAsyncIteration once closed and drained.
        """
        while not self._queue and not self._missed and self._reset is None:
            if self._closed:
                raise StopAsyncIteration
            wakeup = self._wakeup = self._wakeup or anyio.Event()
            await wakeup.wait()
        batch = [self._next()]
        while len(batch) < limit and (self._queue or self._missed or self._reset is not None):
            batch.append(self._next())
        return batch

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self.get()

    def __repr__(self) -> str:
        queued = len(self._queue or ())
        return f"<Subscriber {self.channel!r} queued={queued} dropped={self.dropped}>"

    # -- live messages -------------------------------------------------------------------

    def _offer(self, event: Event, epoch: str | None, seq: int) -> bool:
        """A live event; True when it shows a hole, so that a catch-up must read it."""
        if self._closed:
            return False
        held = self._held
        if held is not None:
            self._hold(held, (event, epoch, seq))
            return False
        if self._accept(event, epoch, seq):
            return False
        self._held = [(event, epoch, seq)]
        self._mode = SINCE
        return True

    def _hold(self, held: list[Held], item: Held) -> None:
        if len(held) >= self.max_queue:
            old, epoch, _ = held.pop(0)
            if epoch is None:  # a numbered one is read back from the history
                self._drop(old)
            if self._before_read:  # the oldest held arrived before the read: one fewer
                self._before_read -= 1
        held.append(item)

    def _accept(self, event: Event, epoch: str | None, seq: int) -> bool:
        """Queue a live event that comes next in line (skip one already queued)."""
        if epoch is None:
            self.put(event)
        elif epoch == self._epoch:
            if seq > self._seq + 1:
                return False
            if seq == self._seq + 1:
                self._seq = seq
                self.put(event)
        elif self._epoch is None and self._seq == 0 and seq == 1:
            self._epoch, self._seq = epoch, 1  # the channel's first message
            self.put(event)
        else:
            return False
        return True

    # -- catching up ---------------------------------------------------------------------

    def _start(self, position: tuple[str, int] | None, history: int) -> None:
        if position is not None:
            self._mode = SINCE
            self._epoch, self._seq = position
        elif history:
            self._mode, self._history = HISTORY, history
        else:
            self._mode = START

    def _read_key(self) -> tuple[str, int, int]:
        """What the next catch-up reads: (epoch, after, limit)."""
        if self._mode == START:
            return "", 0, 0
        if self._mode == HISTORY:
            return "", 0, self._history
        return self._epoch or "", self._seq, self.max_queue

    def _needs_catch_up(self) -> bool:
        return self._held is not None and not self._closed and self._failure is None

    def _reading(self, held_before: int | None = None) -> tuple[str, int, int]:
        """A read for this subscriber is about to be made (or, with `held_before=0`,
        was made before it came): what it reads."""
        self._before_read = len(self._held or ()) if held_before is None else held_before
        self._read_for = self._read_key()
        return self._read_for

    def _restart_catch_up(self) -> None:
        """The backend reconnected: whatever was published meanwhile is read back."""
        if self._held is None:
            self._held = []
            self._mode = SINCE
        else:
            self._stale = True

    def _catch_up(self, replay: Replay) -> bool:
        """Queue what `replay` holds after our place, then the held live events.

        True when the subscriber is flowing live again; False when another catch-up
        is needed (a held event leaves a hole, or the backend reconnected meanwhile).
        """
        entries = replay.entries
        if replay.epoch is not None:
            if self._mode != SINCE:
                # No position: begin at the channel's latest message, or before the
                # newest kept ones for HISTORY (the older ones are history, not missed).
                self._epoch = replay.epoch
                self._seq = entries[0][0] - 1 if entries else replay.last
            elif self._epoch is None:
                self._epoch = replay.epoch  # nothing was kept when we began: all is new
            elif replay.epoch != self._epoch or self._seq > replay.last:
                self._epoch, self._seq = replay.epoch, 0
                self.put(Event(self.channel, None, "reset", None, format_position(replay.epoch, 0)))
            first = entries[0][0] if entries else replay.last + 1
            if first > self._seq + 1:
                self._gap(first - 1)
            for seq, message in entries:
                if seq > self._seq + 1:  # not kept in between (the history was damaged)
                    self._gap(seq - 1)
                self._seq = seq
                self.put(Event(self.channel, message, "message", None, self._position()))
        self._mode = SINCE
        held, self._held = self._held or [], None
        settled = self._before_read  # held events that arrived before the read was made
        for index, (event, epoch, seq) in enumerate(held):
            if not self._accept(event, epoch, seq):
                if index >= settled:
                    # It came after the read: a newer epoch, or a hole, not read yet.
                    self._held = held[index:]
                    return False
                if epoch == self._epoch:
                    self._gap(seq - 1)  # not in the history (lost with it): count the hole
                    self._accept(event, epoch, seq)
                # else: from an epoch the history had already left behind when it was read.
        if self._stale:
            self._stale = False
            self._held = []
            return False
        return True

    def _gap(self, last_missed: int) -> None:
        missed = last_missed - self._seq
        self._seq = last_missed
        self.put(Event(self.channel, None, "gap", missed, self._position()))

    def _position(self) -> str:
        assert self._epoch is not None
        return format_position(self._epoch, self._seq)
