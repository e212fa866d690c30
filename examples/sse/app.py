"""Server-sent events: a live clock and a message feed, resumable, with a long-poll twin.

    python -m microasgi run examples.sse:app

- ``GET /``: the page. Its EventSource shows the clock and the messages, and
  reconnects by itself, sending ``Last-Event-ID``.
- ``GET /events``: the event stream. A ``tick`` event every second (no id, so it
  does not move the client's last event ID) and one ``message`` event per
  message, whose id is the message's number. A client that reconnects with
  ``Last-Event-ID: n`` first gets every kept message after n, so nothing posted
  while it was away is lost, and nothing is sent twice.
- ``POST /messages`` with ``{"text": "..."}``: add a message.
- ``GET /poll?after=n``: long polling, for clients without EventSource: the
  messages after n as JSON, waiting up to ``timeout`` seconds (25 by default)
  for the first one.
- ``GET /stats``: open streams and the Last-Event-IDs that reconnects sent.

The feed lives in the process: run one worker (a shared feed would use
``microasgi.broadcast`` instead). ``MICROASGI_SSE_STREAM_SECONDS`` ends each
stream after that many seconds, as some proxies do; the page reconnects and
resumes. docs/sse.md walks through this file.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from microasgi import (
    App,
    EventSourceResponse,
    FileResponse,
    HTTPException,
    Request,
    ServerSentEvent,
)
from microasgi.staticfiles import StaticFiles

__all__ = ["Feed", "app", "create_app"]

HERE = Path(__file__).resolve().parent
MAX_TEXT = 500
#: how many messages a new client (one without Last-Event-ID) is shown
BACKLOG = 20
PAGE_HEADERS = {"content-security-policy": "default-src 'self'", "cache-control": "no-cache"}


class Feed:
    """The messages posted so far (the last `keep` of them), numbered from 1."""

    def __init__(self, keep: int = 1000) -> None:
        self.messages: deque[tuple[int, str]] = deque(maxlen=keep)
        self.last_id = 0
        self._changed = anyio.Event()

    def publish(self, text: str) -> int:
        self.last_id += 1
        self.messages.append((self.last_id, text))
        # Wake every waiter, then start a new round of waiting.
        self._changed.set()
        self._changed = anyio.Event()
        return self.last_id

    def after(self, last_id: int) -> list[tuple[int, str]]:
        """The kept messages with an id above `last_id`, oldest first."""
        if last_id >= self.last_id:
            return []
        return [(mid, text) for mid, text in self.messages if mid > last_id]

    async def wait_after(self, last_id: int, timeout: float) -> list[tuple[int, str]]:
        """The messages after `last_id`, waiting up to `timeout` seconds for one."""
        with anyio.move_on_after(timeout):
            while self.last_id <= last_id:
                await self._changed.wait()
        return self.after(last_id)


@dataclass
class Stats:
    """What the streams did, for /stats (and the tests)."""

    open_streams: int = 0
    streams: int = 0
    #: the Last-Event-ID of each stream that resumed, most recent last
    resumed_from: deque[str] = field(default_factory=lambda: deque(maxlen=100))


def _parse_id(value: str | None) -> int | None:
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def _message(mid: int, text: str) -> ServerSentEvent:
    return ServerSentEvent(text, id=mid)


def create_app(
    *,
    stream_seconds: float | None = None,
    tick_seconds: float = 1.0,
    ping: float = 15,
    retry_ms: int = 1000,
) -> App:
    """The example app; `stream_seconds` ends each event stream after that long."""
    feed = Feed()
    stats = Stats()
    app = App()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(HERE / "static" / "index.html", headers=PAGE_HEADERS)

    async def stream(last_id: int | None) -> AsyncIterator[ServerSentEvent]:
        stats.open_streams += 1
        stats.streams += 1
        try:
            # How long the client waits before it reconnects, if this stream ends.
            yield ServerSentEvent(retry=retry_ms, comment="connected")
            if last_id is None:  # a new client: the last few messages, then live
                backlog = list(feed.messages)[-BACKLOG:]
                last_id = backlog[0][0] - 1 if backlog else feed.last_id
            started = anyio.current_time()
            next_tick = started
            while True:
                now = anyio.current_time()
                if stream_seconds is not None and now - started >= stream_seconds:
                    return  # the client reconnects after retry_ms, resuming from its last id
                if now >= next_tick:
                    yield ServerSentEvent(time.strftime("%H:%M:%S", time.gmtime()), event="tick")
                    next_tick = max(next_tick + tick_seconds, now)
                    continue
                wait = next_tick - now
                if stream_seconds is not None:
                    wait = min(wait, started + stream_seconds - now)
                for mid, text in await feed.wait_after(last_id, wait):
                    yield _message(mid, text)
                    last_id = mid
        finally:
            stats.open_streams -= 1

    @app.get("/events")
    async def events(request: Request) -> EventSourceResponse:
        header = request.last_event_id
        if header is not None:
            stats.resumed_from.append(header)
        return EventSourceResponse(stream(_parse_id(header)), ping=ping)

    @app.post("/messages")
    async def post_message(request: Request) -> dict[str, int]:
        body = await request.json()
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise HTTPException(400, 'Send {"text": "..."} with some text')
        if len(text) > MAX_TEXT:
            raise HTTPException(413, f"Messages are at most {MAX_TEXT} characters")
        return {"id": feed.publish(text.strip())}

    @app.get("/poll")
    async def poll(request: Request) -> dict[str, Any]:
        after = _parse_id(request.query_params.get("after", "0"))
        if after is None:
            raise HTTPException(400, "after must be a message id (a number)")
        try:
            timeout = min(max(float(request.query_params.get("timeout", "25")), 0.0), 30.0)
        except ValueError:
            raise HTTPException(400, "timeout must be a number of seconds") from None
        messages = await feed.wait_after(after, timeout)
        return {
            "messages": [{"id": mid, "text": text} for mid, text in messages],
            "last_id": messages[-1][0] if messages else after,
        }

    @app.get("/stats")
    async def get_stats() -> dict[str, Any]:
        return {
            "open_streams": stats.open_streams,
            "streams": stats.streams,
            "resumed_from": list(stats.resumed_from),
            "last_id": feed.last_id,
        }

    return app


def _stream_seconds() -> float | None:
    value = os.environ.get("MICROASGI_SSE_STREAM_SECONDS")
    return float(value) if value else None


app = create_app(stream_seconds=_stream_seconds())
