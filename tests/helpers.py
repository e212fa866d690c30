"""Scaffolding shared by the test files: raw ASGI scopes, a fake server, middleware, ports.

Most tests go through `make_client` (conftest.py). These helpers are for the ones that
must see exactly what an app sends, or feed it exactly what a server would:

    ex = await run_app(app, http_scope("POST", "/upload"), body_messages(b"ab", b"cd"))
    assert ex.status == 200
    assert ex.header(b"content-type") == b"application/json"
    assert json.loads(ex.body) == {...}
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

import anyio

from microasgi.testclient import TestClient
from microasgi.types import ASGIApp, Message, Receive, Scope, Send

MakeClient = Callable[..., TestClient]
"""The type of the `make_client` fixture: `make_client(app, **options) -> TestClient`."""


def http_scope(
    method: str = "GET",
    path: str = "/",
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    query_string: bytes = b"",
    raw_path: bytes | None = None,
    root_path: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """An HTTP scope as a server would build it for `method path`.

    `headers` defaults to a single `host: testserver`; `raw_path` to `path` encoded.
    `extra` keys are added or replace the defaults (e.g. `server=("10.0.0.1", 8080)`).
    There is no "state" key: the app sees a server without the lifespan-state extension.
    """
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode("utf-8", "replace"),
        "root_path": root_path,
        "query_string": query_string,
        "headers": headers if headers is not None else [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    scope.update(extra)
    return scope


def body_messages(*chunks: bytes) -> list[Message]:
    """One http.request message per chunk, the last with more_body=False.

    No chunks at all gives one empty message: a request without a body.
    """
    if not chunks:
        return [{"type": "http.request", "body": b"", "more_body": False}]
    return [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]


class Exchange:
    """A fake server connection for one HTTP request: feeds the request, records the response.

    `receive()` hands out `messages` (by default an empty body) one at a time. Once they
    run out it waits until the response is complete (or `done` is set, e.g. by a
    subclass playing a client that leaves) and then says http.disconnect, as servers do;
    after a disconnect it keeps saying so. `receive_calls` counts the calls.

    `send()` keeps every message in `sent`, and appends "start", "body" (more to come)
    or "body-end" to `events`, a log that tests can share with background tasks.
    """

    def __init__(
        self, messages: Iterable[Message] | None = None, *, events: list[str] | None = None
    ) -> None:
        self.messages: list[Message] = list(messages) if messages is not None else body_messages()
        self.sent: list[Message] = []
        self.events: list[str] = events if events is not None else []
        self.receive_calls = 0
        self.done = anyio.Event()
        self.disconnected = False

    async def receive(self) -> Message:
        self.receive_calls += 1
        if self.disconnected:
            return {"type": "http.disconnect"}
        if self.messages:
            message = self.messages.pop(0)
            self.disconnected = message["type"] == "http.disconnect"
            return message
        await self.done.wait()
        self.disconnected = True
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.start":
            self.events.append("start")
        elif message["type"] == "http.response.body":
            more = message.get("more_body", False)
            self.events.append("body" if more else "body-end")
            if not more:
                self.done.set()

    async def run(self, app: ASGIApp, scope: Scope | None = None, *, timeout: float = 5) -> Self:
        """Call `app` with this connection (by default a `GET /`); a hang fails the test.

        Any exception escaping the app is raised here, so it fails the test too.
        """
        with anyio.fail_after(timeout):
            await app(scope if scope is not None else http_scope(), self.receive, self.send)
        return self

    @property
    def start(self) -> Message | None:
        """The http.response.start message, which must be the first one sent (None if none)."""
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        if not starts:
            return None
        assert self.sent[0] is starts[0], [m["type"] for m in self.sent]
        return starts[0]

    @property
    def status(self) -> int | None:
        return None if self.start is None else int(self.start["status"])

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The raw response headers, in order (empty if no response was started)."""
        if self.start is None:
            return []
        return [(bytes(k), bytes(v)) for k, v in self.start["headers"]]

    def header(self, name: bytes) -> bytes | None:
        """The value of the response header `name` (compared as is); it may appear once at most."""
        values = [v for k, v in self.headers if k == name]
        assert len(values) <= 1, values
        return values[0] if values else None

    @property
    def body(self) -> bytes:
        """Every http.response.body chunk, joined."""
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


async def run_app(
    app: ASGIApp,
    scope: Scope | None = None,
    messages: Iterable[Message] | None = None,
    *,
    timeout: float = 5,
) -> Exchange:
    """Run one request through `app` with an `Exchange`; `.sent` has every message it sent."""
    return await Exchange(messages).run(app, scope, timeout=timeout)


class AddHeader:
    """A pure-ASGI middleware that adds `name: value` to every HTTP response it passes on.

    Other scope types (websocket, lifespan) go straight through.
    """

    def __init__(self, app: ASGIApp, name: str = "x-mw", value: str = "yes") -> None:
        self.app = app
        self.header = (name.encode(), value.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def add_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, add_header)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_ports(count: int) -> list[int]:
    """`count` different ports on 127.0.0.1 that nothing listens on right now.

    Chosen below the kernel's ephemeral range: a port from that range can become
    the local port of one of the tests' own client connections between being
    chosen and the server's listen(), which then fails with "Address already in
    use" (a server that sets SO_REUSEADDR binds, and fails only to listen).
    """
    low = _ephemeral_range()[0]
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(10_000, low) if low > 11_000 else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken: try another
            port = sock.getsockname()[1]
        if port not in ports:
            ports.append(port)
    return ports
