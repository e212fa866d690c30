"""Publish/subscribe for fanning messages out, e.g. to WebSocket clients.

`Broadcast("memory://")` works inside one process; `Broadcast("redis://host:port/db")`
across processes and machines through Redis (`pip install microasgi[redis]`). Every
message kept in a channel's history has a position; `subscribe(channel, since=position)`
delivers every message after it exactly once, in order, or says what cannot be.
See docs/broadcast.md for the guarantees and the slow-subscriber policy.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import anyio
from anyio.abc import TaskGroup

from microasgi.broadcast._base import (
    Backend,
    BroadcastError,
    Replay,
    format_position,
    is_position,
    parse_position,
)
from microasgi.broadcast._events import Event, Subscriber
from microasgi.broadcast._memory import MemoryBackend

__all__ = ["Broadcast", "BroadcastError", "Event", "Subscriber", "is_position"]

ReadKey = tuple[str, int, int]  # what a catch-up reads: (epoch, after, limit)


class _Channel:
    """A channel with subscribers in this process."""

    __slots__ = (
        "check",
        "confirmed",
        "epoch",
        "received",
        "reconnections",
        "refilling",
        "seq",
        "stamp",
        "subscribers",
        "suspect",
    )

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.confirmed = (
            False  # the backend confirmed it once: later confirmations are reconnections
        )
        self.refilling = False  # a catch-up task runs for it
        # The last live message, to notice a backend that gave out numbers twice.
        self.epoch: str | None = None
        self.seq = 0
        self.stamp = ""
        self.check = False  # after a reconnection: is that message still where it was?
        self.suspect: str | None = None  # an epoch whose numbers were given out twice
        self.received = 0  # numbered live messages so far
        self.reconnections = 0  # how often the backend came back for this channel


class _Subscription:
    """What `Broadcast.subscribe()` returns: `async with` it to get the Subscriber.

    A small object rather than a generator-based context manager: a server holds one
    per connection.
    """

    __slots__ = ("_broadcast", "_subscriber")

    def __init__(self, broadcast: Broadcast, subscriber: Subscriber) -> None:
        self._broadcast = broadcast
        self._subscriber = subscriber

    async def __aenter__(self) -> Subscriber:
        await self._broadcast._enter(self._subscriber)
        return self._subscriber

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._broadcast._leave(self._subscriber)


class Broadcast:
    """A pub/sub hub: `publish(channel, message)` and `subscribe(channel)`.

    Use it in `async with broadcast:` (for instance in the app's lifespan).
    Messages are strings; encode anything else (e.g. JSON) yourself. Every
    subscriber has its own queue of at most `max_queue` events (see Subscriber).
    Each channel keeps about its `history` newest messages (memory:// in a ring
    buffer, redis:// in a Redis stream) for subscribers that resume from a
    position; a channel nobody publishes on for `history_ttl` seconds is forgotten.
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        max_queue: int = 1000,
        history: int = 1000,
        history_ttl: float = 86_400.0,
        **options: Any,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if history < 0:
            raise ValueError("history must be 0 (keep nothing) or more")
        if not history_ttl > 0:
            raise ValueError("history_ttl must be a positive number of seconds")
        self.url = url
        self.max_queue = max_queue
        self.history = history
        self._channels: dict[str, _Channel] = {}
        self._stack: AsyncExitStack | None = None
        scheme = urlsplit(url).scheme
        self._backend: Backend
        if scheme == "memory":
            if options:
                raise TypeError(f"memory:// takes no options, got {sorted(options)}")
            self._backend = MemoryBackend(self._deliver, history, history_ttl)
        elif scheme in ("redis", "rediss", "unix"):
            from microasgi.broadcast._redis import RedisBackend

            self._backend = RedisBackend(
                url,
                self._deliver,
                self._live_again,
                self._task_group,
                history=history,
                history_ttl=history_ttl,
                **options,
            )
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
        # Closed in reverse: cancel the background tasks, wait for them, then disconnect.
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
        for state in self._channels.values():
            for subscriber in state.subscribers:
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

    def _check_connected(self) -> None:
        if self._stack is None:
            raise RuntimeError("use the Broadcast in `async with broadcast:` first")

    async def publish(self, channel: str, message: str, *, keep: bool = True) -> str | None:
        """Send `message` to every subscriber of `channel`; returns its position.

        With `keep=False` the message is only delivered live: it gets no position,
        is not kept in the history and is never replayed (for notices that only
        matter now). Raises BroadcastError if the backend cannot take the message:
        it was not published.
        """
        self._check_connected()
        if not isinstance(message, str):
            raise TypeError(f"messages are str, not {type(message).__name__}: encode it first")
        _check_text(channel, "a channel name")
        _check_text(message, "a message")
        return await self._backend.publish(channel, message, keep)

    def subscribe(
        self, channel: str, since: str | None = None, *, history: int = 0
    ) -> AbstractAsyncContextManager[Subscriber]:
        """Subscribe to `channel` for the duration of an `async with` block.

        Without `since`, the subscriber gets what is published from now on, after
        the `history` newest kept messages if `history` is more than 0. With
        `since`, a position from an earlier event of this channel, it gets every
        message after that position exactly once and in order, or a "gap" or
        "reset" event where that is not possible (see docs/broadcast.md).
        Raises ValueError for a malformed `since` (check untrusted ones with
        `is_position`); entering the block raises BroadcastError if the backend
        cannot be reached.
        """
        self._check_connected()
        _check_text(channel, "a channel name")
        position = None
        if since is not None:
            if not isinstance(since, str):
                raise TypeError(f"since is a position string, not {type(since).__name__}")
            position = parse_position(since)
            if position is None:
                raise ValueError(f"not a position: {since[:60]!r}")
        if not isinstance(history, int) or history < 0:
            raise ValueError("history is a number of messages, 0 or more")
        subscriber = Subscriber(channel, self.max_queue)
        subscriber._start(position, min(history, self.max_queue))
        return _Subscription(self, subscriber)

    async def _enter(self, subscriber: Subscriber) -> None:
        """Register, have the backend listen, and wait for the first catch-up."""
        self._check_connected()
        channel = subscriber.channel
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
        state.subscribers.add(subscriber)
        ready = subscriber._ready = anyio.Event()
        try:
            await self._backend.subscribe(channel)
            state.confirmed = True
            subscriber._live_since = state.received
            self._catch_up(channel, state)
            await ready.wait()
            if subscriber._failure is not None:
                raise subscriber._failure
        except BaseException:
            await self._leave(subscriber)
            raise

    async def _leave(self, subscriber: Subscriber) -> None:
        subscriber.close()
        channel = subscriber.channel
        state = self._channels.get(channel)
        if state is None or subscriber not in state.subscribers:
            return
        state.subscribers.discard(subscriber)
        if not state.subscribers:
            del self._channels[channel]
            if self._stack is not None:
                with anyio.CancelScope(shield=True):
                    await self._backend.unsubscribe(channel)

    def subscriber_count(self, channel: str) -> int:
        """How many subscribers `channel` has in this process."""
        state = self._channels.get(channel)
        return len(state.subscribers) if state is not None else 0

    # -- live messages -------------------------------------------------------------------

    def _deliver(self, channel: str, epoch: str | None, seq: int, stamp: str, text: str) -> None:
        state = self._channels.get(channel)
        if state is None:
            return
        position = None
        if epoch is not None:
            state.received += 1
            if epoch == state.epoch and seq <= state.seq:
                # Live messages come in order: a number seen before was given out twice
                # (Redis came back from an older snapshot).
                state.suspect = epoch
                self._catch_up(channel, state)
            state.epoch, state.seq, state.stamp = epoch, seq, stamp
            position = format_position(epoch, seq)
        event = Event(channel, text, "message", None, position)
        holes = False
        for subscriber in state.subscribers:
            if subscriber._offer(event, epoch, seq):
                holes = True
        if holes:
            self._catch_up(channel, state)

    def _live_again(self, channel: str) -> None:
        """The backend confirmed `channel` again after a reconnection: whatever was
        published meanwhile is read back from the history."""
        state = self._channels.get(channel)
        if state is None or not state.confirmed:
            return  # the first confirmation: subscribe() takes care of that one
        state.check = state.epoch is not None
        state.reconnections += 1
        for subscriber in state.subscribers:
            subscriber._restart_catch_up()
        self._catch_up(channel, state)

    # -- catching up -----------------------------------------------------------------------

    def _catch_up(self, channel: str, state: _Channel) -> None:
        if not state.refilling and self._stack is not None:
            state.refilling = True
            self._tg.start_soon(self._refill, channel, state)

    async def _refill(self, channel: str, state: _Channel) -> None:
        """Read the history for every subscriber of `channel` that needs it, until none does.

        Subscribers at the same place share one read, and one that arrives while a
        read of its place is out takes that read's answer too, if no message came
        between that read and its arrival (it holds every message after the read) and
        the backend did not reconnect meanwhile (what was published while it was away
        may be missing from the answer). A subscriber whose first catch-up fails gets
        the error from subscribe(); the others wait and try again.
        """
        delay = 0.05
        try:
            while self._channels.get(channel) is state:
                waiting = [s for s in state.subscribers if s._needs_catch_up()]
                if not waiting and state.suspect is None:
                    return
                try:
                    if await self._check(channel, state):
                        continue  # a new epoch: every subscriber reads again
                    issued, reconnections = state.received, state.reconnections
                    replays = await self._read_all(channel, waiting)
                except BroadcastError as exc:
                    for subscriber in waiting:
                        if subscriber._ready is not None:  # its first catch-up: tell subscribe()
                            subscriber._failure = exc
                            subscriber._set_ready()
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                delay = 0.05
                read_for = set(waiting)
                for subscriber in list(state.subscribers):
                    if subscriber not in read_for:
                        if not subscriber._needs_catch_up():
                            continue
                        if (
                            subscriber._read_key() not in replays
                            or subscriber._live_since != issued
                            or state.reconnections != reconnections
                        ):
                            # Another place, a message or a reconnection in between: it
                            # reads in the next round.
                            continue
                        subscriber._reading(held_before=0)  # all it holds came later
                    replay = replays[subscriber._read_for]
                    if subscriber._needs_catch_up():
                        subscriber._catch_up(replay)
                    subscriber._set_ready()
        finally:
            state.refilling = False

    async def _check(self, channel: str, state: _Channel) -> bool:
        """Did the backend give out numbers twice? Then start a new epoch (True)."""
        suspect, state.suspect = state.suspect, None
        # What was seen before the read: live messages may come in meanwhile.
        epoch, seq, stamp = state.epoch, state.seq, state.stamp
        checking = state.check and suspect is None and epoch is not None
        try:
            if checking and epoch is not None:
                state.check = False
                replay = await self._backend.read(channel, epoch, seq, 0, (seq, stamp))
                if replay.epoch == epoch and (seq > replay.last or not replay.intact):
                    suspect = epoch
            if suspect is None:
                return False
            await self._backend.fence(channel, suspect)
        except BaseException:
            # Not done: the next round checks again, or the doubt would be forgotten.
            state.suspect = state.suspect or suspect
            state.check = state.check or checking
            raise
        for subscriber in state.subscribers:
            subscriber._restart_catch_up()
        return True

    async def _read_all(self, channel: str, waiting: list[Subscriber]) -> dict[ReadKey, Replay]:
        keys = {subscriber._reading() for subscriber in waiting}
        if len(keys) == 1:
            # PERF: the usual case (one newcomer, or several at the same place) reads
            # without a task group, which costs more than the read's own Python work.
            # The interleaving tests (test_broadcast_catchup.py) take both paths.
            (key,) = keys
            return {key: await self._backend.read(channel, *key, None)}
        replays: dict[ReadKey, Replay] = {}
        failures: list[BroadcastError] = []

        async def read(key: ReadKey) -> None:
            try:
                replays[key] = await self._backend.read(channel, *key, None)
            except BroadcastError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tasks:
            for key in keys:
                tasks.start_soon(read, key)
        if failures:
            raise failures[0]
        return replays


def _check_text(text: str, what: str) -> None:
    """Every backend takes what UTF-8 can encode (not a lone surrogate): else ValueError,
    rather than a Redis connection that fails each time it sends the name."""
    if not isinstance(text, str):
        raise TypeError(f"{what} is a str, not {type(text).__name__}")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise ValueError(f"{what} must be text UTF-8 can encode: {exc.reason}") from None
