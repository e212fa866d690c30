"""A chat: rooms in the path, nicknames, join/leave notices, fanned out through Broadcast.

    python -m microasgi run examples.chat:app                  # one process, memory://

    MICROASGI_BROADCAST_URL=redis://127.0.0.1:6379/0 \\
        python -m microasgi run examples.chat:app --workers 4  # four processes, one chat

Pages: ``GET /`` (choose a nickname and a room) and ``GET /rooms/{room}`` (the chat).
The browser talks to ``/ws/{room}?nick=NAME`` (``&since=POSITION`` when it comes back):
it sends text frames ``{"text": "..."}`` and receives JSON events: ``message``,
``join``, ``leave``, ``notice`` and ``error``, several at once as a ``batch``. A newcomer
first gets the room's last 50 messages; a client that comes back with the position of
the last message it showed gets every message it missed, once, in order.
Each connection may send MICROASGI_CHAT_RATE messages a second (default 5), in bursts
of up to MICROASGI_CHAT_BURST (default 10). docs/chat.md walks through this file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import string
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio

from microasgi import (
    App,
    HTMLResponse,
    HTTPException,
    RedirectResponse,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
)
from microasgi.broadcast import Broadcast, BroadcastError, Event, Subscriber, is_position
from microasgi.middleware import (
    CrossOriginProtectionMiddleware,
    Middleware,
    TrustedHostMiddleware,
)
from microasgi.websockets import WebSocketState

__all__ = [
    "RateLimit",
    "TokenBucket",
    "app",
    "clean_nick",
    "client_event",
    "client_text",
    "nesting_depth",
    "parse_message",
    "valid_room",
]

logger = logging.getLogger("microasgi.chat")

MAX_ROOM = 64
MAX_NICK = 32
MAX_TEXT = 2000
# Longer frames are refused before parsing: 2,000 characters written as \uXXXX
# escapes take 12,000, and some room is left for the JSON around them.
MAX_FRAME = 16_384
# A message is one flat object: deeper nesting is refused before json.loads, which
# recurses once per level (RecursionError past about 1,000).
MAX_NESTING = 8
DEFAULT_RATE = 5.0  # messages a second, per connection
DEFAULT_BURST = 10
CHANNEL_PREFIX = "chat:room:"
LEAVE_TIMEOUT = 5.0  # seconds we try to announce a leave once the client is gone
HISTORY = 50  # messages a newcomer sees from before it joined
BATCH = 100  # events sent in one frame at most, when several are waiting

_ROOM = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ROOM}}}")
# Control characters (except tab and newline) and lone surrogates, which cannot be
# encoded as UTF-8: removed from message texts.
_UNWANTED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")

HERE = Path(__file__).parent


# -- validation ----------------------------------------------------------------------


def valid_room(room: str) -> bool:
    """1 to 64 letters, digits, `_` or `-`: safe in a path, an HTML page and a channel."""
    return _ROOM.fullmatch(room) is not None


def clean_nick(raw: str | None) -> str:
    """The nickname without surrounding spaces; ValueError saying what is wrong with it."""
    if raw is None:
        raise ValueError("choose a nickname: /ws/{room}?nick=NAME")
    nick = raw.strip()
    if not nick:
        raise ValueError("the nickname is empty")
    if len(nick) > MAX_NICK:
        raise ValueError(f"the nickname is longer than {MAX_NICK} characters")
    if not nick.isprintable():
        raise ValueError("the nickname contains control or invisible characters")
    return nick


_STRUCTURE = re.compile(r'["\[\]{}]')


def nesting_depth(raw: str, stop: int) -> int:
    """How deeply `[` and `{` nest in `raw` outside JSON strings, counting no further than
    `stop` + 1. One pass: quotes and brackets are found with C-speed searches, and each
    backslash before a quote is looked at once. Unbalanced input is measured the same way
    (json.loads refuses it afterwards).
    """
    depth = deepest = position = 0
    while deepest <= stop:
        found = _STRUCTURE.search(raw, position)
        if found is None:
            break
        char, position = found.group(), found.end()
        if char == '"':  # skip the string: to the next quote not escaped by a backslash
            while True:
                end = raw.find('"', position)
                if end < 0:
                    return deepest  # unterminated: not JSON
                backslashes = end
                while backslashes > position and raw[backslashes - 1] == "\\":
                    backslashes -= 1
                position = end + 1
                if (end - backslashes) % 2 == 0:
                    break
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_message(raw: str) -> str:
    """The text of a client frame `{"text": "..."}`; ValueError saying what is wrong."""
    if len(raw) > MAX_FRAME:
        raise ValueError(f"the message is longer than {MAX_TEXT} characters")
    if nesting_depth(raw, MAX_NESTING) > MAX_NESTING:
        raise ValueError(f"the message nests more than {MAX_NESTING} levels deep")
    try:
        data = json.loads(raw)
    except ValueError:
        raise ValueError('messages are JSON like {"text": "hello"}') from None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise ValueError('messages are JSON like {"text": "hello"}')
    text: str = data["text"]
    if len(text) > MAX_TEXT:
        raise ValueError(f"the message is longer than {MAX_TEXT} characters")
    text = _UNWANTED.sub("", text.replace("\r\n", "\n")).strip()
    if not text:
        raise ValueError("the message is empty")
    return text


# -- rate limits ---------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimit:
    """How fast one connection may send: `rate` messages a second, `burst` at once."""

    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST

    def __post_init__(self) -> None:
        if not self.rate > 0 or self.burst < 1:
            raise ValueError(f"a chat rate limit needs rate > 0 and burst >= 1, not {self}")

    @classmethod
    def from_environment(cls) -> RateLimit:
        """From MICROASGI_CHAT_RATE and MICROASGI_CHAT_BURST (ValueError if invalid)."""
        rate = os.environ.get("MICROASGI_CHAT_RATE", str(DEFAULT_RATE))
        burst = os.environ.get("MICROASGI_CHAT_BURST", str(DEFAULT_BURST))
        try:
            return cls(float(rate), int(burst))
        except ValueError:
            raise ValueError(
                f"MICROASGI_CHAT_RATE={rate!r} and MICROASGI_CHAT_BURST={burst!r}: "
                "the rate is messages a second (> 0), the burst a whole number (>= 1)"
            ) from None

    def bucket(self) -> TokenBucket:
        return TokenBucket(self.rate, self.burst, anyio.current_time())


class TokenBucket:
    """`burst` tokens to start with, `rate` more a second up to `burst`; one per message."""

    __slots__ = ("burst", "rate", "stamp", "tokens")  # two per connection: no __dict__

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Take a token if there is one (at time `now`, in seconds)."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


# -- what goes over the wire ---------------------------------------------------------


def client_event(event: Event) -> dict[str, Any] | None:
    """The JSON a client gets for a Broadcast event (None: nothing to tell).

    Messages carry their position: the page sends the last one it showed back as
    `?since=` when it reconnects.
    """
    if event.kind == "message":
        try:
            data = json.loads(event.message or "")
        except ValueError:
            return None  # not published by this app (anyone can PUBLISH on Redis)
        if not (isinstance(data, dict) and data.get("type") in ("message", "join", "leave")):
            return None
    elif event.kind == "gap":
        missed = event.missed or 0
        text = f"{missed} message{'s' if missed != 1 else ''} could not be delivered."
        data = {"type": "notice", "reason": "gap", "text": text, "missed": missed}
    else:
        text = "The chat's history was reset: messages sent before this point may be missing."
        data = {"type": "notice", "reason": "reset", "text": text}
    if event.position is not None:
        data["position"] = event.position
    return data


@lru_cache(maxsize=256)
def client_text(event: Event) -> str | None:
    """`client_event` as JSON text, worked out once per event for all its subscribers."""
    data = client_event(event)
    return None if data is None else json.dumps(data, ensure_ascii=False)


def message_event(nick: str, text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": secrets.token_hex(8),
        "nick": nick,
        "text": text,
        "time": int(time.time() * 1000),  # milliseconds, like JavaScript's Date.now()
    }


class Outbox:
    """Sends JSON to one client: one send at a time, from either of the two tasks.

    A lock of its own rather than an anyio.Lock: the server holds one per connection,
    and this one takes no memory until two sends actually meet. A client that has gone
    away is not an error here (a send raises WebSocketDisconnect, and the receiving
    side sees the disconnect and ends the connection), and once the server has closed
    the connection, what is still to be sent is dropped.
    """

    __slots__ = ("_busy", "_idle", "ws")

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._busy = False
        self._idle: anyio.Event | None = None  # set when a send ends, while one waits

    async def send(self, data: dict[str, Any]) -> None:
        await self.send_text(json.dumps(data, ensure_ascii=False))

    async def send_text(self, text: str) -> None:
        async with self._turn():
            if self.ws.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(WebSocketDisconnect):
                    await self.ws.send_text(text)

    async def error(self, text: str, reason: str, **extra: Any) -> None:
        await self.send({"type": "error", "reason": reason, "text": text, **extra})

    async def close(self, code: int, reason: str) -> None:
        async with self._turn():
            if self.ws.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(WebSocketDisconnect):
                    await self.ws.close(code, reason)

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        while self._busy:
            idle = self._idle = self._idle or anyio.Event()
            await idle.wait()
        self._busy = True
        try:
            yield
        finally:
            self._busy = False
            idle, self._idle = self._idle, None
            if idle is not None:
                idle.set()


# -- the app -------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: App) -> AsyncIterator[dict[str, Any]]:
    url = os.environ.get("MICROASGI_BROADCAST_URL", "memory://")
    rate_limit = RateLimit.from_environment()
    async with Broadcast(url) as broadcast:
        logger.info("chat: messages go through %s://", urlsplit(url).scheme)
        yield {"broadcast": broadcast, "rate_limit": rate_limit}


# The host names the chat answers for (400 otherwise), comma-separated in
# MICROASGI_ALLOWED_HOSTS; "testserver" is the test client's.
ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get(
        "MICROASGI_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver"
    ).split(",")
    if host.strip()
]

app = App(
    lifespan=lifespan,
    middleware=[
        Middleware(TrustedHostMiddleware, allowed_hosts=ALLOWED_HOSTS),
        Middleware(CrossOriginProtectionMiddleware),
    ],
)

PAGE_HEADERS = {
    # Our own scripts, styles and WebSocket only: nothing inline, nothing from elsewhere.
    "content-security-policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _template(name: str) -> string.Template:
    return string.Template((HERE / "templates" / name).read_text("utf-8"))


LANDING = _template("index.html")
ROOM = _template("room.html")
STATIC = {
    "chat.js": ((HERE / "static" / "chat.js").read_bytes(), "text/javascript; charset=utf-8"),
    "chat.css": ((HERE / "static" / "chat.css").read_bytes(), "text/css; charset=utf-8"),
}


def landing_page(
    room: str = "", nick: str = "", error: str = "", status_code: int = 200
) -> HTMLResponse:
    error_html = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = LANDING.substitute(room=escape(room), nick=escape(nick), error=error_html)
    return HTMLResponse(body, status_code, headers=PAGE_HEADERS)


@app.get("/")
async def index(request: Request) -> HTMLResponse:
    room = request.query_params.get("room") or "lobby"
    return landing_page(room if valid_room(room) else "lobby")


@app.get("/join")
async def join(request: Request) -> Response:
    """The landing form: on to the room's page, or back to the form saying what is wrong."""
    room = (request.query_params.get("room") or "").strip()
    nick = request.query_params.get("nick") or ""
    if not valid_room(room):
        error = f"Room names are 1 to {MAX_ROOM} letters, digits, _ or -."
        return landing_page(room, nick, error, 400)
    try:
        nick = clean_nick(nick)
    except ValueError as exc:
        return landing_page(room, nick, f"Invalid nickname: {exc}.", 400)
    # Path-absolute: a URL built from the Host header would send the browser wherever
    # that header (a client's, or a proxy's) says.
    path = "/" + request.url_for("room", room=room).path.lstrip("/")
    return RedirectResponse(f"{path}?{urlencode({'nick': nick})}", 303)


@app.get("/rooms/{room}", name="room")
async def room_page(room: str) -> HTMLResponse:
    if not valid_room(room):
        raise HTTPException(404, "No such room: names are letters, digits, _ or -")
    return HTMLResponse(ROOM.substitute(room=escape(room)), headers=PAGE_HEADERS)


@app.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        raise HTTPException(404)
    content, media_type = STATIC[name]
    return Response(content, media_type=media_type, headers={"cache-control": "no-cache"})


@app.websocket("/ws/{room}")
async def chat_socket(ws: WebSocket, room: str) -> None:
    # Refuse bad input before accepting: the client gets a denied handshake.
    if not same_origin(ws):
        # Browsers send Origin with every WebSocket handshake and let any page
        # open one: without this, another site could read the room's messages.
        await ws.close(1008, "cross-origin WebSocket refused")
        return
    if not valid_room(room):
        await ws.close(1008, f"invalid room name: 1 to {MAX_ROOM} letters, digits, _ or -")
        return
    try:
        nick = clean_nick(ws.query_params.get("nick"))
    except ValueError as exc:
        await ws.close(1008, f"invalid nickname: {exc}")
        return

    broadcast: Broadcast = ws.state.broadcast
    channel = CHANNEL_PREFIX + room
    await ws.accept()
    outbox = Outbox(ws)
    # Where a returning client left off. Anything else is answered, then ignored.
    since = ws.query_params.get("since")
    if since is not None and not is_position(since):
        await outbox.error("since is not a position: showing the recent messages", "invalid_since")
        since = None
    joined = False
    try:
        async with (
            broadcast.subscribe(channel, since, history=0 if since else HISTORY) as subscriber,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(forward_events, subscriber, outbox, tg.cancel_scope)
            joined = True  # announced (or tried to be): a leave follows
            if not await publish(broadcast, channel, {"type": "join", "nick": nick}, keep=False):
                await outbox.error(
                    "The chat service is unavailable: others may not see that you joined.",
                    "not_delivered",
                )
            limit: RateLimit = ws.state.rate_limit
            await receive_messages(ws, broadcast, channel, nick, outbox, limit)
            tg.cancel_scope.cancel()  # the client left: stop forwarding
    except BroadcastError as exc:  # subscribe(): Redis is unreachable
        logger.warning("chat: %s: %s", channel, exc)
        await ws.close(1013, "the chat service is unavailable, try again later")
    finally:
        # Shielded: this also runs when the connection is cancelled (server shutdown).
        if joined:
            with anyio.move_on_after(LEAVE_TIMEOUT, shield=True):
                await publish(broadcast, channel, {"type": "leave", "nick": nick}, keep=False)


def same_origin(ws: WebSocket) -> bool:
    """True without an Origin (not a browser), or when it names this very host.

    Read from the raw headers: `ws.headers` would build an index of them that the
    connection then keeps for its whole life (about 1.5 KiB, for two lookups).
    """
    origin = host = None
    for name, value in ws.scope["headers"]:
        if name == b"origin" and origin is None:
            origin = value.decode("latin-1")
        elif name == b"host" and host is None:
            host = value.decode("latin-1")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == host


async def publish(
    broadcast: Broadcast, channel: str, data: dict[str, Any], *, keep: bool = True
) -> bool:
    """Publish `data` as JSON; False if the backend (Redis) cannot be reached.

    Join and leave notices are not kept (`keep=False`): a room's history and what a
    returning client is sent are its messages.
    """
    try:
        await broadcast.publish(channel, json.dumps(data, ensure_ascii=False), keep=keep)
    except BroadcastError as exc:
        logger.warning("chat: %s: %s", channel, exc)
        return False
    except RuntimeError:  # the Broadcast is already closed: the server is shutting down
        return False
    return True


async def receive_messages(
    ws: WebSocket,
    broadcast: Broadcast,
    channel: str,
    nick: str,
    outbox: Outbox,
    limit: RateLimit,
) -> None:
    """Publish what the client sends until it leaves; mistakes are answered to it alone.

    Every frame takes a token from the connection's bucket, valid or not. A frame that
    finds none is refused (an error event), and takes one from a second bucket, of the
    same size and rate: a client that empties that one too, by sending on regardless,
    is closed with 1008. So one client cannot crowd the others' messages out of the
    room's queues.
    """
    sending, patience = limit.bucket(), limit.bucket()
    while True:
        try:
            raw = await ws.receive_text()
        except WebSocketDisconnect:
            return
        except TypeError:  # a binary frame
            raw = None
        now = anyio.current_time()
        if not sending.take(now):
            if not patience.take(now):
                await outbox.close(1008, "sending too fast")
                return
            await outbox.error(
                f"You are sending too fast (at most {limit.rate:g} messages a second): "
                "this one was not delivered.",
                "rate_limited",
                **_text_of(raw),
            )
            continue
        if raw is None:
            await outbox.error('messages are text frames of JSON like {"text": "hello"}', "invalid")
            continue
        try:
            text = parse_message(raw)
        except ValueError as exc:
            await outbox.error(str(exc), "invalid")
            continue
        if not await publish(broadcast, channel, message_event(nick, text)):
            await outbox.error(
                "Your message was not delivered: the chat service is unavailable. "
                "Try again in a moment.",
                "not_delivered",
                message=text,
            )


def _text_of(raw: str | None) -> dict[str, str]:
    """`{"message": text}` for a refused frame that holds a valid message, else nothing."""
    if raw is None:
        return {}
    try:
        return {"message": parse_message(raw)}
    except ValueError:
        return {}


async def forward_events(subscriber: Subscriber, outbox: Outbox, done: anyio.CancelScope) -> None:
    """Send the room's events to the client, until the subscription ends.

    Events that are waiting together (a newcomer's history, a returning client's
    missed messages, a busy room) go in one frame: {"type": "batch", "events": [...]}.
    """
    with contextlib.suppress(StopAsyncIteration):
        while True:
            # (Awaited outside the comprehension: an await inside makes it a coroutine
            # whose frame each connection would keep while it waits.)
            batch = await subscriber.get_batch(BATCH)
            texts = [t for e in batch if (t := client_text(e))]
            if len(texts) == 1:
                await outbox.send_text(texts[0])
            elif texts:
                await outbox.send_text('{"type": "batch", "events": [' + ", ".join(texts) + "]}")
    # The Broadcast was closed: the server is shutting down. The client reconnects.
    await outbox.close(1012, "the server is restarting")
    done.cancel()
