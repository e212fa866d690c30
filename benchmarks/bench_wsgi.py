"""WSGI adapters in process: microasgi's WSGIApp vs a2wsgi's WSGIMiddleware, same Flask app.

    .venv/bin/python benchmarks/bench_wsgi.py [--quick] [--json FILE]

Throughput: a Flask "Hello, World!" app behind each adapter, called directly as an
ASGI app (no server, no sockets) by 1 and by 16 concurrent clients, each sending its
next request as soon as the last one is answered. Both adapters get the same number
of threads (microasgi's default for this machine); a2wsgi's own default of 10
workers is timed too. The rounds rotate the order of the apps. The median round is
reported and compared, with the best next to it: with threads, a batch now and then
runs much faster than the rest (the GIL happened to change hands at good moments),
so the best of a few rounds varies from run to run and the median does not.

Memory: tracemalloc's peak (all threads) while 100 MB go through each adapter: an
upload in 64 KiB messages to a WSGI app that reads and discards it (microasgi reads
the whole body before the app runs, past 1 MiB into a temporary file, so its upload
speed includes the disk and its peak the 1 MiB kept in memory), and a download
of a WSGI generator making a new 64 KiB chunk each time, to a client that takes
1 ms per chunk, so the app is faster than the client and only backpressure keeps
the memory flat. Each transfer is also run without tracemalloc, with a client that
does not wait, for its speed.

The targets are printed with PASS or MISS; the exit status is 0 once the apps have
passed their checks: a benchmark is not a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import anyio
from a2wsgi import WSGIMiddleware
from flask import Flask
from harness import http_scope

from microasgi.wsgi import DEFAULT_SPOOL_THRESHOLD, WSGIApp, default_max_threads

Message = MutableMapping[str, Any]
ASGIApp = Callable[..., Awaitable[None]]

HELLO = b"Hello, World!"
CHUNK = 64 * 1024
MB = 1_000_000
CONCURRENCY = (1, 16)
SLOW_CLIENT_DELAY = 0.001  # seconds per chunk

#: microasgi / a2wsgi median requests per second, same Flask app, same threads, each concurrency.
TARGET_THROUGHPUT_RATIO = 1.0
#: tracemalloc peak while 100 MB stream through: a few chunks, not the body.
TARGET_PEAK_BYTES = 1024 * 1024
#: An upload is kept in memory up to the spool threshold, then goes to a temporary file.
TARGET_UPLOAD_PEAK_BYTES = DEFAULT_SPOOL_THRESHOLD + 256 * 1024


@dataclass(frozen=True)
class Settings:
    rounds: int
    batch_s: float
    transfer_bytes: int


FULL = Settings(rounds=9, batch_s=0.4, transfer_bytes=100 * MB)
QUICK = Settings(rounds=2, batch_s=0.1, transfer_bytes=10 * MB)


# -- the WSGI apps ----------------------------------------------------------------------


def flask_hello() -> Flask:
    app = Flask("bench")

    @app.get("/")
    def index() -> str:
        return HELLO.decode()

    return app


def discard_upload(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    stream, size = environ["wsgi.input"], 0
    while data := stream.read(CHUNK):
        size += len(data)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(size).encode()]


def make_download(total: int) -> Callable[..., Iterable[bytes]]:
    def download(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(total))]
        )

        def chunks() -> Iterator[bytes]:
            for _ in range(total // CHUNK):
                yield bytes(CHUNK)  # a new chunk each time, as a real app would make
            yield bytes(total % CHUNK)

        return chunks()

    return download


# -- a null server ----------------------------------------------------------------------


def scope(method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    """What uvicorn would pass for an HTTP/1.1 request to /, with extra `headers`."""
    base = http_scope("/", method)
    return {**base, "headers": [*base["headers"], *(headers or [])]}


class Connection:
    """One request, as a server drives it: body messages, then http.disconnect once the
    response is complete (ASGI spec). Keeps the status and counts the body bytes."""

    __slots__ = ("body", "body_sent", "done", "messages", "received", "slow", "status")

    def __init__(self, messages: Iterator[Message] | None = None, slow: bool = False) -> None:
        self.messages = messages  # None: a request without a body
        self.body_sent = False
        self.slow = slow
        self.done = anyio.Event()
        self.status = 0
        self.received = 0
        self.body = bytearray()

    async def receive(self) -> Message:
        if not self.body_sent:
            message = next(self.messages, None) if self.messages is not None else None
            if message is None:
                message = {"type": "http.request", "body": b"", "more_body": False}
            if not message.get("more_body", False):
                self.body_sent = True
            return message
        await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            return
        chunk = message.get("body", b"")
        self.received += len(chunk)
        if len(self.body) < 64:
            self.body += chunk[:64]
        if self.slow:
            await anyio.sleep(SLOW_CLIENT_DELAY)
        if not message.get("more_body", False):
            self.done.set()


def upload_messages(total: int) -> Iterator[Message]:
    """The body in 64 KiB messages. The chunks are made here, before any measurement, and
    sent again and again: the memory of the server is not what is measured."""
    chunk = b"x" * CHUNK
    tail = chunk[: total % CHUNK]

    def messages() -> Iterator[Message]:
        for sent in range(0, total, CHUNK):
            body = chunk if total - sent >= CHUNK else tail
            yield {"type": "http.request", "body": body, "more_body": sent + CHUNK < total}

    return messages()


async def request(app: ASGIApp, conn: Connection, method: str = "GET", **kw: Any) -> Connection:
    await app(scope(method, **kw), conn.receive, conn.send)
    return conn


# -- throughput -------------------------------------------------------------------------


@dataclass
class Rate:
    adapter: str
    backend: str
    concurrency: int
    requests: int = 0
    samples: list[float] = field(default_factory=list)  # requests per second, one per round

    @property
    def best(self) -> float:
        return max(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


async def serve_batch(app: ASGIApp, requests: int, concurrency: int) -> float:
    """Seconds taken by `requests` requests from `concurrency` clients."""
    pending = iter(range(requests))

    async def client() -> None:
        for _ in pending:
            conn = Connection()
            await app(scope(), conn.receive, conn.send)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(client)
    return time.perf_counter() - start


async def check_hello(name: str, app: ASGIApp) -> None:
    conn = await request(app, Connection())
    if conn.status != 200 or bytes(conn.body) != HELLO:
        sys.exit(f"{name} answered {conn.status} {bytes(conn.body)!r}, not 200 {HELLO!r}")


async def measure_rates(
    adapters: dict[str, ASGIApp], backend: str, settings: Settings
) -> list[Rate]:
    rates = [Rate(name, backend, c) for c in CONCURRENCY for name in adapters]
    for name, app in adapters.items():
        await check_hello(name, app)
    for rate in rates:  # calibrate to about batch_s, warming each up
        app = adapters[rate.adapter]
        elapsed = await serve_batch(app, 200, rate.concurrency)
        rate.requests = max(200, round(200 * settings.batch_s / elapsed))
    for round_index in range(settings.rounds):
        shift = round_index % len(rates)
        for rate in [*rates[shift:], *rates[:shift]]:
            gc.collect()
            elapsed = await serve_batch(adapters[rate.adapter], rate.requests, rate.concurrency)
            rate.samples.append(rate.requests / elapsed)
    return rates


# -- memory -----------------------------------------------------------------------------


@dataclass
class Transfer:
    adapter: str
    kind: str  # "upload", "download"
    peak_bytes: int = 0  # tracemalloc peak above the start, slow client for downloads
    seconds: float = 0.0  # untraced, fast client

    def mb_per_s(self, total: int) -> float:
        return total / MB / self.seconds


def connection_for(kind: str, total: int, *, slow: bool) -> Connection:
    return Connection(upload_messages(total)) if kind == "upload" else Connection(slow=slow)


async def transfer(app: ASGIApp, kind: str, total: int, conn: Connection) -> None:
    if kind == "upload":
        await request(app, conn, "POST", headers=[(b"content-length", str(total).encode())])
        if conn.status != 200 or int(conn.body) != total:
            sys.exit(f"upload: answered {conn.status} {bytes(conn.body)!r}, expected {total}")
    else:
        await request(app, conn)
        if conn.status != 200 or conn.received != total:
            sys.exit(f"download: answered {conn.status} with {conn.received} of {total} bytes")


async def measure_transfers(
    adapters: dict[str, tuple[ASGIApp, ASGIApp]], total: int
) -> list[Transfer]:
    results = []
    for name, (upload_app, download_app) in adapters.items():
        for kind, app in (("upload", upload_app), ("download", download_app)):
            result = Transfer(name, kind)
            conn = connection_for(kind, total, slow=False)
            gc.collect()
            start = time.perf_counter()
            await transfer(app, kind, total, conn)
            result.seconds = time.perf_counter() - start
            conn = connection_for(kind, total, slow=kind == "download")
            gc.collect()
            tracemalloc.start()
            try:
                base, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                await transfer(app, kind, total, conn)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            result.peak_bytes = peak - base
            results.append(result)
    return results


# -- the run ----------------------------------------------------------------------------

MICRO = "microasgi WSGIApp"
A2WSGI = "a2wsgi WSGIMiddleware"
A2WSGI_DEFAULT = "a2wsgi, 10 workers (default)"


async def asyncio_part(settings: Settings, threads: int) -> tuple[list[Rate], list[Transfer]]:
    flask_app = flask_hello()
    adapters: dict[str, ASGIApp] = {
        MICRO: WSGIApp(flask_app, max_threads=threads),
        A2WSGI: WSGIMiddleware(flask_app, workers=threads),
        A2WSGI_DEFAULT: WSGIMiddleware(flask_app),
    }
    rates = await measure_rates(adapters, "asyncio", settings)
    download = make_download(settings.transfer_bytes)
    transfers = await measure_transfers(
        {
            MICRO: (WSGIApp(discard_upload, max_body_size=None), WSGIApp(download)),
            A2WSGI: (WSGIMiddleware(discard_upload), WSGIMiddleware(download)),
        },
        settings.transfer_bytes,
    )
    return rates, transfers


async def trio_part(settings: Settings, threads: int) -> list[Rate]:
    return await measure_rates(
        {MICRO: WSGIApp(flask_hello(), max_threads=threads)}, "trio", settings
    )


def report(
    rates: list[Rate], transfers: list[Transfer], settings: Settings, threads: int
) -> list[str]:
    lines = [
        f"Flask 'Hello, World!', in process; {threads} threads unless said "
        f"(microasgi's default here: min(32, CPUs + 4)); {settings.rounds} rounds",
        "",
        f"{'adapter':30s} {'loop':8s} {'clients':>7s} {'median req/s':>13s} {'best':>7s} "
        f"{'vs a2wsgi':>9s}",
        "-" * 79,
    ]
    baseline = {r.concurrency: r.median for r in rates if r.adapter == A2WSGI}
    for concurrency in CONCURRENCY:
        for rate in [r for r in rates if r.concurrency == concurrency]:
            ratio = rate.median / baseline[concurrency]
            lines.append(
                f"{rate.adapter:30s} {rate.backend:8s} {concurrency:7d} {rate.median:13,.0f} "
                f"{rate.best:7,.0f} {ratio:9.2f}"
            )
        lines.append("")
    total_mb = settings.transfer_bytes / MB
    lines += [
        f"{total_mb:.0f} MB in 64 KiB chunks; peak = tracemalloc peak, all threads "
        f"(download: client taking {SLOW_CLIENT_DELAY * 1000:.0f} ms per chunk); "
        "speed = untraced, client not waiting",
        "",
        f"{'adapter':30s} {'transfer':10s} {'peak memory':>12s} {'speed':>11s}",
        "-" * 66,
    ]
    for t in transfers:
        lines.append(
            f"{t.adapter:30s} {t.kind:10s} {t.peak_bytes / 1024:9,.0f} KiB "
            f"{t.mb_per_s(settings.transfer_bytes):7,.0f} MB/s"
        )
    lines += ["", "targets"]
    for concurrency in CONCURRENCY:
        ours = next(r for r in rates if r.adapter == MICRO and r.backend == "asyncio"
                    and r.concurrency == concurrency)  # fmt: skip
        ratio = ours.median / baseline[concurrency]
        verdict = "PASS" if ratio >= TARGET_THROUGHPUT_RATIO else "MISS"
        lines.append(
            f"  microasgi / a2wsgi req/s, {concurrency:2d} client(s)   {ratio:5.2f} >= "
            f"{TARGET_THROUGHPUT_RATIO}   {verdict}"
        )
    for t in transfers:
        if t.adapter == MICRO:
            target = TARGET_UPLOAD_PEAK_BYTES if t.kind == "upload" else TARGET_PEAK_BYTES
            verdict = "PASS" if t.peak_bytes <= target else "MISS"
            lines.append(
                f"  microasgi {t.kind} peak memory           {t.peak_bytes / 1024:5,.0f} KiB <= "
                f"{target // 1024} KiB   {verdict}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (10 MB, 2 rounds)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    threads = default_max_threads()
    started = time.perf_counter()
    rates, transfers = anyio.run(asyncio_part, settings, threads, backend="asyncio")
    rates += anyio.run(trio_part, settings, threads, backend="trio")
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("flask", "a2wsgi", "anyio", "trio")
    )
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {versions}")
    print("\n".join(report(rates, transfers, settings, threads)))
    print(f"\n(took {time.perf_counter() - started:.0f} s)")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(
                {"rates": [asdict(r) for r in rates], "transfers": [asdict(t) for t in transfers]},
                file,
                indent=2,
            )


if __name__ == "__main__":
    main()
