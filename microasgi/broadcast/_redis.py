"""The Redis backend: `redis://host:port/db`, on pub/sub and streams (package `redis`).

Each channel has, in Redis, a hash with its epoch and the number of its latest
message, and a stream of its newest messages. `publish()` runs one Lua script
that numbers the message, appends it to the stream (trimmed to about `history`
entries), renews both keys' expiry and publishes
"\\x1e<epoch>-<number>-<stamp>\\x1e<message>" on the channel, all in one atomic
step. The listener hands live messages to the Broadcast, which reads the stream
to give a subscriber what it missed (see docs/broadcast.md).

Commands (publishing, reading the streams) go through a pool of at most
`max_connections` connections: a caller waits up to `pool_timeout` for one.
The pub/sub connection is the listener's alone (microasgi.broadcast._listener).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
from anyio.abc import TaskGroup

from microasgi.broadcast._base import BroadcastError, Deliver, Replay, new_epoch
from microasgi.broadcast._listener import Listener

__all__ = ["RedisBackend"]

T = TypeVar("T")

# KEYS: the channel's hash, its stream, this publish's receipt.
# ARGV: channel, message, a new epoch, history length (0: no stream), expiry in seconds,
# the receipt's lifetime in ms. A publish sent again (its answer was lost to a broken
# connection) finds its receipt and returns the same position without publishing twice.
_PUBLISH = """
local done = redis.call('GET', KEYS[3])
if done then return done end
local epoch = redis.call('HGET', KEYS[1], 'e')
local seq = 1
if epoch then
  seq = tonumber(redis.call('HGET', KEYS[1], 's')) + 1
else
  epoch = ARGV[3]
  redis.call('DEL', KEYS[2])
end
local id = string.format('%d-0', seq)
if ARGV[4] ~= '0' then
  local now = redis.call('TIME')
  id = string.format('%d-%d', seq, now[1] * 1000 + math.floor(now[2] / 1000))
  local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], id, 'm', ARGV[2])
  if type(added) == 'table' and added.err then
    -- The stream does not match the hash (one of them was lost): start over.
    epoch, seq = ARGV[3], 1
    id = string.format('%d-%d', seq, now[1] * 1000 + math.floor(now[2] / 1000))
    redis.call('DEL', KEYS[2])
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], id, 'm', ARGV[2])
  end
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
redis.call('HSET', KEYS[1], 'e', epoch, 's', seq)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[1], '\\30' .. epoch .. '-' .. id .. '\\30' .. ARGV[2])
local position = epoch .. '-' .. string.format('%d', seq)
redis.call('SET', KEYS[3], position, 'PX', ARGV[6])
return position
"""

# KEYS: the channel's hash, its stream. ARGV: epoch, after, limit, a number to check and
# the stream ID it had (0 and '': none). Returns {epoch or false, last, entries, intact}.
_READ = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then return {false, 0, {}, 1} end
local last = tonumber(redis.call('HGET', KEYS[1], 's'))
local after = tonumber(ARGV[2])
if epoch ~= ARGV[1] or after > last then after = 0 end
if last - after > tonumber(ARGV[3]) then after = last - tonumber(ARGV[3]) end
local entries = {}
if after < last then
  entries = redis.call('XRANGE', KEYS[2], string.format('%d', after + 1),
                       string.format('%d', last))
end
local intact = 1
local check = tonumber(ARGV[4])
if check > 0 and epoch == ARGV[1] and check <= last then
  local found = redis.call('XRANGE', KEYS[2], ARGV[4], ARGV[4])
  if found[1] and found[1][1] ~= ARGV[5] then intact = 0 end
end
return {epoch, last, entries, intact}
"""

# KEYS: the channel's hash, its stream. ARGV: the epoch to end, a new one.
_FENCE = """
if redis.call('HGET', KEYS[1], 'e') == ARGV[1] then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', ARGV[2], 's', 0)
  return 1
end
return 0
"""

_MARK = b"\x1e"  # starts a message of ours: other publishers' messages pass as they are


def redacted(url: str) -> str:
    """The URL with its password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


class RedisBackend:
    """Fan-out through Redis pub/sub, history in Redis streams, reconnecting by itself.

    Options (keyword arguments of `Broadcast`): `reconnect_delay` is the first and
    the longest wait between the listener's reconnection attempts (doubling in
    between); `socket_timeout` bounds connecting and each answer; `max_connections`
    and `pool_timeout` size the command pool and how long a command waits for a
    connection; `pool_idle_timeout` is how long connections a burst opened may stay
    idle before they are closed; `key_prefix` names the keys.
    """

    def __init__(
        self,
        url: str,
        deliver: Deliver,
        on_live: Callable[[str], None],
        task_group: Callable[[], TaskGroup],
        *,
        history: int,
        history_ttl: float,
        reconnect_delay: tuple[float, float] = (0.05, 2.0),
        socket_timeout: float = 5.0,
        max_connections: int = 50,
        pool_timeout: float = 5.0,
        pool_idle_timeout: float = 10.0,
        key_prefix: str = "microasgi:broadcast:",
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if not (pool_timeout > 0 and socket_timeout > 0 and pool_idle_timeout > 0):
            raise ValueError("the timeouts must be positive")
        self.url = url
        self._name = redacted(url)
        self._deliver = deliver
        self._on_live = on_live
        self._task_group = task_group
        self._history = str(history)
        self._ttl = str(max(1, round(history_ttl)))
        self._delays = reconnect_delay
        self._socket_timeout = socket_timeout
        self._max_connections = max_connections
        self._pool_timeout = pool_timeout
        self._idle_timeout = pool_idle_timeout
        self._channel_key = key_prefix + "channel:"
        self._stream_key = key_prefix + "stream:"
        self._receipt_key = key_prefix + "receipt:"
        # A publish retried on a new connection may have run already: its receipt
        # lasts as long as the attempts can (retries plus their timeouts).
        self._receipt_ms = str(int((_RETRIES + 1) * (socket_timeout + 1) * 1000))
        self._client: Any = None
        self._listener: Listener | None = None
        self._errors: tuple[type[Exception], ...] = (OSError,)
        self._connection_errors: tuple[type[Exception], ...] = (OSError,)
        # The command pool: free slots, commands running now, the most that ran at
        # once since the idle connections were last closed, and the most in this round.
        self._slots = anyio.Semaphore(max_connections)
        self._busy = 0
        self._opened = 0
        self._peak = 0
        self._closing_idle: anyio.Event | None = None

    @property
    def connected(self) -> bool:
        """True while the listener's connection is up."""
        return self._listener is not None and self._listener.connected

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(self) -> None:
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
        self._errors = (aioredis.RedisError, OSError)
        self._connection_errors = (aioredis.ConnectionError, aioredis.TimeoutError, OSError)
        # Commands: a pooled connection that died with a Redis restart fails once, so
        # a command is tried again on a fresh one (publishing is safe to repeat).
        self._client = aioredis.Redis.from_url(
            self.url,
            max_connections=self._max_connections,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=_RETRIES),
            retry_on_error=[aioredis.ConnectionError, aioredis.TimeoutError],
            socket_connect_timeout=self._socket_timeout,
            socket_timeout=self._socket_timeout,
        )
        # The listener's connection: it waits for messages as long as it takes (its
        # health check finds a dead one), and never retries behind our back.
        listener_pool: Any = aioredis.ConnectionPool.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self._socket_timeout,
            socket_timeout=None,
            protocol=2,
            decode_responses=False,
            health_check_interval=0,
        )

        async def open_connection() -> Any:
            connection = listener_pool.make_connection()
            await connection.connect()
            return connection

        try:
            await self._client.ping()
        except self._errors as exc:
            await self._close_client()
            raise BroadcastError(f"cannot reach Redis at {self._name}: {exc}") from None
        self._opened = 1  # the connection that answered stays in the pool
        self._publish_script = self._client.register_script(_PUBLISH)
        self._read_script = self._client.register_script(_READ)
        self._fence_script = self._client.register_script(_FENCE)
        self._listener = Listener(
            open_connection,
            self._received,
            self._on_live,
            name=self._name,
            reconnect_delay=self._delays,
            health_interval=self._socket_timeout,
            answer_timeout=self._socket_timeout,
        )
        tasks = self._task_group()
        await tasks.start(self._listener.run)
        tasks.start_soon(self._close_idle_connections)
        await self._listener.wait_connected(self._socket_timeout)

    async def disconnect(self) -> None:
        await self._close_client()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        # Commands in flight hold a slot each: let them end (for `socket_timeout` at
        # most), or one would put its connection back into a closed pool, left open.
        # Commands still waiting for a slot see the client gone and fail.
        taken = 0
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self._socket_timeout):
                while taken < self._max_connections:
                    await self._slots.acquire()
                    taken += 1
            with contextlib.suppress(Exception):
                await client.aclose()
        for _ in range(taken):
            self._slots.release()

    # -- the command pool ------------------------------------------------------------------

    async def _run(self, command: Callable[[], Awaitable[T]], failed: str) -> T:
        """Run a command on a pooled connection, waiting up to `pool_timeout` for one.

        Any failure becomes a BroadcastError whose message says what happened.
        """
        closing = self._closing_idle
        if closing is not None:
            await closing.wait()
        acquired = False
        with anyio.move_on_after(self._pool_timeout):
            await self._slots.acquire()
            acquired = True
        if not acquired:
            raise BroadcastError(
                f"all {self._max_connections} connections to Redis stayed busy for "
                f"{self._pool_timeout:g} s, {failed} (raise max_connections or pool_timeout)"
            )
        if self._client is None:  # closed while it waited for a connection
            self._slots.release()
            raise RuntimeError(f"the Broadcast is closed, {failed}")
        self._busy += 1
        self._peak = max(self._peak, self._busy)
        self._opened = max(self._opened, self._busy)
        try:
            return await command()
        except self._connection_errors as exc:
            raise BroadcastError(f"Redis is unreachable, {failed}: {exc}") from None
        except self._errors as exc:
            raise BroadcastError(f"Redis refused the command, {failed}: {exc}") from None
        finally:
            self._busy -= 1
            self._slots.release()

    async def _close_idle_connections(self) -> None:
        """Close the pooled connections a burst opened once it is over.

        The pool hands out its most recently used connection first, so connections
        beyond the most that ran at once during a round stayed idle all round.
        """
        while True:
            await anyio.sleep(self._idle_timeout)
            peak, self._peak = self._peak, self._busy
            if peak >= self._opened or self._busy or self._client is None:
                continue
            closing = self._closing_idle = anyio.Event()
            try:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self._client.connection_pool.disconnect(inuse_connections=False)
                self._opened = 0
            finally:
                self._closing_idle = None
                closing.set()

    # -- operations ----------------------------------------------------------------------

    async def publish(self, channel: str, message: str, keep: bool) -> str | None:
        if not keep:
            payload = b"%s%s%s" % (_MARK, _MARK, message.encode())
            await self._run(
                lambda: self._client.publish(channel, payload), "the message was not published"
            )
            return None
        position: bytes = await self._run(
            lambda: self._publish_script(
                keys=[
                    self._channel_key + channel,
                    self._stream_key + channel,
                    self._receipt_key + secrets.token_hex(12),
                ],
                args=[channel, message, new_epoch(), self._history, self._ttl, self._receipt_ms],
            ),
            "the message was not published",
        )
        return position.decode()

    async def read(
        self, channel: str, epoch: str, after: int, limit: int, check: tuple[int, str] | None
    ) -> Replay:
        seq, stamp = check or (0, "")
        answer: list[Any] = await self._run(
            lambda: self._read_script(
                keys=[self._channel_key + channel, self._stream_key + channel],
                args=[epoch, after, limit, seq, stamp],
            ),
            "cannot read the channel's history",
        )
        current, last, raw_entries, intact = answer
        if current is None:
            return Replay(None, 0)
        entries = []
        for entry_id, fields in raw_entries:
            number = int(entry_id.split(b"-", 1)[0])
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            entries.append((number, values[b"m"].decode("utf-8", "replace")))
        return Replay(current.decode(), int(last), entries, bool(intact))

    async def fence(self, channel: str, epoch: str) -> None:
        await self._run(
            lambda: self._fence_script(
                keys=[self._channel_key + channel, self._stream_key + channel],
                args=[epoch, new_epoch()],
            ),
            "cannot start a new epoch",
        )

    async def subscribe(self, channel: str) -> None:
        """Returns once Redis has confirmed the subscription (BroadcastError after
        `socket_timeout` seconds if it has not: say it is restarting)."""
        assert self._listener is not None
        await self._listener.subscribe(channel, self._socket_timeout)

    async def unsubscribe(self, channel: str) -> None:
        if self._listener is not None:
            self._listener.unsubscribe(channel)

    # -- the listener's messages -----------------------------------------------------------

    def _received(self, channel: str, data: bytes) -> None:
        if data[:1] == _MARK:
            head, mark, body = data[1:].partition(_MARK)
            if mark:
                message = body.decode("utf-8", "replace")
                if not head:  # published with keep=False
                    self._deliver(channel, None, 0, "", message)
                    return
                parts = head.split(b"-")
                if len(parts) == 3 and parts[1].isdigit():
                    epoch = parts[0].decode("ascii", "replace")
                    stamp = (parts[1] + b"-" + parts[2]).decode("ascii", "replace")
                    self._deliver(channel, epoch, int(parts[1]), stamp, message)
                    return
        # Published by another program: no number to check.
        self._deliver(channel, None, 0, "", data.decode("utf-8", "replace"))


_RETRIES = 3
