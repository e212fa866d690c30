"""The Redis backend's listener: one task owns the pub/sub connection.

Everything that happens to that connection (opening it, sending SUBSCRIBE and
UNSUBSCRIBE, reading what Redis sends, noticing that it died, closing it)
happens in the task running `Listener.run` and in the reader and health
tasks it starts for each connection. `subscribe()` and `unsubscribe()` only
change the set of wanted channels and wake the owner, which sends the
commands: callers never touch the connection, so they cannot break one
another's subscriptions, and whatever goes wrong with the connection is
handled in one place (reconnect, resubscribe, tell the Broadcast).
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus

from microasgi.broadcast._base import BroadcastError

__all__ = ["Listener"]

logger = logging.getLogger("microasgi.broadcast")

_CHUNK = 512  # channels per SUBSCRIBE or UNSUBSCRIBE command


class Listener:
    """Keeps one pub/sub connection subscribed to the wanted channels, reconnecting.

    `on_message(channel, data)` gets every message; `on_live(channel)` is called
    each time Redis confirms a channel's subscription (after a reconnection too).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        on_message: Callable[[str, bytes], None],
        on_live: Callable[[str], None],
        *,
        name: str,
        reconnect_delay: tuple[float, float],
        health_interval: float,
        answer_timeout: float,
    ) -> None:
        self._connect = connect
        self._on_message = on_message
        self._on_live = on_live
        self._name = name
        self._delays = reconnect_delay
        self._health_interval = health_interval
        self._answer_timeout = answer_timeout
        self._wanted: set[str] = set()
        self._dirty: set[str] = set()  # wanted or unwanted since the owner last looked
        self._changed = anyio.Event()
        # Per connection: what we asked Redis for each channel (True: subscribed), the
        # commands still unanswered (oldest first), and the channels it confirmed.
        self._asked: dict[str, bool] = {}
        self._unanswered: dict[str, deque[bool]] = {}
        self._live: set[str] = set()
        self._waiters: dict[str, anyio.Event] = {}
        self._heard = 0.0  # when Redis last sent anything
        self._up = anyio.Event()  # set while a connection is open
        self.connected = False

    # -- requests (any task) ---------------------------------------------------------------

    async def subscribe(self, channel: str, timeout: float) -> None:
        """Returns once Redis has confirmed `channel`; BroadcastError after `timeout`."""
        self._wanted.add(channel)
        if channel in self._live:
            return
        waiter = self._waiters.get(channel)
        if waiter is None:
            waiter = self._waiters[channel] = anyio.Event()
        self._dirty.add(channel)
        self._changed.set()
        with anyio.move_on_after(timeout):
            await waiter.wait()
        if not waiter.is_set():
            state = "did not confirm the subscription" if self.connected else "is unreachable"
            raise BroadcastError(f"Redis {state} within {timeout:g} s, cannot subscribe")

    def unsubscribe(self, channel: str) -> None:
        """The channel's last subscriber in this process left (subscribed or not)."""
        self._wanted.discard(channel)
        # Nobody waits for its confirmation any more (one that timed out, say).
        self._waiters.pop(channel, None)
        self._dirty.add(channel)
        self._changed.set()

    async def wait_connected(self, timeout: float) -> bool:
        with anyio.move_on_after(timeout):
            await self._up.wait()
        return self.connected

    # -- the owner -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, reconnect: until cancelled."""
        first_delay, max_delay = self._delays
        delay = first_delay
        lost = False
        task_status.started()
        while True:
            connection: Any = None
            try:
                connection = await self._connect()
                if lost:
                    logger.warning("Reconnected to Redis at %s", self._name)
                lost = False
                delay = first_delay
                await self._session(connection)
            except Exception as exc:  # whatever broke the connection: start a new one
                if not lost:
                    logger.warning(
                        "Lost the connection to Redis at %s (%s); reconnecting",
                        self._name,
                        exc or type(exc).__name__,
                    )
                lost = True
            finally:
                self._set_connected(False)
                if connection is not None:
                    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                        await connection.disconnect(nowait=True)
            await anyio.sleep(delay)
            delay = min(delay * 2, max_delay)

    async def _session(self, connection: Any) -> None:
        self._asked.clear()
        self._unanswered.clear()
        self._live.clear()
        self._dirty = set(self._wanted)
        self._heard = anyio.current_time()
        failure: list[BaseException] = []

        async def guarded(work: Callable[[Any], Awaitable[None]]) -> None:
            try:
                await work(connection)
            except Exception as exc:
                failure.append(exc)
                tasks.cancel_scope.cancel()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(guarded, self._read)
            tasks.start_soon(guarded, self._check_health)
            self._set_connected(True)
            await guarded(self._send)
        raise failure[0] if failure else ConnectionError("the connection ended")

    async def _send(self, connection: Any) -> None:
        """Bring Redis's subscriptions in line with the wanted channels, as they change."""
        while True:
            dirty, self._dirty = self._dirty, set()
            subscribe = [c for c in dirty if c in self._wanted and not self._asked.get(c)]
            unsubscribe = [c for c in dirty if c not in self._wanted and self._asked.get(c)]
            for command, channels, subscribed in (
                ("SUBSCRIBE", subscribe, True),
                ("UNSUBSCRIBE", unsubscribe, False),
            ):
                for channel in channels:
                    self._asked[channel] = subscribed
                    self._unanswered.setdefault(channel, deque()).append(subscribed)
                    if not subscribed:
                        self._live.discard(channel)
                for start in range(0, len(channels), _CHUNK):
                    await connection.send_command(command, *channels[start : start + _CHUNK])
            if not self._dirty:
                await self._changed.wait()
                self._changed = anyio.Event()

    async def _read(self, connection: Any) -> None:
        while True:
            reply = await connection.read_response()
            self._heard = anyio.current_time()
            if not isinstance(reply, list) or len(reply) < 2:
                continue  # PONG outside of subscribed mode
            kind = reply[0]
            if kind == b"message":
                self._on_message(reply[1].decode("utf-8", "replace"), reply[2])
            elif kind in (b"subscribe", b"unsubscribe"):
                self._answered(reply[1].decode("utf-8", "replace"))

    def _answered(self, channel: str) -> None:
        unanswered = self._unanswered.get(channel)
        if unanswered:
            unanswered.popleft()
            if unanswered:
                return  # more commands for this channel are on their way: wait for the last
            del self._unanswered[channel]
        if self._asked.get(channel):
            self._live.add(channel)
            waiter = self._waiters.pop(channel, None)
            if waiter is not None:
                waiter.set()
            self._on_live(channel)
        else:
            self._asked.pop(channel, None)

    async def _check_health(self, connection: Any) -> None:
        """PING a quiet connection; one that does not answer in time is dead."""
        while True:
            await anyio.sleep(self._health_interval)
            if anyio.current_time() - self._heard < self._health_interval:
                continue
            sent = anyio.current_time()
            await connection.send_command("PING")
            await anyio.sleep(self._answer_timeout)
            if self._heard < sent:
                raise TimeoutError(f"no answer to PING within {self._answer_timeout:g} s")

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        if connected:
            self._up.set()
        elif self._up.is_set():
            self._up = anyio.Event()
