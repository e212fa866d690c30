"""WebSocket benchmarks: echo round trips through uvicorn, and Broadcast fan-out.

    .venv/bin/python benchmarks/bench_ws.py [--quick] [--json FILE] [--ws IMPL]

Echo: a raw ASGI echo app, microasgi and Starlette are each served by uvicorn in a
process of their own (started from benchmarks/ws_apps.py, same uvicorn settings),
pinned to one core while this process, the client, is pinned to the other. The
client is the `websockets` library. It sends a 64-byte message and waits for the
echo, over and over, on one connection (text, then bytes), and on 10 connections
at once (text). Every app first echoes one text and one binary message correctly,
or nothing is timed. Each scenario gets a batch size of about `batch_ms` on raw
ASGI, used for all three apps; then for several rounds each (scenario, app) pair
times one batch, in an order that rotates from round to round. Reported: round
trips per second (best and median round), the ratios to raw ASGI (best over best,
median over median), and the server's and the client's CPU time per round trip
(median round; the server's is read from /proc/PID/task/*/schedstat, so it is
uvicorn and the app without the client, and other load on the machine does not
inflate it). Whatever a server writes to stderr is summed up under the table.

Fan-out, in this process: 1,000 subscribers (one task each, iterating its
Subscriber) on one channel of Broadcast("memory://") and of Broadcast("redis://")
(a redis-server started here on a free port, without persistence). Timed: from
publish() until all 1,000 have received the message, several rounds; and 100
messages published one after the other until all 100,000 deliveries are made.

The target (microasgi at least 0.9 times raw ASGI's round trips per second, best
rounds, in every echo scenario) is printed with PASS or MISS; the exit status is 0
once the apps have passed their checks: a benchmark is not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import anyio
from bench_http import machine
from processes import free_port
from websockets.asyncio.client import ClientConnection, connect
from ws_apps import BYTES_PATH, TEXT_PATH

from microasgi.broadcast import Broadcast, Event

HERE = Path(__file__).resolve().parent

RAW = "raw ASGI"
MICROASGI = "microasgi"
STARLETTE = "Starlette"
#: the name ws_apps.py knows each app by
APP_KEYS = {RAW: "raw", MICROASGI: "microasgi", STARLETTE: "starlette"}

TEXT = "0123456789abcdef" * 4  # 64 characters, 64 bytes in UTF-8
BINARY = bytes(range(64))
CONCURRENT = 10
SUBSCRIBERS = 1000
CHANNEL = "bench"
#: the client: no compression (64 bytes gain nothing), no keepalive pings mid-batch
CLIENT_OPTIONS: dict[str, Any] = {"compression": None, "ping_interval": None}

#: microasgi / raw ASGI, best round trips per second, in every echo scenario.
TARGET_ECHO_RATIO = 0.9


@dataclass(frozen=True)
class Settings:
    rounds: int
    batch_ms: float
    warmup: int  # round trips per connection before anything is timed
    fanout_rounds: int
    burst_messages: int
    burst_rounds: int


FULL = Settings(
    rounds=20, batch_ms=250, warmup=1000, fanout_rounds=30, burst_messages=100, burst_rounds=5
)
QUICK = Settings(
    rounds=2, batch_ms=40, warmup=100, fanout_rounds=5, burst_messages=100, burst_rounds=1
)


# -- processes: the echo servers and redis-server --------------------------------------


def cpus() -> tuple[int, int] | None:
    """(client core, server core), or None when there are not two cores to pin to."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else None


def pin(pid: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(pid, {cpu})


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Server:
    """One app served by uvicorn in its own process."""

    framework: str
    process: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]  # the server's stderr, read when it has stopped
    stderr: str = ""  # what it wrote there, summed up

    def read_log(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def summarize_log(self) -> str:
        """What the server wrote to stderr, summed up; "" if nothing."""
        text = self.read_log()
        if not text.strip():
            return ""
        lines = text.strip().splitlines()
        tracebacks = text.count("Traceback (most recent call last)")
        # The line after a traceback that says what was raised: the first one found.
        raised = [line for line in lines if line[:1] not in (" ", "\t") and "Error" in line]
        first = raised[0] if raised else lines[0]
        return f"{len(lines)} lines, {tracebacks} tracebacks; first error: {first}"

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def cpu_ns(self) -> int:
        """CPU time the server process has used so far, all threads (schedstat, ns)."""
        total = 0
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[0])
        return total


@contextlib.contextmanager
def echo_servers(ws: str, server_cpu: int | None) -> Iterator[list[Server]]:
    """Start the three apps' servers; they are always stopped on the way out."""
    servers: list[Server] = []
    with contextlib.ExitStack() as logs:
        try:
            for framework, key in APP_KEYS.items():
                port = free_port()
                command = [sys.executable, str(HERE / "ws_apps.py"), key, str(port), "--ws", ws]
                log = logs.enter_context(tempfile.TemporaryFile())
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=log)
                servers.append(Server(framework, process, port, log))
                pin(process.pid, server_cpu)
            yield servers
        finally:
            for server in servers:
                stop(server.process)
                server.stderr = server.summarize_log()


async def wait_until_up(server: Server, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = server.process.poll()
        if code is not None:
            tail = "\n  ".join(server.read_log().strip().splitlines()[-5:])
            raise SystemExit(f"the {server.framework} server exited with status {code}:\n  {tail}")
        try:
            async with connect(server.url(TEXT_PATH), **CLIENT_OPTIONS):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"the {server.framework} server did not start") from None
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def redis_server(server_cpu: int | None) -> Iterator[str | None]:
    """A throwaway redis-server on a free port (its URL), or None if there is none."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(exe):
        yield None
        return
    port = free_port()
    command = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        pin(process.pid, server_cpu)
        deadline = time.monotonic() + 10
        while True:
            address = ("127.0.0.1", port)
            with contextlib.suppress(OSError), socket.create_connection(address, 1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


# -- echo ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    message: str | bytes
    connections: int


SCENARIOS = (
    Scenario("text, 1 connection", TEXT_PATH, TEXT, 1),
    Scenario(f"text, {CONCURRENT} connections", TEXT_PATH, TEXT, CONCURRENT),
    Scenario("bytes, 1 connection", BYTES_PATH, BINARY, 1),
)


@dataclass
class EchoBench:
    """One app echoing one scenario's messages, timed over several rounds."""

    scenario: Scenario
    server: Server
    connections: list[ClientConnection] = field(default_factory=list)
    round_trips: int = 0  # per batch, all connections together
    rates: list[float] = field(default_factory=list)  # round trips per second, per round
    server_us: list[float] = field(default_factory=list)  # server CPU per round trip
    client_us: list[float] = field(default_factory=list)  # client CPU per round trip

    @property
    def framework(self) -> str:
        return self.server.framework

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


async def echo(connection: ClientConnection, message: str | bytes, count: int) -> int:
    """`count` round trips; how many replies differed from the message."""
    wrong = 0
    for _ in range(count):
        await connection.send(message)
        if await connection.recv() != message:
            wrong += 1
    return wrong


async def time_batch(bench: EchoBench, round_trips: int) -> tuple[float, float, float]:
    """(round trips per second, server and client CPU µs per round trip)."""
    connections = bench.connections
    each = round_trips // len(connections)
    message = bench.scenario.message
    server_start = bench.server.cpu_ns()
    client_start = time.process_time_ns()
    start = time.perf_counter_ns()
    if len(connections) == 1:
        wrong = await echo(connections[0], message, each)
    else:
        wrong = sum(await asyncio.gather(*(echo(c, message, each) for c in connections)))
    elapsed = time.perf_counter_ns() - start
    client = time.process_time_ns() - client_start
    server = bench.server.cpu_ns() - server_start
    if wrong:
        raise SystemExit(f"{bench.framework} sent {wrong} wrong replies ({bench.scenario.name})")
    done = each * len(connections)
    return done * 1e9 / elapsed, server / done / 1000, client / done / 1000


async def verify(servers: Sequence[Server]) -> list[str]:
    """Each app echoes one text and one binary message; the problems found."""
    problems = []
    for server in servers:
        for path, message in ((TEXT_PATH, TEXT), (BYTES_PATH, BINARY)):
            try:
                with anyio.fail_after(5):
                    async with connect(server.url(path), **CLIENT_OPTIONS) as connection:
                        await connection.send(message)
                        reply = await connection.recv()
            except Exception as exc:
                problems.append(f"{server.framework} {path}: {type(exc).__name__}: {exc}")
                continue
            if reply != message:
                problems.append(f"{server.framework} {path}: echoed {reply!r}")
    return problems


async def calibrate(bench: EchoBench, batch_ms: float) -> int:
    """Round trips (a multiple of the connections) that take about `batch_ms` here."""
    step = len(bench.connections)
    count = 100 * step
    for _ in range(3):
        rate, _, _ = await time_batch(bench, count)
        count = max(step, round(rate * batch_ms / 1000 / step) * step)
    return count


async def run_echo(servers: Sequence[Server], settings: Settings) -> list[EchoBench]:
    for server in servers:
        await wait_until_up(server)
    problems = await verify(servers)
    if problems:
        raise SystemExit("an app failed its check, nothing was timed:\n  " + "\n  ".join(problems))
    benches = [EchoBench(scenario, server) for scenario in SCENARIOS for server in servers]
    async with contextlib.AsyncExitStack() as stack:
        for bench in benches:
            url = bench.server.url(bench.scenario.path)
            for _ in range(bench.scenario.connections):
                connection = await stack.enter_async_context(connect(url, **CLIENT_OPTIONS))
                bench.connections.append(connection)
            await asyncio.gather(
                *(echo(c, bench.scenario.message, settings.warmup) for c in bench.connections)
            )
        # The same batch for every app in a scenario, sized on raw ASGI.
        for scenario in SCENARIOS:
            group = [bench for bench in benches if bench.scenario is scenario]
            count = await calibrate(group[0], settings.batch_ms)
            for bench in group:
                bench.round_trips = count
        for round_index in range(settings.rounds):
            shift = round_index % len(benches)
            for bench in [*benches[shift:], *benches[:shift]]:
                gc.collect()
                rate, server_us, client_us = await time_batch(bench, bench.round_trips)
                bench.rates.append(rate)
                bench.server_us.append(server_us)
                bench.client_us.append(client_us)
    # Give the servers a moment to finish with the closed connections (and log any
    # error doing so) before they are stopped.
    await asyncio.sleep(0.5)
    return benches


# -- fan-out ---------------------------------------------------------------------------


class Tally:
    """Counts deliveries across all subscribers; `done` is set at the expected count."""

    def __init__(self, subscribers: int) -> None:
        self.subscribers = subscribers
        self.joined = 0
        self.all_joined = anyio.Event()
        self.expected = 0
        self.received = 0
        self.other = 0  # gaps and reconnections: there should be none
        self.done = anyio.Event()

    def join(self) -> None:
        self.joined += 1
        if self.joined == self.subscribers:
            self.all_joined.set()

    def expect(self, deliveries: int) -> None:
        self.expected = deliveries
        self.received = 0
        self.done = anyio.Event()

    def got(self, event: Event) -> None:
        if event.kind != "message" or event.message != TEXT:
            self.other += 1
            return
        self.received += 1
        if self.received == self.expected:
            self.done.set()


async def subscriber(broadcast: Broadcast, tally: Tally) -> None:
    async with broadcast.subscribe(CHANNEL) as subscription:
        tally.join()
        async for event in subscription:
            tally.got(event)


async def deliver(broadcast: Broadcast, tally: Tally, messages: int) -> float:
    """Publish `messages` one after the other; seconds until every subscriber has all."""
    tally.expect(messages * tally.subscribers)
    start = time.perf_counter_ns()
    for _ in range(messages):
        await broadcast.publish(CHANNEL, TEXT)
    try:
        with anyio.fail_after(60):
            await tally.done.wait()
    except TimeoutError:
        raise SystemExit(
            f"{broadcast.url}: {tally.received:,} of {tally.expected:,} deliveries "
            f"after 60 s ({tally.other} gaps or other events)"
        ) from None
    return (time.perf_counter_ns() - start) / 1e9


@dataclass
class Fanout:
    backend: str
    subscribers: int
    latency_ms: list[float] = field(default_factory=list)  # one message, per round
    burst_messages: int = 0
    burst_s: list[float] = field(default_factory=list)  # `burst_messages`, per round
    other_events: int = 0

    @property
    def deliveries_per_s(self) -> tuple[float, float]:
        """(best, median) deliveries per second while publishing the burst."""
        deliveries = self.burst_messages * self.subscribers
        return deliveries / min(self.burst_s), deliveries / statistics.median(self.burst_s)


async def measure_fanout(url: str, label: str, settings: Settings) -> Fanout:
    result = Fanout(label, SUBSCRIBERS, burst_messages=settings.burst_messages)
    tally = Tally(SUBSCRIBERS)
    async with Broadcast(url) as broadcast, anyio.create_task_group() as tasks:
        for _ in range(SUBSCRIBERS):
            tasks.start_soon(subscriber, broadcast, tally)
        with anyio.fail_after(30):
            await tally.all_joined.wait()
        await deliver(broadcast, tally, 1)  # warm-up
        await deliver(broadcast, tally, 10)
        for _ in range(settings.fanout_rounds):
            gc.collect()
            result.latency_ms.append(await deliver(broadcast, tally, 1) * 1000)
        for _ in range(settings.burst_rounds):
            gc.collect()
            result.burst_s.append(await deliver(broadcast, tally, settings.burst_messages))
        result.other_events = tally.other
        tasks.cancel_scope.cancel()
    return result


async def run_fanout(redis_url: str | None, settings: Settings) -> list[Fanout]:
    results = [await measure_fanout("memory://", "memory://", settings)]
    if redis_url is not None:
        results.append(await measure_fanout(redis_url, "redis://", settings))
    return results


# -- results ---------------------------------------------------------------------------


@dataclass
class Results:
    ws: str
    pinned: tuple[int, int] | None
    echo: list[EchoBench]
    server_stderr: dict[str, str]
    fanout: list[Fanout]
    settings: Settings
    seconds: float

    def find(self, scenario: Scenario, framework: str) -> EchoBench:
        for bench in self.echo:
            if bench.scenario is scenario and bench.framework == framework:
                return bench
        raise KeyError((scenario.name, framework))

    def ratios(self, bench: EchoBench) -> tuple[float, float]:
        """(best over raw's best, median over raw's median) round trips per second."""
        raw = self.find(bench.scenario, RAW)
        return bench.best / raw.best, bench.median / raw.median

    def targets(self) -> list[Target]:
        return [
            Target(
                f"microasgi / raw ASGI echo, {scenario.name}",
                TARGET_ECHO_RATIO,
                self.ratios(self.find(scenario, MICROASGI))[0],
                self.ratios(self.find(scenario, STARLETTE))[0],
            )
            for scenario in SCENARIOS
        ]


@dataclass(frozen=True)
class Target:
    name: str
    limit: float
    microasgi: float
    starlette: float

    @property
    def passed(self) -> bool:
        return self.microasgi >= self.limit


def format_echo(results: Results) -> str:
    header = (
        f"{'scenario':<22}  {'app':<10}  {'best rt/s':>9}  {'median rt/s':>11}  "
        f"{'vs raw':>13}  {'server µs/rt':>12}  {'vs raw':>6}  {'client µs/rt':>12}"
    )
    lines = [header, "-" * len(header)]
    for index, scenario in enumerate(SCENARIOS):
        if index:
            lines.append("")
        raw = results.find(scenario, RAW)
        raw_server = statistics.median(raw.server_us)
        for row, framework in enumerate(APP_KEYS):
            bench = results.find(scenario, framework)
            server_us = statistics.median(bench.server_us)
            best, median = results.ratios(bench)
            lines.append(
                f"{scenario.name if row == 0 else '':<22}  {framework:<10}  {bench.best:>9,.0f}  "
                f"{bench.median:>11,.0f}  {best:>6.2f} {median:>6.2f}  "
                f"{server_us:>12.1f}  {server_us / raw_server:>6.2f}  "
                f"{statistics.median(bench.client_us):>12.1f}"
            )
    return "\n".join(lines)


def format_fanout(results: Results) -> str:
    header = (
        f"{'backend':<10}  {'best ms':>7}  {'median ms':>9}  "
        f"{'burst best/s':>12}  {'burst median/s':>14}  {'gaps':>4}"
    )
    lines = [header, "-" * len(header)]
    for fanout in results.fanout:
        best, median = fanout.deliveries_per_s
        lines.append(
            f"{fanout.backend:<10}  {min(fanout.latency_ms):>7.2f}  "
            f"{statistics.median(fanout.latency_ms):>9.2f}  {best:>12,.0f}  {median:>14,.0f}  "
            f"{fanout.other_events:>4}"
        )
    return "\n".join(lines)


def format_report(results: Results, redis_missing: bool) -> str:
    settings = results.settings
    lines = [
        f"echo through uvicorn (ws={results.ws!r}), 64-byte messages, {settings.rounds} rounds "
        f"of ~{settings.batch_ms:g} ms; round trips per second 'vs raw': best/best, "
        "median/median; CPU per round trip: median round",
        format_echo(results),
    ]
    for framework, summary in results.server_stderr.items():
        if summary:
            lines.append(f"the {framework} server wrote to stderr: {summary}")
    lines += [
        "",
        f"fan-out to {SUBSCRIBERS:,} subscribers: one message from publish() until all have it "
        f"({settings.fanout_rounds} rounds); burst: {settings.burst_messages} messages published "
        f"in a row, deliveries per second ({settings.burst_rounds} rounds)",
        format_fanout(results),
    ]
    if redis_missing:
        lines.append("redis://: skipped, redis-server not found")
    lines += ["", "targets"]
    for target in results.targets():
        verdict = "PASS" if target.passed else "MISS"
        lines.append(
            f"  {target.name:<52}  {target.microasgi:5.2f} >= {target.limit:<4}  "
            f"{verdict}   (Starlette {target.starlette:.2f})"
        )
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    info = machine()
    for name in ("websockets", "redis"):
        try:
            info["versions"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["versions"][name] = "not installed"
    return info


def to_json(results: Results) -> dict[str, Any]:
    return {
        "machine": machine_info(),
        "settings": vars(results.settings),
        "uvicorn_ws": results.ws,
        "pinned_client_server_cpus": results.pinned,
        "seconds": round(results.seconds, 1),
        "server_stderr": results.server_stderr,
        "echo": [
            {
                "scenario": bench.scenario.name,
                "app": bench.framework,
                "connections": bench.scenario.connections,
                "round_trips_per_batch": bench.round_trips,
                "best_per_s": round(bench.best, 1),
                "median_per_s": round(bench.median, 1),
                "ratio_to_raw_best": round(results.ratios(bench)[0], 4),
                "ratio_to_raw_median": round(results.ratios(bench)[1], 4),
                "rounds_per_s": [round(rate, 1) for rate in bench.rates],
                "server_cpu_us_per_round_trip": [round(us, 2) for us in bench.server_us],
                "client_cpu_us_per_round_trip": [round(us, 2) for us in bench.client_us],
            }
            for bench in results.echo
        ],
        "fanout": [
            {
                "backend": fanout.backend,
                "subscribers": fanout.subscribers,
                "latency_ms": [round(ms, 3) for ms in fanout.latency_ms],
                "burst_messages": fanout.burst_messages,
                "burst_s": [round(s, 4) for s in fanout.burst_s],
                "deliveries_per_s_best": round(fanout.deliveries_per_s[0]),
                "deliveries_per_s_median": round(fanout.deliveries_per_s[1]),
                "gaps_or_other_events": fanout.other_events,
            }
            for fanout in results.fanout
        ],
        "targets": [{**vars(t), "passed": t.passed} for t in results.targets()],
    }


# -- main ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (a few seconds)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument(
        "--ws",
        default="websockets",
        help="uvicorn's WebSocket implementation (default: websockets; also websockets-sansio)",
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL

    info = machine_info()
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    print(f"{info['python']} on {info['cpus']} CPUs ({info['cpu']}); {versions}")
    pinned = cpus()
    client_cpu, server_cpu = pinned if pinned else (None, None)
    if pinned:
        print(f"client pinned to CPU {client_cpu}, servers (and redis-server) to CPU {server_cpu}")
    else:
        print("fewer than 2 CPUs available: client and servers are not pinned")
    sys.stdout.flush()

    started = time.perf_counter()
    with echo_servers(args.ws, server_cpu) as servers:
        pin(0, client_cpu)
        echo_results = asyncio.run(run_echo(servers, settings))
    server_stderr = {server.framework: server.stderr for server in servers}
    with redis_server(server_cpu) as redis_url:
        fanout_results = asyncio.run(run_fanout(redis_url, settings))
    seconds = time.perf_counter() - started
    results = Results(
        args.ws, pinned, echo_results, server_stderr, fanout_results, settings, seconds
    )
    print()
    print(format_report(results, redis_missing=redis_url is None))
    print(f"\n({results.seconds:.0f} s)")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(to_json(results), file, indent=2)
            file.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
