"""The chat example under load, with faults: does it lose, repeat or reorder anything?

    .venv/bin/python benchmarks/chat_load.py            # 2,000 clients, 2 workers, 200 rooms
    .venv/bin/python benchmarks/chat_load.py --quick    # 200 clients, 20 rooms (the test suite's)
    .venv/bin/python benchmarks/chat_load.py --json results.json

It starts its own redis-server (AOF on) and `python -m microasgi run examples.chat:app
--workers N` on free ports, opens C WebSocket clients over R rooms (all at once: the join
storm), and has one client per room (up to --senders) send tagged messages at a set total
rate. Then Redis is killed and restarted, then one worker is killed (SIGKILL); clients
that lose their connection reconnect the way the page does (half a second, doubling, with
jitter; on any close code, 1012 included) with `?since=` the last position they showed.

Every receiver is checked, room by room: its messages' numbers must run unbroken from
the room's first to its last (nothing lost, nothing twice, nothing out of order), every
message must be its room's (nothing leaked), each number must be the same message for
everyone, no message a sender was told was refused may arrive, and every message its
sender saw published must. Reported: join latency in the storm, delivery latency, time
to resume after the worker kill, messages replayed to clients that were away, server
memory per connection and file descriptors, and 1,000 concurrent publishes from one
process. Targets are printed with PASS or MISS; the exit status is 1 only when the
checks fail (something lost, repeated, reordered or leaked).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from processes import free_port, wait_for_port
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from microasgi.broadcast import Broadcast, BroadcastError  # noqa: E402

FIRST_DELAY = 0.5  # the page's reconnection delays (chat.js)
MAX_DELAY = 10.0


@dataclass
class Settings:
    clients: int = 2000
    workers: int = 2
    rooms: int = 200
    senders: int = 100
    rate: float = 100.0  # messages a second, all senders together
    steady: float = 10.0  # seconds of the steady phase
    fault: float = 8.0  # seconds each fault phase lasts, the fault early in it
    deflate: bool = True
    redis_restart: bool = True
    worker_kill: bool = True
    redis_stop: str = "kill"  # how Redis is stopped: "kill" (SIGKILL) or "term" (SIGTERM)
    # The server's permessage-deflate (`python -m microasgi run --ws-deflate`): each
    # message compressed on its own ("message", the CLI's default), contexts kept per
    # connection ("context") or declined ("off").
    server_deflate: str = "message"
    server_gc_freeze: bool = True  # the CLI's default; --no-gc-freeze turns it off
    # A listening socket per worker (the CLI's --reuse-port), as on a Linux host in
    # production: the kernel spreads the storm's connections evenly over the workers.
    server_reuse_port: bool = sys.platform.startswith("linux")
    settle_timeout: float = 60.0


QUICK = {"clients": 200, "rooms": 20, "senders": 20, "rate": 40.0, "steady": 3.0, "fault": 4.0}


# -- processes --------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found += [int(p) for p in text.split()]
    return found


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Redis:
    """redis-server with AOF (appendfsync everysec), in a directory of its own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [shutil.which("redis-server") or "/usr/bin/redis-server"]
        command += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        command += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, how: str = "term") -> None:
        process, self.process = self.process, None
        if process is not None:
            process.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
            process.wait(timeout=20)


class ChatServers:
    """`python -m microasgi run examples.chat:app --workers N` (uvicorn's supervisor)."""

    def __init__(
        self,
        workers: int,
        redis_url: str,
        deflate: str = "message",
        gc_freeze: bool = True,
        reuse_port: bool = False,
    ) -> None:
        self.workers = workers
        self.deflate = deflate
        self.gc_freeze = gc_freeze
        self.reuse_port = reuse_port
        self.port = free_port()
        self.redis_url = redis_url
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())

    def start(self) -> None:
        env = {
            **os.environ,
            "MICROASGI_BROADCAST_URL": self.redis_url,
            "MICROASGI_CHAT_RATE": "50",
            "MICROASGI_CHAT_BURST": "50",
        }
        command = [sys.executable, "-m", "microasgi", "run", "examples.chat:app"]
        command += ["--ws-deflate", self.deflate]
        if not self.gc_freeze:
            command.append("--no-gc-freeze")
        if self.reuse_port and self.workers > 1:
            command.append("--reuse-port")
        command += ["--port", str(self.port), "--workers", str(self.workers)]
        command += ["--log-level", "warning"]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the chat server exited:\n{self.output()}")
            if len(self.worker_pids()) == self.workers and all(
                self._answers() for _ in range(2 * self.workers)
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the chat server did not start:\n{self.output()}")
            time.sleep(0.2)

    def _answers(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            url = f"http://127.0.0.1:{self.port}/"
            return httpx.get(url, timeout=2).status_code == 200
        return False

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        pids = []
        for pid in children(self.process.pid):
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
        return sorted(pids)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.log.close()

    def output(self, limit: int | None = 4000) -> str:
        """What the servers printed: the end of it (`limit` characters), or all."""
        self.log.seek(0)
        text = self.log.read().decode(errors="replace")
        return text if limit is None else text[-limit:]


# -- clients -----------------------------------------------------------------------------


def events_of(frame: str | bytes) -> list[dict[str, Any]]:
    event = json.loads(frame)
    return list(event["events"]) if event.get("type") == "batch" else [event]


def number(position: str) -> tuple[str, int]:
    epoch, _, seq = position.rpartition("-")
    return epoch, int(seq)


@dataclass
class Received:
    epoch: str
    seq: int
    text: str
    at: float  # monotonic seconds


class Client:
    """One chat user: connects, reconnects like the page, records everything."""

    def __init__(self, index: int, room: str, base_url: str, deflate: bool) -> None:
        self.index = index
        self.room = room
        self.nick = f"c{index}"
        self.base_url = base_url
        self.deflate = deflate
        self.ws: ClientConnection | None = None
        self.position: str | None = None
        self.received: list[Received] = []
        self.notices: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.leaked = 0
        self.joins: list[float] = []  # seconds from starting to connect to own join
        self.handshakes: list[float] = []  # seconds from starting to connect to the open
        self.resumes: list[float] = []  # seconds from losing the connection to own join
        self.away: list[tuple[float, float]] = []  # when it was disconnected
        self.connect_failures = 0
        self.joined = asyncio.Event()
        self.sent: dict[int, float] = {}  # sender: number -> when sent
        self.refused: set[str] = set()

    def url(self) -> str:
        query = f"nick={self.nick}"
        if self.position is not None:
            query += f"&since={self.position}"
        return f"{self.base_url}/ws/{self.room}?{query}"

    async def run(self, stop: asyncio.Event) -> None:
        delay = FIRST_DELAY
        lost_at: float | None = None
        while not stop.is_set():
            started = time.monotonic()
            try:
                async with connect(
                    self.url(),
                    compression="deflate" if self.deflate else None,
                    open_timeout=30,
                    close_timeout=2,
                    ping_interval=None,
                    max_size=2**22,
                    max_queue=None,
                    proxy=None,  # else each connect reads the proxy settings from os.environ
                ) as ws:
                    self.ws = ws
                    self.handshakes.append(time.monotonic() - started)
                    delay = FIRST_DELAY
                    await self._read(ws, started, lost_at, stop)
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed):
                self.connect_failures += 1
            finally:
                self.ws = None
                self.joined.clear()
            if stop.is_set():
                return
            if lost_at is None:
                lost_at = time.monotonic()
            wait = delay * (0.75 + random.random() * 0.5)
            delay = min(delay * 2, MAX_DELAY)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def _read(
        self, ws: ClientConnection, started: float, lost_at: float | None, stop: asyncio.Event
    ) -> None:
        # One watcher per connection closes it at the end, so that each frame costs a
        # plain recv(): a wait on two futures per frame took about a third of this
        # process's CPU during the join storm, on the same 2 cores as the servers.
        closing = asyncio.ensure_future(self._close_at(stop, ws))
        try:
            async for frame in ws:
                now = time.monotonic()
                for event in events_of(frame):
                    self._event(event, now, started, lost_at)
        except ConnectionClosed:
            pass
        finally:
            closing.cancel()
        # Lost (not closed by us): mark the time, unless it is the end.
        if not stop.is_set():
            self.away.append((time.monotonic(), float("inf")))

    @staticmethod
    async def _close_at(stop: asyncio.Event, ws: ClientConnection) -> None:
        await stop.wait()
        await ws.close()

    def _event(self, event: dict[str, Any], now: float, started: float, lost: float | None) -> None:
        kind = event.get("type")
        if kind == "message":
            position = event["position"]
            epoch, seq = number(position)
            self.received.append(Received(epoch, seq, event["text"], now))
            self.position = position
            if not event["text"].startswith(self.room + "|"):
                self.leaked += 1
        elif kind == "join" and event.get("nick") == self.nick and not self.joined.is_set():
            self.joined.set()
            if self.away and self.away[-1][1] == float("inf"):
                self.away[-1] = (self.away[-1][0], now)
                self.resumes.append(now - self.away[-1][0])
            else:
                self.joins.append(now - started)
        elif kind == "notice":
            self.notices.append(event)
            if isinstance(event.get("position"), str):
                self.position = event["position"]
        elif kind == "error":
            self.errors.append(event)
            if event.get("reason") in ("not_delivered", "rate_limited") and "message" in event:
                self.refused.add(event["message"])

    async def send(self, text: str) -> bool:
        ws = self.ws
        if ws is None or not self.joined.is_set():
            return False
        try:
            await ws.send(json.dumps({"text": text}))
        except ConnectionClosed:
            return False
        return True


async def sender(client: Client, rate: float, stop: asyncio.Event) -> None:
    """Send tagged messages "room|nick|n|sent" at `rate` a second while connected."""
    interval = 1 / rate
    await asyncio.sleep(random.random() * interval)
    n = 0
    next_at = time.monotonic()
    while not stop.is_set():
        n += 1
        sent = time.monotonic()
        text = f"{client.room}|{client.nick}|{n}|{sent:.6f}"
        if await client.send(text):
            client.sent[n] = sent
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


# -- the run -----------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    start: float
    end: float = float("inf")


@dataclass
class Report:
    settings: dict[str, Any]
    concurrent_publishes: dict[str, Any] = field(default_factory=dict)
    storm: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    resume: dict[str, Any] = field(default_factory=dict)
    totals: dict[str, Any] = field(default_factory=dict)
    fds: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)  # the first few, from the server log
    ok: bool = True


def tracebacks(log: str, limit: int = 3) -> list[str]:
    """The first `limit` tracebacks of a server log, each with the line before it (what
    was logged) and up to its exception line."""
    found = []
    lines = log.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("Traceback") and len(found) < limit:
            end = number + 1
            while end < len(lines) and lines[end].startswith((" ", "\t", "During", "The above")):
                end += 1
            found.append("\n".join(lines[max(0, number - 1) : end + 1]))
    return found


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 0.5) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1) if values else float("nan"),
    }


async def concurrent_publishes(url: str, count: int = 1000) -> dict[str, Any]:
    errors: list[str] = []
    async with Broadcast(url) as broadcast:

        async def one(n: int) -> None:
            try:
                await broadcast.publish("bench:concurrent", str(n))
            except BroadcastError as exc:
                errors.append(str(exc))

        started = time.monotonic()
        await asyncio.gather(*(one(n) for n in range(count)))
        elapsed = time.monotonic() - started
    return {
        "count": count,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(elapsed, 3),
    }


@contextlib.contextmanager
def services(settings: Settings) -> Iterator[tuple[Redis, ChatServers]]:
    with tempfile.TemporaryDirectory(prefix="chat-load-") as directory:
        redis = Redis(Path(directory))
        redis.start()
        servers = ChatServers(
            settings.workers,
            redis.url,
            settings.server_deflate,
            settings.server_gc_freeze,
            settings.server_reuse_port,
        )
        try:
            servers.start()
            yield redis, servers
        finally:
            servers.stop()
            redis.stop()


async def run(settings: Settings) -> Report:
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]  # "uvloop" or "asyncio"
    report = Report(settings=asdict(settings) | {"client_loop": loop})
    with services(settings) as (redis, servers):
        report.concurrent_publishes = await concurrent_publishes(redis.url)
        workers = servers.worker_pids()
        await asyncio.sleep(1.0)
        idle_rss = {pid: rss_kib(pid) for pid in workers}
        idle_fds = {pid: fd_count(pid) for pid in workers}
        base_url = f"ws://127.0.0.1:{servers.port}"
        clients = [
            Client(i, f"room{i % settings.rooms}", base_url, settings.deflate)
            for i in range(settings.clients)
        ]
        stop = asyncio.Event()
        phases: list[Phase] = []

        # The join storm: everyone at once.
        cpu_before = {pid: cpu_seconds(pid) for pid in [*workers, redis.pid]}
        client_cpu = time.process_time()
        storm_started = time.monotonic()
        tasks = [asyncio.create_task(client.run(stop)) for client in clients]
        joining = asyncio.gather(*(c.joined.wait() for c in clients))
        with contextlib.suppress(TimeoutError):  # counted below
            await asyncio.wait_for(joining, timeout=120)
        report.storm = {
            "cpu_seconds": {
                "client (this process)": round(time.process_time() - client_cpu, 2),
                **{
                    ("redis" if pid == redis.pid else f"worker {pid}"): round(
                        cpu_seconds(pid) - before, 2
                    )
                    for pid, before in cpu_before.items()
                },
            },
            "clients": settings.clients,
            "joined": sum(c.joined.is_set() for c in clients),
            "seconds_until_all_joined": round(time.monotonic() - storm_started, 2),
            "own_join": summary([j for c in clients for j in c.joins[:1]]),
            "handshake_done": summary([h for c in clients for h in c.handshakes[:1]]),
            "connect_failures": sum(c.connect_failures for c in clients),
        }

        # Memory with everyone connected and quiet.
        await asyncio.sleep(2.0)
        busy_rss = {pid: rss_kib(pid) for pid in workers}
        busy_fds = {pid: fd_count(pid) for pid in workers}
        grown = sum(busy_rss[p] - idle_rss[p] for p in workers)
        report.memory = {
            "deflate": settings.deflate,
            "idle_rss_kib": idle_rss,
            "connected_rss_kib": busy_rss,
            "rss_per_connection_kib": round(grown / max(1, settings.clients), 1),
            "fds_idle": idle_fds,
            "fds_connected": busy_fds,
        }

        # Senders: one client per room, up to --senders.
        senders = [clients[i] for i in range(min(settings.senders, settings.rooms))]
        per_sender = settings.rate / max(1, len(senders))
        sending = [asyncio.create_task(sender(c, per_sender, stop)) for c in senders]

        phases.append(Phase("steady", time.monotonic()))
        report.phases["steady"] = {}
        await asyncio.sleep(settings.steady)
        if settings.redis_restart:
            phases[-1].end = time.monotonic()
            phases.append(Phase("redis restart", time.monotonic()))
            await asyncio.sleep(0.5)
            stopped = time.monotonic()
            await asyncio.to_thread(redis.stop, settings.redis_stop)
            await asyncio.to_thread(redis.start)
            report.phases["redis restart"] = {"redis_down_s": round(time.monotonic() - stopped, 2)}
            await asyncio.sleep(settings.fault)
        killed_at = None
        if settings.worker_kill:
            phases[-1].end = time.monotonic()
            phases.append(Phase("worker kill", time.monotonic()))
            await asyncio.sleep(0.5)
            victim = servers.worker_pids()[0]
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            report.phases["worker kill"] = {"killed_pid": victim}
            await asyncio.sleep(settings.fault)
        phases[-1].end = time.monotonic()

        # Stop sending; wait until everyone is back and has caught up.
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)
        settled = await settle(clients, settings.settle_timeout)
        report.totals["settled"] = settled

        check(clients, phases, report)
        resumed = [r for c in clients for r in c.resumes]
        report.resume = {
            "clients_that_reconnected": sum(1 for c in clients if c.resumes),
            "reconnect_to_own_join": summary(resumed),
            "killed_at_known": killed_at is not None,
        }

        # Everyone leaves: file descriptors back to where they were.
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        workers_now = servers.worker_pids()
        baseline = max(idle_fds.values())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            after = {pid: fd_count(pid) for pid in workers_now}
            if all(n <= baseline for n in after.values()):
                break
            await asyncio.sleep(0.5)
        report.fds = {
            "idle_before": idle_fds,
            "after_all_left": after,
            "back_to_idle": all(n <= baseline for n in after.values()),
            "seconds_to_get_back": round(30 - max(0.0, deadline - time.monotonic()), 1),
        }
        log = servers.output(limit=None)
        report.totals["server_log_tracebacks"] = log.count("Traceback")
        report.tracebacks = tracebacks(log)
    judge(report)
    return report


async def settle(clients: list[Client], timeout: float) -> bool:
    """Wait until every client is connected and has the last message of its room."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last: dict[str, int] = {}
        for c in clients:
            if c.received:
                last[c.room] = max(last.get(c.room, 0), c.received[-1].seq)
        if all(
            c.joined.is_set() and (c.received[-1].seq if c.received else 0) >= last.get(c.room, 0)
            for c in clients
        ):
            await asyncio.sleep(1.0)  # and nothing more on its way
            return True
        await asyncio.sleep(0.25)
    return False


def phase_of(sent: float, phases: list[Phase]) -> str:
    for phase in phases:
        if phase.start <= sent < phase.end:
            return phase.name
    return phases[-1].name if phases else "?"


def check(clients: list[Client], phases: list[Phase], report: Report) -> None:
    """Nothing lost, repeated, reordered or leaked; the same message at each number."""
    counts = {
        p.name: dict.fromkeys(("published", "lost", "duplicated", "reordered"), 0) for p in phases
    }
    latencies: dict[str, list[float]] = {p.name: [] for p in phases}
    replayed = dict.fromkeys(counts, 0)
    rooms: dict[str, dict[tuple[str, int], str]] = {}
    inconsistent = 0
    for c in clients:
        canon = rooms.setdefault(c.room, {})
        for r in c.received:
            known = canon.setdefault((r.epoch, r.seq), r.text)
            inconsistent += known != r.text
    epochs = {room: {epoch for epoch, _ in canon} for room, canon in rooms.items()}
    for canon in rooms.values():
        for text in canon.values():
            counts[phase_of(float(text.split("|")[3]), phases)]["published"] += 1
    for c in clients:
        canon = rooms.get(c.room, {})
        seen: set[tuple[str, int]] = set()
        previous: tuple[str, int] | None = None
        for r in c.received:
            key = (r.epoch, r.seq)
            sent = float(r.text.split("|")[3])
            phase = phase_of(sent, phases)
            if key in seen:
                counts[phase]["duplicated"] += 1
                continue
            if previous is not None and previous[0] == r.epoch and r.seq < previous[1]:
                counts[phase]["reordered"] += 1
            seen.add(key)
            previous = key
            if any(start <= sent < end for start, end in c.away):
                replayed[phase] += 1
            else:
                latencies[phase].append(r.at - sent)
        for key, text in canon.items():
            if key not in seen:
                counts[phase_of(float(text.split("|")[3]), phases)]["lost"] += 1
    refused_but_delivered = 0
    published_texts = {text for canon in rooms.values() for text in canon.values()}
    unpublished_echoes = 0
    for c in clients:
        refused_but_delivered += len(c.refused & published_texts)
        own = {r.text for r in c.received if r.text.split("|")[1] == c.nick}
        unpublished_echoes += len(own - published_texts)
    for phase in phases:
        report.phases.setdefault(phase.name, {}).update(
            counts[phase.name],
            replayed_to_returning_clients=replayed[phase.name],
            delivery_latency=summary(latencies[phase.name]),
            seconds=round(phase.end - phase.start, 1),
        )
    report.totals.update(
        published=len(published_texts),
        refused_by_the_server=sum(len(c.refused) for c in clients),
        refused_but_delivered=refused_but_delivered,
        inconsistent_numbers=inconsistent,
        leaked=sum(c.leaked for c in clients),
        epochs_per_room=max((len(e) for e in epochs.values()), default=0),
        notices=sum(len(c.notices) for c in clients),
        notice_reasons=sorted({str(n.get("reason")) for c in clients for n in c.notices}),
        errors=sorted({str(e.get("reason")) for c in clients for e in c.errors}),
        unpublished_echoes=unpublished_echoes,
        sent=sum(len(c.sent) for c in clients),
    )


def judge(report: Report) -> None:
    """The correctness checks (exit status) and the targets (PASS or MISS)."""
    t = report.totals
    bad = [
        f"{name}: {key} {value}"
        for name, phase in report.phases.items()
        for key in ("lost", "duplicated", "reordered")
        if (value := phase.get(key, 0))
    ]
    for key in ("leaked", "inconsistent_numbers", "refused_but_delivered", "unpublished_echoes"):
        if t.get(key):
            bad.append(f"{key} {t[key]}")
    if not t.get("settled"):
        bad.append("not every client caught up")
    if report.storm.get("joined") != report.storm.get("clients"):
        bad.append("not every client joined in the storm")
    report.totals["failures"] = bad
    report.ok = not bad

    def target(name: str, value: float, limit: float, unit: str, below: bool = True) -> None:
        met = value < limit if below else value >= limit
        report.targets.append(
            {"target": name, "value": value, "limit": limit, "unit": unit, "met": met}
        )

    target("own join p99 in the storm", report.storm["own_join"]["p99_ms"], 1000, "ms")
    if report.resume["reconnect_to_own_join"]["count"]:
        p99 = report.resume["reconnect_to_own_join"]["p99_ms"]
        target("reconnect after a worker kill, p99", p99, 5000, "ms")
    target("errors in 1,000 concurrent publishes", report.concurrent_publishes["errors"], 1, "")
    target("RSS per idle connection", report.memory["rss_per_connection_kib"], 40, "KiB")
    target("fds back to idle after all left", float(report.fds["back_to_idle"]), 1, "", False)


def show(report: Report) -> None:
    s = report.settings
    print(
        f"chat load: {s['clients']:,} clients, {s['workers']} workers, {s['rooms']} rooms, "
        f"{s['senders']} senders at {s['rate']:g} msg/s in all, "
        f"clients offer permessage-deflate: {'yes' if s['deflate'] else 'no'}, "
        f"server: {s['server_deflate']}"
        f"{'' if s['server_gc_freeze'] else ', --no-gc-freeze'}"
        f"{', --reuse-port' if s.get('server_reuse_port') else ''}, clients on {s['client_loop']}"
    )
    cp = report.concurrent_publishes
    print(f"1,000 concurrent publishes: {cp['errors']} errors, {cp['seconds']} s")
    st = report.storm
    j = st["own_join"]
    print(
        f"join storm: {st['joined']:,}/{st['clients']:,} joined in "
        f"{st['seconds_until_all_joined']} s; own join p50 {j['p50_ms']} ms, "
        f"p99 {j['p99_ms']} ms, max {j['max_ms']} ms; {st['connect_failures']} failed attempts"
    )
    h = st["handshake_done"]
    print(f"  of which the handshake: p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms")
    print("CPU seconds during the storm:", st["cpu_seconds"])
    m = report.memory
    print(f"server RSS per connection: {m['rss_per_connection_kib']} KiB")
    print(f"{'phase':<16}{'published':>10}{'lost':>6}{'dup':>5}{'reord':>6}{'replayed':>9}"
          f"{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}")  # fmt: skip
    for name, p in report.phases.items():
        lat = p["delivery_latency"]
        print(
            f"{name:<16}{p['published']:>10}{p['lost']:>6}{p['duplicated']:>5}"
            f"{p['reordered']:>6}{p['replayed_to_returning_clients']:>9}"
            f"{lat['p50_ms']:>8}{lat['p99_ms']:>8}{lat['max_ms']:>8}"
        )
    r = report.resume["reconnect_to_own_join"]
    print(
        f"reconnected: {report.resume['clients_that_reconnected']:,} clients; "
        f"back (own join) p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms"
    )
    t = report.totals
    print(
        f"leaked {t['leaked']}, numbers given to two messages {t['inconsistent_numbers']}, "
        f"refused but delivered {t['refused_but_delivered']}, "
        f"refused {t['refused_by_the_server']}, "
        f"notices {t['notices']} {t['notice_reasons']}, errors {t['errors']}, "
        f"tracebacks in the server log {t['server_log_tracebacks']}"
    )
    f = report.fds
    print(
        f"file descriptors: idle {f['idle_before']}, after all left {f['after_all_left']} "
        f"(back to idle: {f['back_to_idle']}, after {f['seconds_to_get_back']} s)"
    )
    print("targets")
    for tg in report.targets:
        mark = "PASS" if tg["met"] else "MISS"
        print(f"  {tg['target']:<42}{tg['value']:>10} {tg['unit']:<4} limit {tg['limit']}  {mark}")
    print("checks:", "OK" if report.ok else "FAILED: " + "; ".join(t["failures"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 clients, 20 rooms, short phases")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--rooms", type=int)
    parser.add_argument("--senders", type=int)
    parser.add_argument("--rate", type=float, help="messages a second, all senders together")
    parser.add_argument("--steady", type=float, help="seconds of the steady phase")
    parser.add_argument("--fault", type=float, help="seconds of each fault phase")
    parser.add_argument("--no-deflate", action="store_true", help="clients offer no compression")
    parser.add_argument("--no-redis-restart", action="store_true")
    parser.add_argument("--no-worker-kill", action="store_true")
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="serve with `python -m microasgi run --no-gc-freeze` (to measure what it saves)",
    )
    parser.add_argument(
        "--no-reuse-port",
        action="store_true",
        help="workers share uvicorn's one listening socket (by default, on Linux, each has "
        "its own: `python -m microasgi run --reuse-port`)",
    )
    parser.add_argument("--redis-stop", choices=["kill", "term"])
    parser.add_argument(
        "--server-deflate",
        choices=["message", "context", "off"],
        help="the server's permessage-deflate (the CLI's --ws-deflate): each message on "
        "its own (the default), contexts kept per connection, or declined",
    )
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    args = parser.parse_args(argv)
    settings = Settings(**(QUICK if args.quick else {}))
    names = ("clients", "workers", "rooms", "senders", "rate", "steady", "fault", "redis_stop")
    for name in (*names, "server_deflate"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    settings.deflate = not args.no_deflate
    settings.redis_restart = not args.no_redis_restart
    settings.worker_kill = not args.no_worker_kill
    settings.server_gc_freeze = not args.no_gc_freeze
    settings.server_reuse_port = settings.server_reuse_port and not args.no_reuse_port
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 2
    # The clients are the measuring instrument: thousands of connections' worth of long-lived
    # objects made the default collector spend half of this process's CPU in the storm on
    # full collections, and the servers share the two cores with it.
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    # For the same reason, uvloop when it is there (it comes with uvicorn's extras): the
    # clients then take about a fifth less CPU from the servers during the storm.
    try:
        import uvloop
    except ImportError:
        report = asyncio.run(run(settings))
    else:
        report = uvloop.run(run(settings))
    show(report)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2, default=str))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
