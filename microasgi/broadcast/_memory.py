"""The in-process backend: `memory://`, with a ring buffer of recent messages per channel."""

from __future__ import annotations

import time
from collections import OrderedDict, deque

from microasgi.broadcast._base import Deliver, Replay, format_position, new_epoch

__all__ = ["MemoryBackend"]


class _Log:
    """One channel's numbering and its newest messages."""

    __slots__ = ("entries", "epoch", "seq", "touched")

    def __init__(self, history: int) -> None:
        self.epoch = new_epoch()
        self.seq = 0
        self.entries: deque[tuple[int, str]] = deque(maxlen=history or None)
        self.touched = time.monotonic()


class MemoryBackend:
    """Delivers each message straight to this process's subscribers.

    Nothing is lost in transit (there is no transit); only a slow subscriber's
    own queue can overflow. Each channel keeps its `history` newest messages for
    subscribers that resume from a position; a channel nobody published on for
    `history_ttl` seconds is forgotten (a later message starts a new epoch).
    """

    def __init__(self, deliver: Deliver, history: int, history_ttl: float) -> None:
        self._deliver = deliver
        self._history = history
        self._ttl = history_ttl
        self._logs: OrderedDict[str, _Log] = OrderedDict()  # least recently published first

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass

    async def subscribe(self, channel: str) -> None:
        pass

    async def unsubscribe(self, channel: str) -> None:
        pass

    async def publish(self, channel: str, message: str, keep: bool) -> str | None:
        if not keep:
            self._deliver(channel, None, 0, "", message)
            return None
        self._forget_idle()
        log = self._logs.get(channel)
        if log is None:
            log = self._logs[channel] = _Log(self._history)
        else:
            log.touched = time.monotonic()
            self._logs.move_to_end(channel)
        log.seq += 1
        if self._history:
            log.entries.append((log.seq, message))
        self._deliver(channel, log.epoch, log.seq, "", message)
        return format_position(log.epoch, log.seq)

    async def read(
        self, channel: str, epoch: str, after: int, limit: int, check: tuple[int, str] | None
    ) -> Replay:
        self._forget_idle()
        log = self._logs.get(channel)
        if log is None:
            return Replay(None, 0)
        if epoch != log.epoch or after > log.seq:
            after = 0
        after = max(after, log.seq - limit)
        entries = log.entries
        if not entries or after >= log.seq:
            return Replay(log.epoch, log.seq)
        # The entries are numbered without holes, so the wanted ones are the tail.
        start = max(0, len(entries) - (log.seq - after))
        return Replay(log.epoch, log.seq, [entries[i] for i in range(start, len(entries))])

    async def fence(self, channel: str, epoch: str) -> None:
        log = self._logs.get(channel)
        if log is not None and log.epoch == epoch:
            del self._logs[channel]

    def _forget_idle(self) -> None:
        deadline = time.monotonic() - self._ttl
        logs = self._logs
        while logs:
            channel, log = next(iter(logs.items()))
            if log.touched > deadline:
                break
            del logs[channel]
