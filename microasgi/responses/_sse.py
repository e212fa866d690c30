"""Server-sent events: ServerSentEvent and EventSourceResponse (HTML, section 9.2)."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping
from typing import Any

import anyio
import anyio.to_thread

from microasgi._json import encode_json
from microasgi.background import BackgroundTask
from microasgi.responses._stream import sent, unwrap_single_error
from microasgi.responses._streaming import StreamingResponse
from microasgi.types import Message, Send

__all__ = ["EventSourceResponse", "ServerSentEvent"]

logger = logging.getLogger("microasgi")

#: The line breaks of the event stream format: CRLF, CR and LF, nothing else
#: (str.splitlines would also split on U+2028, U+0085, \x1e and more).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FIELDS = ("data", "event", "id", "retry", "comment")
PING = b": ping\n\n"


def _single_line(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"ServerSentEvent {name} must be a str, not {type(value).__name__}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"ServerSentEvent {name} cannot contain CR or LF")
    return value


def _retry(value: Any) -> int:
    # The spec's parser takes only ASCII digits: a non-negative int, nothing else.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("ServerSentEvent retry must be a non-negative int (milliseconds)")
    return value


class ServerSentEvent:
    """One event of an event stream.

    `data` is sent as one ``data:`` line per line of it (lines end at CRLF, CR
    or LF); a str is sent as is, None sends no data field, anything else is
    sent as compact JSON. `event` names the event type, `id` sets the client's
    last event ID (sent back as ``Last-Event-ID`` when it reconnects), `retry`
    is the reconnection delay in milliseconds and `comment` a comment line
    (ignored by clients). `event`, `id` and `comment` cannot contain CR or LF,
    and `id` no NUL: they would end the field and start a forged one.
    """

    __slots__ = _FIELDS

    def __init__(
        self,
        data: Any = None,
        event: str | None = None,
        id: str | int | None = None,
        retry: int | None = None,
        comment: str | None = None,
    ) -> None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("ServerSentEvent data must be a str or JSON-serialisable, not bytes")
        if data is not None and not isinstance(data, str):
            data = encode_json(data).decode("utf-8")
        self.data: str | None = data
        self.event = None if event is None else _single_line("event", event)
        if isinstance(id, int) and not isinstance(id, bool):
            id = str(id)
        self.id = None if id is None else _single_line("id", id)
        if self.id is not None and "\0" in self.id:
            raise ValueError("ServerSentEvent id cannot contain NUL")
        self.retry = None if retry is None else _retry(retry)
        self.comment = None if comment is None else _single_line("comment", comment)

    def encode(self) -> bytes:
        """The event in the wire format, ending with the blank line that dispatches it."""
        lines = []
        # Checked again here, for fields changed after the event was created.
        if self.comment is not None:
            comment = _single_line("comment", self.comment)
            lines.append(f": {comment}" if comment else ":")
        if self.event is not None:
            lines.append(f"event: {_single_line('event', self.event)}")
        if self.id is not None:
            if "\0" in self.id:
                raise ValueError("ServerSentEvent id cannot contain NUL")
            lines.append(f"id: {_single_line('id', self.id)}")
        if self.retry is not None:
            lines.append(f"retry: {_retry(self.retry)}")
        if self.data is not None:
            # Empty data is one "data:" line: clients dispatch an event with empty data.
            lines.extend(f"data: {line}" for line in _LINE_BREAK.split(self.data))
        lines.append("\n")
        return "\n".join(lines).encode("utf-8")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerSentEvent):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _FIELDS)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, f) for f in _FIELDS))

    def __repr__(self) -> str:
        values = ((f, getattr(self, f)) for f in _FIELDS)
        fields = ", ".join(f"{f}={value!r}" for f, value in values if value is not None)
        return f"ServerSentEvent({fields})"


def encode_event(item: Any) -> bytes:
    """What an EventSourceResponse iterable yields, in the wire format.

    A ServerSentEvent; a str (the data of one event); or a dict whose keys are
    ServerSentEvent's fields (``data``, ``event``, ``id``, ``retry``, ``comment``).
    """
    if isinstance(item, ServerSentEvent):
        return item.encode()
    if isinstance(item, str):
        return ServerSentEvent(item).encode()
    if isinstance(item, Mapping):
        unknown = [key for key in item if key not in _FIELDS]
        if unknown:
            raise TypeError(
                f"an event dict has the keys of ServerSentEvent ({', '.join(_FIELDS)}); "
                f"got {unknown!r}. To send a dict as JSON data, yield {{'data': your_dict}} "
                "or ServerSentEvent(data=your_dict)"
            )
        return ServerSentEvent(**item).encode()
    raise TypeError(
        f"EventSourceResponse items must be ServerSentEvent, str or dict, not {type(item).__name__}"
    )


class EventSourceResponse(StreamingResponse):
    """A ``text/event-stream`` response fed by an (async) iterable of events.

    The iterable yields ServerSentEvent objects, str (the data of an event) or
    dicts of ServerSentEvent's fields. The headers go out at once, with
    ``Cache-Control: no-store`` and ``X-Accel-Buffering: no`` (so nginx does
    not buffer the stream); each event is sent as soon as it is produced.

    - `ping`: seconds of silence after which a comment line keeps proxies and
      clients from timing the connection out; 0 or None: no pings.
    - `send_timeout`: seconds one send may wait for a client that stopped
      reading before the stream ends (None: wait as long as the server does).
    - When the client disconnects, the iteration is cancelled even while it
      waits for its next event, and the iterator is closed (`aclose()`), so
      the `finally:` blocks of a generator run. Background tasks run only
      after a stream that ended by itself.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterable[Any] | Iterable[Any],
        ping: float | None = 15,
        headers: Mapping[str, str] | None = None,
        *,
        status_code: int = 200,
        background: BackgroundTask | None = None,
        send_timeout: float | None = None,
    ) -> None:
        if ping is not None and (not math.isfinite(ping) or ping < 0):
            raise ValueError("ping must be a non-negative number of seconds, 0 or None")
        if send_timeout is not None and send_timeout <= 0:
            raise ValueError("send_timeout must be a positive number of seconds or None")
        self.ping = ping or None
        self.send_timeout = send_timeout
        super().__init__(content, status_code, headers, background=background)
        names = {name for name, _ in self.raw_headers}
        if b"cache-control" not in names:
            self.raw_headers.append((b"cache-control", b"no-store"))
        if b"x-accel-buffering" not in names:
            self.raw_headers.append((b"x-accel-buffering", b"no"))

    async def _stream(
        self, iterator: AsyncGenerator[Any, None], send: Send, ended: list[bool]
    ) -> bool:
        """Send events until the iterable ends (then True, also put in `ended`), or the
        client is gone or stuck (False).

        What the iterable raises is raised: only send() speaks for the client.
        """
        ping = self.ping
        send_timeout = self.send_timeout
        lock = anyio.Lock()
        last_sent = anyio.current_time()

        async def write(body: bytes, more_body: bool = True) -> bool:
            """Send one body message; False when the client is gone or too slow."""
            nonlocal last_sent
            message: Message = {"type": "http.response.body", "body": body, "more_body": more_body}
            async with lock:
                if send_timeout is None:
                    if not await sent(send, message):
                        return False
                else:
                    with anyio.move_on_after(send_timeout) as timer:
                        if not await sent(send, message):
                            return False
                    if timer.cancelled_caught:
                        logger.debug("Event stream ended: a send waited over %ss", send_timeout)
                        return False
                last_sent = anyio.current_time()
            return True

        with unwrap_single_error():
            async with anyio.create_task_group() as tg:

                async def keep_alive(interval: float) -> None:
                    while True:
                        delay = last_sent + interval - anyio.current_time()
                        if delay > 0:
                            await anyio.sleep(delay)
                        elif not await write(PING):
                            tg.cancel_scope.cancel()  # ends the iteration too
                            return

                if ping is not None:
                    tg.start_soon(keep_alive, ping)
                async for item in iterator:
                    if not await write(encode_event(item)):
                        break
                else:
                    if await write(b"", more_body=False):
                        ended.append(True)
                tg.cancel_scope.cancel()
        return bool(ended)
