"""Files through a real uvicorn: microasgi against Starlette, in the same run.

    .venv/bin/python benchmarks/bench_files.py [--quick] [--json FILE]

Each framework's app (benchmarks/file_apps.py) is served by uvicorn in a process of
its own, pinned to one core while this process, the client, is pinned to the other.
The client speaks HTTP/1.1 over plain sockets on keep-alive connections, so that
as little as possible of the time is its own.

Scenarios:
- a 50 MiB file, ``FileResponse``, downloaded one after the other on one connection
  (the body is received into a reused buffer and thrown away): MB/s;
- a 1 KiB file from ``StaticFiles``, by 8 connections at once, each sending its next
  request when the last one is answered: requests per second;
- a multipart upload of one 50 MiB file, parsed by ``await request.form()``: MB/s,
  and how much the server process's peak resident memory grew during the upload
  (``VmHWM`` after resetting it through /proc/PID/clear_refs, minus ``VmRSS`` before);
- a multipart upload of 1,000 small fields: requests per second.

Every app first answers each request correctly (the downloads are hashed, the
upload's answer is checked) or nothing is timed. Then for several rounds each
(scenario, app) pair runs one batch, the order of the apps alternating from round to
round. Reported: the best and the median round, the ratio microasgi / Starlette of
each, and the server's CPU time per request (median round, from
/proc/PID/task/*/schedstat). The targets are printed with PASS or MISS; the exit
status is 0 once the apps have passed their checks: a benchmark is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from bench_http import machine
from bench_ws import cpus, free_port, pin, stop

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
MB = 1_000_000
BIG_SIZE = 50 * MiB
SMALL_SIZE = 1024
CONNECTIONS = 8
FIELDS = 1000
BOUNDARY = b"----microasgibench7MA4YWxkTrZu0gW"
APPS = {"microasgi": "microasgi", "Starlette": "starlette"}

#: microasgi / Starlette, best rounds, per scenario.
TARGETS = {"download": 1.0, "static": 1.0, "upload": 1.5, "fields": 1.5}
#: growth of the server's peak RSS while it parses a 50 MiB upload
TARGET_UPLOAD_RSS = 10 * MiB


@dataclass(frozen=True)
class Settings:
    rounds: int
    downloads: int  # 50 MiB downloads per round
    static_requests: int  # 1 KiB requests per round, over all connections
    uploads: int  # 50 MiB uploads per round
    field_uploads: int  # 1,000-field uploads per round


FULL = Settings(rounds=5, downloads=4, static_requests=6000, uploads=2, field_uploads=60)
QUICK = Settings(rounds=1, downloads=1, static_requests=800, uploads=1, field_uploads=10)


# -- the servers -------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]

    def cpu_ns(self) -> int:
        total = 0
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[0])
        return total

    def status(self, key: str) -> int:
        """A memory figure of /proc/PID/status, in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def reset_peak_rss(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")


@contextlib.contextmanager
def servers(directory: Path, server_cpu: int | None) -> Iterator[list[Server]]:
    started: list[Server] = []
    with contextlib.ExitStack() as logs:
        try:
            for name, key in APPS.items():
                port = free_port()
                log = logs.enter_context(tempfile.TemporaryFile())
                command = [
                    sys.executable,
                    str(HERE / "file_apps.py"),
                    key,
                    str(port),
                    str(directory),
                ]
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=log)
                pin(process.pid, server_cpu)
                started.append(Server(name, process, port, log))
            for server in started:
                wait_until_up(server)
            yield started
        finally:
            for server in started:
                stop(server.process)


def wait_until_up(server: Server, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            server.log.seek(0)
            raise SystemExit(f"{server.name} exited:\n{server.log.read().decode()[-2000:]}")
        with contextlib.suppress(OSError), Connection(server.port) as conn:
            if conn.request(get(b"/static/small.txt"))[0] == 200:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"{server.name} did not start")
        time.sleep(0.05)


# -- a small HTTP/1.1 client ---------------------------------------------------------------


def get(path: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n"


def post(path: bytes, content_type: bytes, length: int) -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: bench\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n"
    )  # fmt: skip


class Connection:
    """One keep-alive connection; responses must have a Content-Length."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""
        self.scratch = memoryview(bytearray(1024 * 1024))

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(
        self, head: bytes, body: bytes | memoryview = b"", keep: bool = True
    ) -> tuple[int, int, bytes]:
        """(status, body length, body); with keep=False the body is read and dropped."""
        self.sock.sendall(head)
        if body:
            self.sock.sendall(body)
        data = self.pending
        while (end := data.find(b"\r\n\r\n")) < 0:
            more = self.sock.recv(65536)
            if not more:
                raise ConnectionError("the server closed the connection")
            data += more
        head_text = data[:end].decode("latin-1").lower()
        status = int(head_text.split(" ", 2)[1])
        length = int(head_text.split("content-length: ", 1)[1].split("\r\n", 1)[0])
        rest = data[end + 4 :]
        if keep:
            while len(rest) < length:
                rest += self.sock.recv(max(length - len(rest), 65536))
            self.pending = rest[length:]
            return status, length, rest[:length]
        remaining = length - len(rest)
        self.pending = rest[length:] if remaining < 0 else b""
        while remaining > 0:
            got = self.sock.recv_into(self.scratch, min(remaining, len(self.scratch)))
            if not got:
                raise ConnectionError("the server closed the connection")
            remaining -= got
        return status, length, b""


async def static_batch(port: int, total: int) -> float:
    """Seconds for `total` requests of the 1 KiB file over CONNECTIONS connections."""
    request = get(b"/static/small.txt")
    left = total

    async def worker() -> None:
        nonlocal left
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while left > 0:
                left -= 1
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                body = await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200") or len(body) != SMALL_SIZE:
                    raise SystemExit(f"bad answer: {head!r}")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return time.perf_counter() - started


# -- the request bodies --------------------------------------------------------------------


def multipart(parts: list[tuple[bytes, bytes, bytes | None]]) -> bytes:
    """A multipart/form-data body of (name, content, filename) parts."""
    chunks = []
    for name, content, filename in parts:
        disposition = b'form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        chunks.append(b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition + b"\r\n")
        if filename is not None:
            chunks.append(b"Content-Type: application/octet-stream\r\n")
        chunks += [b"\r\n", content, b"\r\n"]
    chunks.append(b"--" + BOUNDARY + b"--\r\n")
    return b"".join(chunks)


CONTENT_TYPE = b"multipart/form-data; boundary=" + BOUNDARY


# -- scenarios -----------------------------------------------------------------------------


@dataclass
class Result:
    unit: str
    values: dict[str, list[float]] = field(default_factory=dict)  # per app, per round
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)  # server CPU per request
    extra: dict[str, list[float]] = field(default_factory=dict)  # e.g. RSS growth per upload


@dataclass
class Bench:
    settings: Settings
    servers: list[Server]
    big: bytes
    upload_body: bytes
    fields_body: bytes
    results: dict[str, Result] = field(default_factory=dict)

    def check(self) -> None:
        big_hash = hashlib.sha256(self.big).hexdigest()
        for server in self.servers:
            with Connection(server.port) as conn:
                status, _, body = conn.request(get(b"/big"))
                if status != 200 or hashlib.sha256(body).hexdigest() != big_hash:
                    raise SystemExit(f"{server.name}: GET /big is wrong ({status})")
                status, _, body = conn.request(get(b"/static/small.txt"))
                if status != 200 or body != b"x" * SMALL_SIZE:
                    raise SystemExit(f"{server.name}: GET /static/small.txt is wrong ({status})")
                for payload, expected in (
                    (self.upload_body, {"fields": 0, "files": 1, "bytes": BIG_SIZE}),
                    (self.fields_body, {"fields": FIELDS, "files": 0, "bytes": 0}),
                ):
                    head = post(b"/upload", CONTENT_TYPE, len(payload))
                    status, _, body = conn.request(head, payload)
                    if status != 200 or json.loads(body) != expected:
                        raise SystemExit(f"{server.name}: upload answered {status} {body[:200]!r}")

    def timed(
        self, scenario: str, unit: str, server: Server, run: Callable[[], tuple[float, int, float]]
    ) -> None:
        """Run one batch: `run` returns (seconds, requests, amount per batch for the unit)."""
        cpu_before = server.cpu_ns()
        seconds, requests, amount = run()
        cpu = (server.cpu_ns() - cpu_before) / requests / 1e6
        result = self.results.setdefault(scenario, Result(unit))
        result.values.setdefault(server.name, []).append(amount / seconds)
        result.cpu_ms.setdefault(server.name, []).append(cpu)

    def download(self, server: Server) -> tuple[float, int, float]:
        count = self.settings.downloads
        with Connection(server.port) as conn:
            started = time.perf_counter()
            for _ in range(count):
                status, length, _ = conn.request(get(b"/big"), keep=False)
                assert status == 200 and length == BIG_SIZE
            seconds = time.perf_counter() - started
        return seconds, count, count * BIG_SIZE / MB

    def static(self, server: Server) -> tuple[float, int, float]:
        total = self.settings.static_requests
        seconds = asyncio.run(static_batch(server.port, total))
        return seconds, total, total

    def upload(self, server: Server) -> tuple[float, int, float]:
        count = self.settings.uploads
        body = memoryview(self.upload_body)
        head = post(b"/upload", CONTENT_TYPE, len(body))
        seconds = 0.0
        growth = self.results.setdefault("upload", Result("MB/s")).extra.setdefault(server.name, [])
        with Connection(server.port) as conn:
            for _ in range(count):
                server.reset_peak_rss()
                before = server.status("VmRSS")
                started = time.perf_counter()
                status, _, _ = conn.request(head, body)
                seconds += time.perf_counter() - started
                growth.append(server.status("VmHWM") - before)
                assert status == 200
        return seconds, count, count * len(body) / MB

    def fields(self, server: Server) -> tuple[float, int, float]:
        count = self.settings.field_uploads
        head = post(b"/upload", CONTENT_TYPE, len(self.fields_body))
        with Connection(server.port) as conn:
            started = time.perf_counter()
            for _ in range(count):
                status, _, _ = conn.request(head, self.fields_body)
                assert status == 200
            seconds = time.perf_counter() - started
        return seconds, count, count

    def run(self) -> None:
        scenarios: list[tuple[str, str, Callable[[Server], tuple[float, int, float]]]] = [
            ("download", "MB/s", self.download),
            ("static", "req/s", self.static),
            ("upload", "MB/s", self.upload),
            ("fields", "req/s", self.fields),
        ]
        for round_number in range(self.settings.rounds):
            order = self.servers if round_number % 2 == 0 else self.servers[::-1]
            for scenario, unit, method in scenarios:
                for server in order:
                    self.timed(scenario, unit, server, lambda s=server, m=method: m(s))


# -- the report ------------------------------------------------------------------------------

LABELS = {
    "download": "50 MiB file, FileResponse",
    "static": f"1 KiB file, StaticFiles, {CONNECTIONS} conns",
    "upload": "upload: one 50 MiB file",
    "fields": f"upload: {FIELDS:,} small fields",
}


def report(bench: Bench, info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    lines = [
        f"{info['cpu']}, {info['cpus']} CPUs, {info['python']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        "",
        f"{'scenario':<36}{'app':<11}{'best':>10}{'median':>10}  unit    {'server CPU':>12}",
        "-" * 92,
    ]
    summary: dict[str, Any] = {}
    for scenario, result in bench.results.items():
        first = True
        for name in APPS:
            values = result.values[name]
            cpu = statistics.median(result.cpu_ms[name])
            label = LABELS[scenario] if first else ""
            lines.append(
                f"{label:<36}{name:<11}{max(values):>10,.1f}{statistics.median(values):>10,.1f}"
                f"  {result.unit:<7} {cpu:>8.3f} ms/req"
            )
            first = False
        ours, theirs = result.values["microasgi"], result.values["Starlette"]
        ratio = max(ours) / max(theirs)
        median_ratio = statistics.median(ours) / statistics.median(theirs)
        lines.append(f"{'':<36}microasgi / Starlette: {ratio:.2f} (medians {median_ratio:.2f})")
        summary[scenario] = {"ratio_best": ratio, "ratio_median": median_ratio}
        if result.extra:
            growth = {name: max(values) for name, values in result.extra.items()}
            lines.append(
                f"{'':<36}peak RSS growth during the upload: "
                + ", ".join(f"{name} {value / MiB:.1f} MiB" for name, value in growth.items())
            )
            summary[scenario]["rss_growth"] = growth
        lines.append("")
    lines.append("targets")
    for scenario, target in TARGETS.items():
        ratio = summary[scenario]["ratio_best"]
        verdict = "PASS" if ratio >= target else "MISS"
        lines.append(
            f"  {LABELS[scenario]:<40} microasgi / Starlette {ratio:5.2f} >= {target}  {verdict}"
        )
    growth = summary["upload"]["rss_growth"]["microasgi"]
    verdict = "PASS" if growth < TARGET_UPLOAD_RSS else "MISS"
    lines.append(
        f"  {'peak RSS growth, 50 MiB upload':<40} microasgi {growth / MiB:6.1f} MiB < "
        f"{TARGET_UPLOAD_RSS / MiB:.0f} MiB  {verdict}"
    )
    return "\n".join(lines), summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke run)")
    parser.add_argument("--json", metavar="FILE", help="also write every round to FILE")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    pinned = cpus()
    if pinned is not None:
        pin(os.getpid(), pinned[0])
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        big = os.urandom(BIG_SIZE)
        (directory / "big.bin").write_bytes(big)
        (directory / "static").mkdir()
        (directory / "static" / "small.txt").write_bytes(b"x" * SMALL_SIZE)
        upload_body = multipart([(b"file", big, b"big.bin")])
        fields_body = multipart(
            [(f"field{i}".encode(), f"value number {i}".encode(), None) for i in range(FIELDS)]
        )
        with servers(directory, pinned[1] if pinned else None) as running:
            bench = Bench(settings, running, big, upload_body, fields_body)
            bench.check()
            bench.run()
    info = machine()
    text, summary = report(bench, info)
    print(text)
    if args.json:
        data = {
            "machine": info,
            "settings": asdict(settings),
            "results": {k: asdict(v) for k, v in bench.results.items()},
            "summary": summary,
        }
        Path(args.json).write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
