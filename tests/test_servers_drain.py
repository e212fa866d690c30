"""The graceful drain of `python -m microasgi run` (microasgi/_drain.py): SIGTERM to a
real server process, under uvicorn, hypercorn and granian, with one worker and with
two. Open WebSockets are closed with 1012 within the grace, event streams end
cleanly, a request in progress finishes, new connections are refused, and the
process exits; past the grace, what is left is cut off. The middleware on its own
is also driven in process, on asyncio and on trio."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from microasgi import App, EventSourceResponse, WebSocket, WebSocketDisconnect
from microasgi._drain import Drain, DrainClosed, DrainMiddleware
from microasgi.types import Message
from tests.services import ROOT, free_port

SERVER_NAMES = ["uvicorn", "hypercorn", "granian"]


class CLIServer:
    """`python -m microasgi run tests.server_app:asgi --server NAME ...` in a process."""

    def __init__(self, server: str, *args: str) -> None:
        self.port = free_port()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        command = [sys.executable, "-m", "microasgi", "run", "tests.server_app:asgi"]
        command += ["--server", server, "--port", str(self.port), "--log-level", "warning"]
        self.process = subprocess.Popen(
            [*command, *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "MICROASGI_BROADCAST_URL": "memory://"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, f"exited early:\n{self.output()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/json", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"never answered:\n{self.output()}"
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-5000:]

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {timeout} s after SIGTERM:\n{self.output()}")

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.log.close()


@contextlib.contextmanager
def cli_server(server: str, *args: str) -> Iterator[CLIServer]:
    running = CLIServer(server, *args)
    try:
        yield running
    finally:
        running.close()


async def open_websockets(server: CLIServer, workers: int) -> list[ClientConnection]:
    """One WebSocket to /ws-pid held open on each worker.

    The server answers once one worker is up; the others may still be starting
    (a loaded CI machine took seconds), so connections that reach a worker
    already held are closed, and the next is tried a moment later, for 30 s.
    """
    held: dict[str, ClientConnection] = {}
    deadline = time.monotonic() + 30
    while len(held) < workers:
        assert time.monotonic() < deadline, f"only workers {sorted(held)} answered in 30 s"
        ws = await connect(f"ws://127.0.0.1:{server.port}/ws-pid", open_timeout=5)
        pid = str(await asyncio.wait_for(ws.recv(), 5))
        if pid in held:
            await ws.close()
            await asyncio.sleep(0.05)
        else:
            held[pid] = ws
    return list(held.values())


async def close_code(ws: ClientConnection) -> int | None:
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as exc:
        return None if exc.rcvd is None else exc.rcvd.code


async def read_event_stream(client: httpx.AsyncClient, url: str, started: asyncio.Event) -> str:
    """Read an event stream to its end; "clean" if it ended as a complete response."""
    try:
        async with client.stream("GET", url) as response:
            async for chunk in response.aiter_raw():
                if b"data:" in chunk:
                    started.set()
        return "clean"
    except httpx.HTTPError as exc:
        return f"broken: {exc!r}"


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on `port` (IPv4), from /proc/net/tcp."""
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if local.endswith(f":{port:04X}") and state == "0A":
                count += 1
    return count


async def worker_pid(server: CLIServer) -> str:
    """The pid of the worker that accepts a new connection."""
    async with connect(f"ws://127.0.0.1:{server.port}/ws-pid", open_timeout=5) as ws:
        return str(await asyncio.wait_for(ws.recv(), 5))


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads on Linux")
def test_reuse_port_gives_each_worker_its_socket() -> None:
    """`--reuse-port`: a listening socket per worker, new connections spread over both,
    and a killed worker's replacement binds its own."""
    with cli_server("uvicorn", "--workers", "2", "--reuse-port") as server:
        deadline = time.monotonic() + 20
        while listening_sockets(server.port) != 2:
            assert time.monotonic() < deadline, listening_sockets(server.port)
            time.sleep(0.1)

        async def spread() -> collections.Counter[str]:
            return collections.Counter([await worker_pid(server) for _ in range(60)])

        counts = asyncio.run(spread())
        assert len(counts) == 2, counts
        assert min(counts.values()) >= 15, counts  # the kernel's hash: 30 each, give or take
        killed = min(counts)
        os.kill(int(killed), signal.SIGKILL)

        async def replacement() -> str:
            while True:
                try:
                    pid = await worker_pid(server)
                except (OSError, EOFError, TimeoutError, WebSocketException):
                    # Hashed to the dying worker's socket before it closed: reset, as
                    # running.md says; a client connects again.
                    pid = ""
                if pid and pid not in counts:
                    return pid
                await asyncio.sleep(0.1)

        new = asyncio.run(asyncio.wait_for(replacement(), 30))
        assert new not in counts
        assert listening_sockets(server.port) == 2
        assert "Traceback" not in server.output()


DRAIN_CASES = [
    pytest.param(name, workers, [], id=f"{name}-{label}")
    for name in SERVER_NAMES
    for workers, label in ((1, "one-worker"), (2, "two-workers"))
] + [pytest.param("uvicorn", 2, ["--reuse-port"], id="uvicorn-two-workers-reuse-port")]


@pytest.mark.integration
@pytest.mark.parametrize(("server_name", "workers", "extra"), DRAIN_CASES)
def test_sigterm_drains(server_name: str, workers: int, extra: list[str]) -> None:
    grace = 8.0
    args = ["--grace", str(grace)] + (["--workers", str(workers)] if workers > 1 else [])
    with cli_server(server_name, *args, *extra) as server:

        async def scenario() -> dict[str, Any]:
            sockets = await open_websockets(server, workers)
            async with httpx.AsyncClient(timeout=30) as client:
                started = asyncio.Event()
                stream = asyncio.create_task(
                    read_event_stream(client, f"{server.url}/sse/drain", started)
                )
                slow = asyncio.create_task(client.get(f"{server.url}/sleep/1.5"))
                await asyncio.wait_for(started.wait(), 5)
                await asyncio.sleep(0.2)  # the slow request is in progress
                signalled = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                codes = await asyncio.wait_for(
                    asyncio.gather(*(close_code(ws) for ws in sockets)), grace
                )
                closed_after = time.monotonic() - signalled
                stream_end = await asyncio.wait_for(stream, grace)
                refused = False
                await asyncio.sleep(0.3)
                try:
                    await httpx.AsyncClient(timeout=2).get(server.url + "/json")
                except httpx.ConnectError:
                    refused = True
                slow_response = await asyncio.wait_for(slow, grace)
            return {
                "codes": codes,
                "closed_after": closed_after,
                "stream": stream_end,
                "refused": refused,
                "slow": (slow_response.status_code, slow_response.text),
            }

        result = asyncio.run(scenario())
        status = server.wait(grace + 10)
        assert set(result["codes"]) == {1012}, result
        assert result["closed_after"] < grace / 2, result  # at once, not when the grace ends
        assert result["stream"] == "clean", result
        assert result["slow"] == (200, "slept"), result
        assert result["refused"], "a new connection was accepted during the drain"
        assert status in (0, -signal.SIGTERM), server.output()  # uvicorn re-raises SIGTERM
        assert "Traceback" not in server.output()


@pytest.mark.integration
@pytest.mark.parametrize("server_name", SERVER_NAMES)
def test_the_grace_period_bounds_the_drain(server_name: str) -> None:
    """A request that outlasts the grace is cut off; the process exits soon after."""
    with cli_server(server_name, "--grace", "1") as server:
        outcome: list[Any] = []

        def slow() -> None:
            try:
                outcome.append(httpx.get(server.url + "/sleep/60", timeout=30).status_code)
            except httpx.HTTPError as exc:
                outcome.append(type(exc).__name__)

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.5)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.wait(15)
        took = time.monotonic() - signalled
        thread.join(30)
        assert took < 8, took  # the grace (1 s) and the servers' own steps, not 60 s
        assert outcome and outcome[0] != 200, outcome


# -- the middleware on its own (asyncio and trio) ---------------------------------------------


def drain_app() -> App:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.receive_text()
        except WebSocketDisconnect as exc:
            await websocket.send_text("too late")  # raises DrainClosed: the socket is closed
            raise AssertionError(f"sent after {exc.code}") from exc  # pragma: no cover

    @app.get("/events")
    async def events() -> EventSourceResponse:
        async def gen() -> Any:
            yield {"data": "first"}
            await anyio.sleep_forever()

        return EventSourceResponse(gen(), ping=None)

    return app


class Peer:
    """A fake server connection: feeds `incoming`, then waits; records what is sent."""

    def __init__(self, *incoming: Message) -> None:
        self.incoming = list(incoming)
        self.sent: list[Message] = []
        self.waiting = anyio.Event()

    async def receive(self) -> Message:
        if self.incoming:
            return self.incoming.pop(0)
        self.waiting.set()
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send(self, message: Message) -> None:
        self.sent.append(message)


@pytest.mark.anyio
async def test_middleware_closes_websockets_and_ends_event_streams() -> None:
    drain = Drain()
    app = DrainMiddleware(drain_app(), drain)
    ws_peer = Peer({"type": "websocket.connect"})
    http_peer = Peer({"type": "http.request", "body": b""})
    lifespan = Peer({"type": "lifespan.startup"})
    ws_scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    http_scope = {"type": "http", "method": "GET", "path": "/events", "headers": []}
    http_scope |= {"query_string": b"", "root_path": ""}
    errors: list[BaseException] = []

    async def run(scope: dict[str, Any], peer: Peer) -> None:
        try:
            await app(scope, peer.receive, peer.send)
        except BaseException as exc:  # the handler's "too late" send
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, {"type": "lifespan"}, lifespan.receive, lifespan.send)
            await lifespan.waiting.wait()
            tg.start_soon(run, ws_scope, ws_peer)
            tg.start_soon(run, http_scope, http_peer)
            await ws_peer.waiting.wait()
            await http_peer.waiting.wait()
            assert drain.open_connections == 2
            drain.start()
            assert await drain.wait_closed(3)
            await anyio.sleep(0.1)
            tg.cancel_scope.cancel()

    assert ws_peer.sent[-1] == {
        "type": "websocket.close",
        "code": 1012,
        "reason": "the server is restarting",
    }
    assert http_peer.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert b"data: first" in b"".join(m.get("body", b"") for m in http_peer.sent)
    assert not any(isinstance(e, AssertionError) for e in errors), errors


@pytest.mark.anyio
async def test_a_handshake_during_the_drain_is_refused() -> None:
    drain = Drain()
    drain.start()
    app = DrainMiddleware(drain_app(), drain)
    plain = Peer({"type": "websocket.connect"})
    await app({"type": "websocket", "path": "/ws", "headers": []}, plain.receive, plain.send)
    assert plain.sent == [{"type": "websocket.close", "code": 1012}]
    answering = Peer({"type": "websocket.connect"})
    scope = {"type": "websocket", "path": "/ws", "extensions": {"websocket.http.response": {}}}
    await app(scope, answering.receive, answering.send)
    assert answering.sent[0]["status"] == 503
    assert (b"retry-after", b"1") in answering.sent[0]["headers"]


def test_drain_closed_is_an_oserror() -> None:
    """What handlers already catch for a client that left (ASGI 2.4 servers)."""
    assert issubclass(DrainClosed, OSError)


# -- what else a worker does with the app ---------------------------------------------------


@pytest.mark.parametrize("setting", ["1", "0"], ids=["frozen", "--no-gc-freeze"])
def test_a_worker_freezes_what_is_alive_once_the_app_has_started(
    monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """The startup's objects leave the garbage collector's walks (`gc.freeze()`), after
    the lifespan's startup and not before: what it made is frozen too."""
    import gc

    from microasgi._servers import GC_FREEZE_ENV, ServedApp
    from microasgi.testclient import TestClient

    monkeypatch.setenv(GC_FREEZE_ENV, setting)
    seen_at_startup: list[int] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: App) -> Any:
        seen_at_startup.append(gc.get_freeze_count())
        yield {"made_at_startup": object()}

    app = App(lifespan=lifespan)
    app.get("/")(lambda: "ok")
    assert gc.get_freeze_count() == 0
    try:
        with TestClient(ServedApp(app, Drain())) as client:
            assert client.get("/").text == "ok"
            frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    assert seen_at_startup == [0]
    if setting == "1":
        assert frozen > 1000  # the modules, the app, the test run's own objects
    else:
        assert frozen == 0


def test_no_gc_freeze_reaches_the_workers() -> None:
    """Through the environment, as every other setting (workers start with `spawn`)."""
    from microasgi.__main__ import _parser
    from microasgi._servers import GC_FREEZE_ENV, RunOptions, _environment

    assert _parser().parse_args(["run", "m:app"]).gc_freeze is True
    assert _parser().parse_args(["run", "m:app", "--no-gc-freeze"]).gc_freeze is False
    for gc_freeze, value in ((True, "1"), (False, "0")):
        with _environment(RunOptions(app="m:app", gc_freeze=gc_freeze)):
            assert os.environ[GC_FREEZE_ENV] == value
    assert GC_FREEZE_ENV not in os.environ
