"""The Redis backend: `redis://host:port/db`, on Redis pub/sub (package `redis`).

Pub/sub keeps nothing for a subscriber that is not connected, so each
publish also counts itself: a Lua script increments a per-channel sequence
number and publishes "\x1e<seq>\x1e<message>" in one step. A subscriber that
sees a jump in the numbers, or finds the counter moved on while it was
reconnecting, knows exactly how many messages it missed and says so with a
"gap" event; when nothing was missed it says "reconnected". An "epoch" key,
set once, tells whether Redis lost its data meanwhile (restarted without
persistence): then the counters started over and the gap is of unknown size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
from anyio.abc import TaskGroup

from microasgi.broadcast._events import Event

__all__ = ["RedisBackend"]

logger = logging.getLogger("microasgi.broadcast")

# KEYS[1]: the channel's counter, KEYS[2]: the epoch; ARGV: channel, message, a new epoch.
_PUBLISH = """
redis.call('SET', KEYS[2], ARGV[3], 'NX')
local seq = redis.call('INCR', KEYS[1])
local mark = string.char(30)
redis.call('PUBLISH', ARGV[1], mark .. seq .. mark .. ARGV[2])
return seq
"""
_MARK = b"\x1e"  # starts a numbered message: other publishers' messages pass as they are


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


class RedisBackend:
    """Fan-out through Redis pub/sub, reconnecting by itself.

    `reconnect_delay` is the first and the longest wait between reconnection
    attempts (doubling in between); `key_prefix` names the counters.
    """

    def __init__(
        self,
        url: str,
        deliver: Callable[[Event], None],
        task_group: Callable[[], TaskGroup],
        *,
        reconnect_delay: tuple[float, float] = (0.05, 2.0),
        socket_timeout: float = 5.0,
        key_prefix: str = "microasgi:broadcast:",
    ) -> None:
        self.url = url
        self._deliver = deliver
        self._task_group = task_group
        self._delays = reconnect_delay
        self._socket_timeout = socket_timeout
        self._counters = key_prefix + "seq:"
        self._epoch_key = key_prefix + "epoch"
        self._epoch: bytes | None = None
        # channel -> the highest sequence number seen (None: not known yet)
        self._channels: dict[str, int | None] = {}
        self._pubsub: Any = None
        self._client: Any = None
        self._listener: Any = None
        self._wake = anyio.Event()  # set by subscribe(): wakes an idle listener
        # Set when Redis confirms a SUBSCRIBE (the listener reads the confirmations).
        self._confirmations: dict[str, anyio.Event] = {}
        # What a channel missed while we were away, told once it is subscribed again.
        self._notices: dict[str, Event] = {}
        self._up = anyio.Event()  # set while the listener is connected
        self._broken = False  # a subscribe failed: the listener must reconnect
        self.connected = False

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(self) -> None:
        from microasgi.broadcast import BroadcastError

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise BroadcastError("the redis:// backend needs asyncio (redis-py)") from None
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialBackoff, NoBackoff
        except ImportError:
            raise BroadcastError(
                "redis:// needs the redis package: pip install 'microasgi[redis]'"
            ) from None
        self._errors: tuple[type[Exception], ...] = (aioredis.RedisError, OSError)
        timeouts: dict[str, Any] = {
            "socket_connect_timeout": self._socket_timeout,
            "socket_timeout": self._socket_timeout,
        }
        # For publishing: a pooled connection from before a Redis restart fails
        # once, so retry on a fresh one (twice at most, within about a second).
        self._client = aioredis.Redis.from_url(
            self.url,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            retry_on_error=[aioredis.ConnectionError, aioredis.TimeoutError],
            **timeouts,
        )
        # For listening: no retries, so that a lost connection is seen (and the
        # subscribers told what they missed) instead of silently papered over;
        # health checks PING a connection idle for a second before it is reused
        # (a pooled one may have died with a Redis restart) and while listening.
        self._listener = aioredis.Redis.from_url(
            self.url, retry=Retry(NoBackoff(), retries=0), health_check_interval=1, **timeouts
        )
        try:
            await self._listener.ping()
            self._epoch = await self._current_epoch()
        except self._errors as exc:
            await self._close_clients()
            raise BroadcastError(f"cannot reach Redis at {_redacted(self.url)}: {exc}") from None
        self._script = self._client.register_script(_PUBLISH)
        started = anyio.Event()
        self._task_group().start_soon(self._listen, started)
        await started.wait()

    async def disconnect(self) -> None:
        self._set_connected(False)
        await self._close_pubsub()
        await self._close_clients()
        self.connected = False

    async def _close_clients(self) -> None:
        for client in (self._client, self._listener):
            if client is not None:
                with anyio.CancelScope(shield=True), contextlib.suppress(*self._errors):
                    await client.aclose()

    # -- operations ----------------------------------------------------------------------

    async def publish(self, channel: str, message: str) -> None:
        from microasgi.broadcast import BroadcastError

        try:
            await self._script(
                keys=[self._counters + channel, self._epoch_key],
                args=[channel, message, uuid.uuid4().hex],
            )
        except self._errors as exc:
            raise BroadcastError(
                f"Redis is unreachable, the message was not published: {exc}"
            ) from None

    async def subscribe(self, channel: str) -> None:
        """Subscribe; returns once the subscription is live.

        While the listener is reconnecting this waits for it (at most the socket
        timeout), then raises BroadcastError: a subscriber never believes it is
        listening when it is not.
        """
        from microasgi.broadcast import BroadcastError

        for attempt in (1, 2):
            with anyio.move_on_after(self._socket_timeout):
                await self._up.wait()
            try:
                if self._pubsub is None:
                    raise ConnectionError("reconnecting")
                if not self._pubsub.subscribed:
                    # Nothing was listening, so no one noticed if Redis restarted
                    # meanwhile: start from fresh connections, not idle pooled ones.
                    await self._listener.connection_pool.disconnect()
                self._channels[channel] = None
                confirmed = self._confirmations[channel] = anyio.Event()
                await self._pubsub.subscribe(channel)  # sends it; the listener reads the answer
                self._wake.set()
                with anyio.move_on_after(self._socket_timeout):
                    await confirmed.wait()
                if not confirmed.is_set():
                    raise ConnectionError("Redis did not confirm the subscription")
                # Live now. Messages published after SUBSCRIBE may arrive before or
                # after this answer; either way none of them is taken for a gap.
                start = await self._counter(channel)
                break
            except self._errors as exc:
                # The listener's connection is stale (say Redis restarted while it
                # was idle): have it rebuilt, and try once more when it is back.
                self._channels.pop(channel, None)
                self._confirmations.pop(channel, None)
                self._broken = True
                self._set_connected(False)
                self._wake.set()
                if attempt == 2:
                    raise BroadcastError(f"Redis is unreachable, cannot subscribe: {exc}") from None
        if channel in self._channels:
            seen = self._channels[channel]
            self._channels[channel] = start if seen is None else max(seen, start)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.pop(channel, None)
        if self._pubsub is not None:
            with contextlib.suppress(*self._errors):
                await self._pubsub.unsubscribe(channel)

    # -- the listener --------------------------------------------------------------------

    async def _counter(self, channel: str) -> int:
        value = await self._listener.get(self._counters + channel)
        return int(value or 0)

    async def _current_epoch(self) -> bytes | None:
        """The epoch, set now if Redis has none (it is new, or lost its data)."""
        await self._listener.set(self._epoch_key, uuid.uuid4().hex, nx=True)
        epoch: bytes | None = await self._listener.get(self._epoch_key)
        return epoch

    async def _listen(self, started: anyio.Event) -> None:
        first_delay, max_delay = self._delays
        delay = first_delay
        reconnecting = False
        while True:
            try:
                if reconnecting:
                    await self._listener.ping()
                    await self._resync()
                self._pubsub = self._listener.pubsub()
                if self._channels:
                    await self._pubsub.subscribe(*self._channels)
                if reconnecting:
                    logger.warning("Reconnected to Redis at %s", _redacted(self.url))
                self._broken = False  # a subscribe that failed meanwhile: settled now
                self._set_connected(True)
                reconnecting = False
                delay = first_delay
                started.set()
                while True:
                    if self._broken:
                        raise ConnectionError("a subscription failed on this connection")
                    if not self._pubsub.subscribed:  # nothing to listen to (yet)
                        await self._wake.wait()
                        self._wake = anyio.Event()
                        continue
                    message = await self._pubsub.get_message(timeout=1.0)
                    kind = message and message.get("type")
                    if kind == "message":
                        self._received(message["channel"], message["data"])
                    elif kind == "subscribe":
                        self._confirmed(message["channel"])
            except self._errors as exc:
                if not reconnecting:
                    logger.warning(
                        "Lost the connection to Redis at %s (%s); reconnecting",
                        _redacted(self.url),
                        exc,
                    )
                self._set_connected(False)
                self._broken = False
                reconnecting = True
                started.set()
                await self._close_pubsub()
                await anyio.sleep(delay)
                delay = min(delay * 2, max_delay)

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        if connected:
            self._up.set()
        elif self._up.is_set():
            self._up = anyio.Event()

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(*self._errors):
                await pubsub.aclose()

    async def _resync(self) -> None:
        """After a reconnection: work out what each channel missed, before resubscribing.

        The counter is read before SUBSCRIBE, so every message counted there was
        published while we were away; one published between the two shows up as
        a jump in the numbers of the next message. The subscribers are told when
        Redis confirms the channel's new subscription (see `_confirmed`).
        """
        epoch = await self._current_epoch()
        data_lost = epoch != self._epoch
        self._epoch = epoch
        for channel, seen in list(self._channels.items()):
            now = await self._counter(channel)
            if seen is None:  # subscribed just before the connection went: start here
                self._channels[channel] = now
                continue
            if data_lost or now < seen:
                # Redis lost its data (restarted without persistence) and the
                # counters started over: some messages may be gone, how many is unknown.
                event = Event(channel, None, "gap", None)
            elif now > seen:
                event = Event(channel, None, "gap", now - seen)
            else:
                event = Event(channel, None, "reconnected")
            if channel in self._channels:
                self._channels[channel] = now
            self._notices[channel] = _merged(self._notices.get(channel), event)

    def _confirmed(self, raw_channel: bytes) -> None:
        channel = raw_channel.decode("utf-8", "replace")
        confirmed = self._confirmations.pop(channel, None)
        if confirmed is not None:
            confirmed.set()
        notice = self._notices.pop(channel, None)
        if notice is not None and channel in self._channels:
            self._deliver(notice)

    def _received(self, raw_channel: bytes, data: bytes) -> None:
        channel = raw_channel.decode("utf-8", "replace")
        number, mark, body = data[1:].partition(_MARK)
        if not (data.startswith(_MARK) and mark and number.isdigit()):
            # Published by something else than a Broadcast: no number to check.
            self._deliver(Event(channel, data.decode("utf-8", "replace")))
            return
        seq = int(number)
        seen = self._channels.get(channel)
        if seen is not None and seq > seen + 1:
            self._deliver(Event(channel, None, "gap", seq - seen - 1))
        if channel in self._channels:
            self._channels[channel] = seq if seen is None else max(seen, seq)
        self._deliver(Event(channel, body.decode("utf-8", "replace")))


def _merged(earlier: Event | None, later: Event) -> Event:
    """One notice for two reconnections whose first was never told."""
    if earlier is None or earlier.kind == "reconnected":
        return later
    if later.kind == "reconnected":
        return earlier
    missed = (
        None if earlier.missed is None or later.missed is None else earlier.missed + later.missed
    )
    return Event(later.channel, None, "gap", missed)
