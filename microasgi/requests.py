"""HTTPConnection (what HTTP requests and WebSockets share) and Request."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread

from microasgi._context import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_COOKIE_SIZE,
    ROOT_PATH_KEY,
    context_of,
)
from microasgi._forms import parse_form
from microasgi._json import InvalidJSON, decode_json
from microasgi.datastructures import URL, FormData, Headers, QueryParams, State, quote_path
from microasgi.exceptions import HTTPException
from microasgi.types import Message, Receive, Scope, Send

__all__ = ["ClientDisconnect", "HTTPConnection", "Request"]

# JSON bodies larger than this are decoded in a worker thread, so that other
# requests on the event loop are not held up for the time it takes.
_JSON_IN_THREAD = 256 * 1024


class ClientDisconnect(Exception):
    """The client went away while the request body was being read."""


# A backslash escape inside a quoted cookie value: three octal digits, or any one
# character (not a line break), as http.cookies writes them.
_COOKIE_ESCAPE = re.compile(r"\\(?:([0-3][0-7][0-7])|(.))")


def _unescape(match: re.Match[str]) -> str:
    octal = match.group(1)
    return chr(int(octal, 8)) if octal else match.group(2)


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a Cookie header the way browsers send it; malformed pairs are skipped.

    Linear in the header's length (one split, one regex pass per quoted value),
    whatever the interpreter's http.cookies does (CVE-2024-7592).
    """
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        key, sep, value = chunk.partition("=")
        if not sep:  # a bare value, as some clients send: kept under an empty name
            key, value = "", key
        key, value = key.strip(), value.strip()
        if not key and not value:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
            if "\\" in value:
                value = _COOKIE_ESCAPE.sub(_unescape, value)
        cookies[key] = value
    return cookies


async def _no_receive() -> Message:
    raise RuntimeError("this connection has no receive channel")


async def _no_send(message: Message) -> None:
    raise RuntimeError("this connection has no send channel")


class HTTPConnection:
    """The parts of an HTTP request and a WebSocket that are the same.

    Everything is parsed on first access and kept.
    """

    # Parsed on first use; class-level defaults keep construction to three assignments.
    _headers: Headers | None = None
    _query_params: QueryParams | None = None
    _cookies: dict[str, str] | None = None
    _url: URL | None = None
    _state: State | None = None

    def __init__(self, scope: Scope, receive: Receive = _no_receive, send: Send = _no_send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send

    def __getitem__(self, key: str) -> Any:
        return self.scope[key]

    @property
    def app(self) -> Any:
        """The application serving the request (`scope["app"]`: the App, for ours)."""
        return self.scope.get("app")

    @property
    def url(self) -> URL:
        if self._url is None:
            self._url = URL.from_scope(self.scope)
        return self._url

    @property
    def base_url(self) -> URL:
        """The URL of the outermost app: scheme, host and its root path."""
        root = self.scope.get(ROOT_PATH_KEY, self.scope.get("root_path", ""))
        return URL(self.url.scheme, self.url.netloc, quote_path(root or "") + "/")

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(raw=self.scope.get("headers") or [])
        return self._headers

    @property
    def query_params(self) -> QueryParams:
        if self._query_params is None:
            self._query_params = QueryParams(self.scope.get("query_string", b""))
        return self._query_params

    @property
    def path_params(self) -> dict[str, Any]:
        params: dict[str, Any] = self.scope.get("path_params", {})
        return params

    @property
    def cookies(self) -> dict[str, str]:
        """The request's cookies; a Cookie header over the app's `max_cookie_size`
        raises HTTPException(431)."""
        if self._cookies is None:
            values = self.headers.getlist("cookie")
            header = "; ".join(values)
            context = context_of(self.scope)
            limit = DEFAULT_MAX_COOKIE_SIZE if context is None else context.max_cookie_size
            if limit is not None and len(header) > limit:
                raise HTTPException(431, f"Cookie header larger than {limit} bytes")
            self._cookies = parse_cookies(header) if header else {}
        return self._cookies

    @property
    def session(self) -> dict[str, Any]:
        """The session dict that SessionMiddleware loaded from its signed cookie."""
        try:
            session: dict[str, Any] = self.scope["session"]  # the key SessionMiddleware sets
        except KeyError:
            raise RuntimeError(
                "request.session needs SessionMiddleware: add "
                "Middleware(SessionMiddleware, secret_key=...) to the app's middleware"
            ) from None
        return session

    @property
    def client(self) -> tuple[str, int] | None:
        client = self.scope.get("client")
        return (client[0], client[1]) if client else None

    @property
    def state(self) -> State:
        """Per-request state, starting from what the lifespan yielded."""
        if self._state is None:
            self._state = State(self.scope.setdefault("state", {}))
        return self._state

    def url_for(self, name: str, /, **path_params: Any) -> URL:
        """Absolute URL of the route `name` (``"mount:name"`` inside named mounts)."""
        context = context_of(self.scope)
        if context is None or context.router is None:
            raise RuntimeError("url_for needs a request served by a microasgi App or Router")
        path = context.router.url_path_for(name, **path_params)
        base = self.base_url
        return URL(base.scheme, base.netloc, base.path.rstrip("/") + path)


class Request(HTTPConnection):
    """An HTTP request: the connection plus its method and body."""

    _body: bytes | None = None
    _json: Any = None
    _has_json = False
    _form: FormData | None = None
    _stream_consumed = False
    _is_disconnected = False
    # Body messages received by is_disconnected() before anyone asked for the body.
    _pending: list[Message] | None = None

    @property
    def method(self) -> str:
        method: str = self.scope["method"]
        return method

    @property
    def receive(self) -> Receive:
        return self._receive

    @property
    def last_event_id(self) -> str | None:
        """The Last-Event-ID header: the id of the last server-sent event the client got.

        An EventSource sends it when it reconnects, so the stream can resume
        after that event. None when absent. Browsers send the id as UTF-8, so
        it is decoded as UTF-8 (bytes that are not are replaced by U+FFFD).
        """
        value: str | None = self.headers.get("last-event-id")
        if value is None or value.isascii():
            return value
        return value.encode("latin-1").decode("utf-8", "replace")

    def _max_body_size(self) -> int | None:
        context = context_of(self.scope)
        return DEFAULT_MAX_BODY_SIZE if context is None else context.max_body_size

    async def stream(self) -> AsyncIterator[bytes]:
        """The body as it arrives, chunk by chunk, within the body size limit.

        Raises HTTPException(413) past the limit and ClientDisconnect if the
        client goes away before the end.
        """
        if self._body is not None:
            yield self._body
            return
        if self._stream_consumed:
            raise RuntimeError("the request body was already consumed by stream()")
        self._stream_consumed = True
        limit = self._max_body_size()
        if limit is not None:
            # The raw headers, not self.headers: building its index costs more than this.
            for name, value in self.scope.get("headers", ()):
                if name == b"content-length":
                    # More than 18 digits is over any limit (and int() of thousands is slow).
                    if value.isdigit() and (len(value) > 18 or int(value) > limit):
                        raise HTTPException(413, f"Request body is larger than {limit} bytes")
                    break
        received = 0
        if self._pending is None:
            self._pending = []
        pending = self._pending  # is_disconnected() may add to it while we stream
        while True:
            message = pending.pop(0) if pending else await self._receive()
            kind = message["type"]
            if kind == "http.request":
                chunk = message.get("body", b"")
                if chunk:
                    received += len(chunk)
                    if limit is not None and received > limit:
                        raise HTTPException(413, f"Request body is larger than {limit} bytes")
                    yield chunk
                if not message.get("more_body", False):
                    return
            elif kind == "http.disconnect":
                self._is_disconnected = True
                raise ClientDisconnect()

    async def body(self) -> bytes:
        """The whole body (read once, then kept)."""
        if self._body is None:
            chunks = [chunk async for chunk in self.stream()]
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        """The body parsed as JSON (RFC 8259, UTF-8); anything else answers 400.

        `NaN`, `Infinity`, out-of-range numbers and lone surrogates are refused
        too. A large body is parsed in a worker thread.
        """
        if not self._has_json:
            body = await self.body()
            try:
                if len(body) > _JSON_IN_THREAD:
                    self._json = await anyio.to_thread.run_sync(decode_json, body)
                else:
                    self._json = decode_json(body)
            except InvalidJSON as exc:
                raise HTTPException(400, f"Invalid JSON body: {exc}") from None
            self._has_json = True
        return self._json

    async def form(
        self,
        *,
        max_files: int = 1000,
        max_fields: int = 1000,
        max_part_size: int = 1024 * 1024,
    ) -> FormData:
        """Parse an urlencoded or multipart body; malformed input answers 400.

        Files are spooled to temporary files; `max_part_size` bounds a non-file
        field (urlencoded or multipart: 413 past it), the app's body size limit
        the whole body. After an urlencoded form, `body()` still returns the body.
        """
        if self._form is None:
            form, body = await parse_form(
                self.headers.get("content-type", ""),
                self.stream(),
                max_files=max_files,
                max_fields=max_fields,
                max_part_size=max_part_size,
            )
            if body is not None:
                self._body = body
            self._form = form
        return self._form

    async def close(self) -> None:
        """Close the uploaded files of the parsed form, if any."""
        if self._form is not None:
            await self._form.close()

    async def is_disconnected(self) -> bool:
        """True once the client has gone away; never blocks and never loses body data."""
        if not self._is_disconnected:
            message: Message = {}
            with anyio.CancelScope() as scope:
                scope.cancel()
                message = await self._receive()
            kind = message.get("type")
            if kind == "http.disconnect":
                self._is_disconnected = True
            elif kind == "http.request":
                if self._pending is None:
                    self._pending = []
                self._pending.append(message)
        return self._is_disconnected
