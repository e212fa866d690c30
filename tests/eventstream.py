"""An event stream parser that follows the HTML standard's algorithm (section 9.2.6),
for tests to read what EventSourceResponse sends the way a browser would."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from dataclasses import dataclass

_LINE = re.compile(r"\r\n|\r|\n")


@dataclass
class Event:
    type: str
    data: str
    last_event_id: str


class EventStreamParser:
    """Feed it text as it arrives; `events` collects the dispatched events, `comments`
    the comment lines, `retry` the last reconnection time."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.comments: list[str] = []
        self.retry: int | None = None
        self.last_event_id = ""
        self._data = ""
        self._type = ""
        self._id_buffer = ""
        self._pending = ""
        self._first = True

    def feed(self, text: str) -> None:
        if self._first and text:
            self._first = False
            if text.startswith("\ufeff"):
                text = text[1:]
        text = self._pending + text
        lines = _LINE.split(text)
        # The last piece may be an incomplete line (or a CR whose LF is still to come).
        self._pending = lines.pop()
        if text.endswith("\r"):
            self._pending = lines.pop() + "\r" if lines else "\r"
        for line in lines:
            self._line(line)

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments.append(line[1:].removeprefix(" "))
            return
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "event":
            self._type = value
        elif name == "data":
            self._data += value + "\n"
        elif name == "id" and "\0" not in value:
            self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)

    def _dispatch(self) -> None:
        self.last_event_id = self._id_buffer
        if self._data == "":
            self._type = ""
            return
        data = self._data.removesuffix("\n")
        self.events.append(Event(self._type or "message", data, self.last_event_id))
        self._data = ""
        self._type = ""


def parse(chunks: Iterable[bytes | str]) -> EventStreamParser:
    """Parse a whole stream given in pieces (bytes may split a UTF-8 sequence)."""
    parser = EventStreamParser()
    decoder = codecs.getincrementaldecoder("utf-8")()
    for chunk in chunks:
        parser.feed(decoder.decode(chunk) if isinstance(chunk, bytes) else chunk)
    parser.feed(decoder.decode(b"", final=True))
    return parser
