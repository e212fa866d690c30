"""What the Broadcast and its backends share: positions, replays, the backend protocol."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "Backend",
    "BroadcastError",
    "Deliver",
    "Replay",
    "format_position",
    "is_position",
    "new_epoch",
    "parse_position",
]


class BroadcastError(Exception):
    """The backend cannot do what was asked: it cannot be reached, or it refused."""


# A position is "<epoch>-<seq>": the channel's epoch (16 hex digits, new whenever the
# channel's history starts over) and the message's number in it (from 1; 0 is "before
# the first message"). Anything else is not a position.
_POSITION = re.compile(r"([0-9a-f]{16})-(0|[1-9][0-9]{0,17})")
_MAX_POSITION = 16 + 1 + 18


def new_epoch() -> str:
    """A fresh epoch: 64 random bits as 16 lowercase hex digits."""
    return secrets.token_hex(8)


def format_position(epoch: str, seq: int) -> str:
    return f"{epoch}-{seq}"


def parse_position(text: str) -> tuple[str, int] | None:
    """(epoch, seq) for a well-formed position, None for anything else."""
    if len(text) > _MAX_POSITION:
        return None
    match = _POSITION.fullmatch(text)
    if match is None:
        return None
    return match.group(1), int(match.group(2))


def is_position(value: object) -> bool:
    """True if `value` is a well-formed position string, as `Event.position` holds.

    Use it to check a position that comes from a client (a query string, a header)
    before passing it to `Broadcast.subscribe(channel, since=...)`, which raises
    ValueError for a malformed one.
    """
    return isinstance(value, str) and parse_position(value) is not None


@dataclass(slots=True)
class Replay:
    """What a backend's history holds for a channel after some point.

    `epoch` is the channel's current epoch (None: the channel has no history, it was
    never published on or has expired), `last` the number of its latest message,
    `entries` the kept messages asked for, oldest first, as (seq, message).
    `intact` is False when the entry the caller asked to check was replaced by
    another one: the backend lost data and numbers were given out twice.
    """

    epoch: str | None
    last: int
    entries: list[tuple[int, str]] = field(default_factory=list)
    intact: bool = True


Deliver = Callable[[str, str | None, int, str, str], None]
"""How a backend hands a live message over: deliver(channel, epoch, seq, stamp, message).

`epoch` is None for a message without a position (published with keep=False, or by
another program); `stamp` tells two messages with the same number apart (Redis: the
stream entry's ID), "" when there is none.
"""


class Backend(Protocol):
    """What a Broadcast needs from a backend."""

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def subscribe(self, channel: str) -> None:
        """Returns once messages published on `channel` from now on are delivered."""

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, message: str, keep: bool) -> str | None:
        """Publish; the message's position (None when not kept)."""

    async def read(
        self, channel: str, epoch: str, after: int, limit: int, check: tuple[int, str] | None
    ) -> Replay:
        """The channel's kept messages after `after` (at most the `limit` newest).

        When `epoch` is not the channel's current epoch, or `after` is beyond its last
        number, the entries are read from the start of the current epoch instead.
        `check` (seq, stamp) asks whether that entry is still the one seen.
        """

    async def fence(self, channel: str, epoch: str) -> None:
        """Start a new epoch on `channel` if it is still in `epoch` (numbers were reused)."""
