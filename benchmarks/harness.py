"""Driving an ASGI app in process: scopes, a null server, checks, timing and memory.

No server and no sockets: the app is called as ``await app(scope, receive, send)``
in a loop inside one asyncio event loop. What is measured is therefore the
framework's own overhead per request, plus a small, constant harness cost
(copying the scope template, calling `receive`/`send`) that every app pays alike.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import tracemalloc
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Protocol

__all__ = [
    "ASGIApp",
    "Check",
    "Memory",
    "Message",
    "Receive",
    "Reply",
    "Samples",
    "Scope",
    "Send",
    "Timed",
    "calibrate",
    "expect_json",
    "expect_text",
    "http_scope",
    "measure_memory",
    "receive",
    "request_once",
    "run_rounds",
    "send",
    "time_batch",
    "verify",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_HEADERS: list[tuple[bytes, bytes]] = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"microasgi-bench/1.0"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
]


def http_scope(path: str, method: str = "GET", query_string: bytes = b"") -> dict[str, Any]:
    """A scope as uvicorn would build it for a plain HTTP/1.1 request to `path`.

    Apps may write to the scope, so each request gets a shallow copy of this
    template (the header list is shared: none of the apps modifies it).
    """
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("ascii"),
        "root_path": "",
        "query_string": query_string,
        "headers": _HEADERS,
        "client": ("127.0.0.1", 54321),
        "server": ("127.0.0.1", 8000),
        "state": {},  # uvicorn passes (a copy of) the lifespan state with every request
    }


async def receive() -> Message:
    """A GET request: one empty `http.request` message."""
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Message) -> None:
    """Discard the response (it was checked once before timing)."""


# -- checking an app before it is timed --------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What an app sent for one request."""

    status: int
    headers: dict[str, str]
    body: bytes


async def request_once(app: ASGIApp, scope: Scope) -> Reply:
    """Run one request and collect the response it sends."""
    status = 0
    headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def collect(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", []):
                headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(dict(scope), receive, collect)
    return Reply(status, headers, b"".join(chunks))


Check = Callable[[Reply], str | None]


def _common_problem(reply: Reply, media_type: str) -> str | None:
    if reply.status != 200:
        return f"status {reply.status}, body {reply.body[:200]!r}"
    if not reply.headers.get("content-type", "").startswith(media_type):
        return f"content-type {reply.headers.get('content-type')!r}, expected {media_type}"
    if reply.headers.get("content-length") != str(len(reply.body)):
        return f"content-length {reply.headers.get('content-length')!r} for {len(reply.body)} bytes"
    return None


def expect_text(text: str) -> Check:
    """A 200 text/plain response whose body is exactly `text`."""

    def check(reply: Reply) -> str | None:
        problem = _common_problem(reply, "text/plain")
        if problem is None and reply.body != text.encode():
            problem = f"body {reply.body!r}, expected {text!r}"
        return problem

    return check


def expect_json(value: Any) -> Check:
    """A 200 application/json response that decodes to `value` (types included)."""

    def check(reply: Reply) -> str | None:
        problem = _common_problem(reply, "application/json")
        if problem is None:
            try:
                got = json.loads(reply.body)
            except ValueError:
                return f"body is not JSON: {reply.body[:200]!r}"
            if got != value or type(got) is not type(value):
                problem = f"body {got!r}, expected {value!r}"
        return problem

    return check


# -- timing -------------------------------------------------------------------------


#: Each request in a task of its own, as servers run them (True), or awaited inline.
#: A task per request costs the apps more than awaiting inline does, and not the
#: same amount for each app: it is what a real server measures.
TASK_PER_REQUEST = True


async def time_batch(app: ASGIApp, scope: dict[str, Any], n: int) -> int:
    """Nanoseconds taken by `n` requests, one after the other (garbage collection on)."""
    copy = scope.copy
    if TASK_PER_REQUEST:
        create_task = asyncio.get_running_loop().create_task
        start = perf_counter_ns()
        for _ in range(n):
            await create_task(app(copy(), receive, send))
        return perf_counter_ns() - start
    start = perf_counter_ns()
    for _ in range(n):
        await app(copy(), receive, send)
    return perf_counter_ns() - start


async def calibrate(app: ASGIApp, scope: dict[str, Any], batch_ns: int) -> int:
    """How many requests take about `batch_ns`; the first call also warms the app up."""
    n = 16
    while True:
        elapsed = await time_batch(app, scope, n)
        if elapsed >= batch_ns // 8 or n >= 1 << 22:
            return max(16, round(n * batch_ns / max(elapsed, 1)))
        n *= 4


class Samples:
    """The per-request times of one bench, in µs (a mixin for its dataclass)."""

    samples_ns: list[float]

    @property
    def best_us(self) -> float:
        return min(self.samples_ns) / 1000

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples_ns) / 1000


class Timed(Protocol):
    """One app answering one request, timed over several rounds."""

    scenario: str
    app: ASGIApp
    scope: dict[str, Any]
    check: Check | None
    requests_per_batch: int
    samples_ns: list[float]  # per request, one per round

    @property
    def label(self) -> str: ...


async def verify(benches: Sequence[Timed]) -> list[str]:
    """Each app's answer to its request, checked once; the problems found."""
    problems = []
    for bench in benches:
        if bench.check is None:
            continue
        problem = bench.check(await request_once(bench.app, bench.scope))
        if problem is not None:
            problems.append(f"{bench.scenario} / {bench.label}: {problem}")
    return problems


async def run_rounds(benches: Sequence[Timed], rounds: int, batch_ms: float) -> None:
    """Time every bench `rounds` times, in batches of about `batch_ms`."""
    batch_ns = int(batch_ms * 1_000_000)
    for bench in benches:
        bench.requests_per_batch = await calibrate(bench.app, bench.scope, batch_ns)
    for round_index in range(rounds):
        # Rotate the order so that no app always runs first, or right after another.
        shift = round_index % len(benches)
        for bench in [*benches[shift:], *benches[:shift]]:
            gc.collect()
            elapsed = await time_batch(bench.app, bench.scope, bench.requests_per_batch)
            bench.samples_ns.append(elapsed / bench.requests_per_batch)


# -- memory -------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """What tracemalloc sees while an app serves a run of requests, one at a time."""

    requests: int
    peak: int  # the most bytes alive at once during the run, above its start
    retained: int  # bytes allocated during the run and still alive at its end


async def measure_memory(app: ASGIApp, scope: dict[str, Any], requests: int, warmup: int) -> Memory:
    """tracemalloc's peak while serving `requests` requests, after `warmup` untraced ones.

    The warm-up comes after a full collection, because a collection empties
    the interpreter's free lists, and refilling them (up to 80 dicts, ...)
    would otherwise be counted as the app's memory.
    """
    gc.collect()
    await time_batch(app, scope, warmup)
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        await time_batch(app, scope, requests)
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return Memory(requests, peak - start, end - start)
