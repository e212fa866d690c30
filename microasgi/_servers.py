"""Serving an app with uvicorn, hypercorn or granian: what `python -m microasgi run` runs.

Each server gets the same options (host, port, workers, reload, root path, log
level, TLS certificate and key) and the same graceful drain (`microasgi._drain`):
on SIGTERM or SIGINT every worker process closes its WebSockets with 1012 and
ends its event streams, stops accepting connections, gives the other requests
`grace` seconds and exits. How the drain hooks into each server:

- uvicorn: the app's lifespan chains a handler in front of uvicorn's own (uvicorn
  installs its handlers with `signal.signal`); uvicorn then shuts down as usual,
  with `timeout_graceful_shutdown` set to the grace.
- hypercorn: our worker function runs hypercorn with a shutdown trigger of ours
  (signals in a single process; several workers get a supervisor of ours that
  forwards the shutdown to them); hypercorn waits `graceful_timeout` (the grace).
- granian: granian stops a worker's connections (WebSockets included, without a
  close frame) the moment its signal handler runs, so the worker's handler is
  ours: drain first (until every WebSocket and event stream is closed, or the
  grace is over), then tell granian to stop. Granian's main process kills a
  worker that takes longer than the grace and a second.

The worker processes find the app and the settings in environment variables that
the command sets (servers start their workers with `spawn`).

Once the app's startup is complete, each worker moves every object alive then
(modules, classes, functions, the app, what the lifespan made) out of the garbage
collector's reach (`gc.freeze()`, after a collection): a full collection then only
walks what connections and requests made since. With thousands of WebSockets open
these collections run again and again while connections pile up; see
docs/running.md. `--no-gc-freeze` leaves the collector alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import importlib
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from microasgi._drain import DEFAULT_GRACE, DrainMiddleware, current
from microasgi.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "SERVERS",
    "WS_DEFLATE",
    "RunOptions",
    "ServedApp",
    "freeze_startup",
    "load_app",
    "run",
    "uvicorn_app",
    "websocket_protocol",
]

SERVERS = ("uvicorn", "hypercorn", "granian")

WS_DEFLATE = ("message", "context", "off")
"""WebSocket compression under uvicorn: permessage-deflate with each message compressed
on its own (no zlib state kept between messages: the default), with both contexts kept
for the connection's life (a better ratio for similar messages, about 40 KiB more per
connection), or not offered."""

APP_ENV = "MICROASGI_RUN_APP"
GRACE_ENV = "MICROASGI_RUN_GRACE"
GC_FREEZE_ENV = "MICROASGI_RUN_GC_FREEZE"
ROOT_PATH_ENV = "MICROASGI_RUN_ROOT_PATH"

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The command's options, as each server is given them."""

    app: str
    server: str = "uvicorn"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int | None = None
    reload: bool = False
    root_path: str = ""
    log_level: str = "info"
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    grace: float = DEFAULT_GRACE
    ws_deflate: str = "message"  # uvicorn only: one of WS_DEFLATE
    gc_freeze: bool = True  # freeze what is alive once the app has started
    reuse_port: bool = False  # uvicorn, Linux: each worker binds its own socket (_workers.py)

    @property
    def process_count(self) -> int:
        return max(self.workers or 1, 1)


# -- the app, as every worker process loads it ----------------------------------------------


class RootPath:
    """Gives hypercorn and granian uvicorn's `--root-path`: the prefix in `root_path`
    and in front of `path` (ASGI: the path includes the root path), for requests
    whose proxy removed it."""

    def __init__(self, app: ASGIApp, root_path: str) -> None:
        self.app = app
        self.root_path = root_path
        self.raw = root_path.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = dict(scope)
            scope["root_path"] = self.root_path
            scope["path"] = self.root_path + scope["path"]
            raw_path = scope.get("raw_path")
            if raw_path is not None:
                scope["raw_path"] = self.raw + raw_path
        await self.app(scope, receive, send)


def import_app(target: str) -> ASGIApp:
    """The object named by "module:attribute" (attribute may be dotted)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{target!r} is not of the form module:attribute")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    app: Any = importlib.import_module(module_name)
    for name in attribute.split("."):
        try:
            app = getattr(app, name)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return app  # type: ignore[no-any-return]


class ServedApp(DrainMiddleware):
    """What a worker serves: the app, with the drain, and the startup frozen."""

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        if os.environ.get(GC_FREEZE_ENV, "1") != "1":
            await super()._lifespan(scope, receive, send)
            return

        async def send_started(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                freeze_startup()
            await send(message)

        await super()._lifespan(scope, receive, send_started)


def freeze_startup() -> None:
    """Collect, then keep what is alive (the app as it has started) out of every later
    collection: it is not garbage, and walking it made a quarter of the full
    collections' time in a worker while thousands of connections arrived."""
    gc.collect()
    gc.freeze()


def load_app(*, root_path: bool = False, wrapper: type[ServedApp] = ServedApp) -> ServedApp:
    """The app named in the environment, wrapped for the drain (in a worker process)."""
    app = import_app(os.environ[APP_ENV])
    prefix = os.environ.get(ROOT_PATH_ENV, "")
    if root_path and prefix:
        app = RootPath(app, prefix)
    return wrapper(app)


def _grace() -> float:
    return float(os.environ.get(GRACE_ENV, DEFAULT_GRACE))


# -- uvicorn --------------------------------------------------------------------------------


def _chain_uvicorn_signals() -> None:
    """Start the drain in front of uvicorn's own SIGINT/SIGTERM handlers."""
    if threading.current_thread() is not threading.main_thread():
        return  # uvicorn serves from another thread: it handles no signals either
    loop = asyncio.get_running_loop()
    drain = current()
    for sig in _SIGNALS:
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Callable[..., Any] = previous) -> None:
            loop.call_soon_threadsafe(drain.start)
            previous(signum, frame)

        signal.signal(sig, handler)


class _UvicornDrain(ServedApp):
    """The drain for uvicorn: its signal handlers go in when the lifespan starts."""

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        _chain_uvicorn_signals()
        await super()._lifespan(scope, receive, send)


def uvicorn_app() -> ASGIApp:
    """uvicorn's app factory (`factory=True`), called in each worker."""
    return load_app(wrapper=_UvicornDrain)


def websocket_protocol(deflate: str = "message") -> str:
    """uvicorn's `ws` setting: the protocol that answers every handshake and negotiates
    permessage-deflate as `deflate` says (see WS_DEFLATE), or "none"."""
    try:
        from microasgi._uvicorn import PROTOCOLS
    except ImportError as exc:  # no websockets library, or a uvicorn older than 0.52
        print(
            f"warning: WebSockets are off ({exc}): pip install 'microasgi[server]'",
            file=sys.stderr,
        )
        return "none"
    return PROTOCOLS[deflate]


def _run_uvicorn(options: RunOptions) -> int:
    import uvicorn
    from uvicorn.supervisors import ChangeReload, Multiprocess

    class Supervisor(Multiprocess):
        """uvicorn's, closing its copy of the listening socket at once on SIGINT/SIGTERM:
        the workers close theirs as they start draining, and new connections are
        refused instead of waiting in a queue nobody reads."""

        def handle_int(self) -> None:
            self._stop_listening()
            super().handle_int()

        def handle_term(self) -> None:
            self._stop_listening()
            super().handle_term()

        def _stop_listening(self) -> None:
            for sock in self.sockets:
                sock.close()

    config = uvicorn.Config(
        f"{__name__}:uvicorn_app",
        factory=True,
        host=options.host,
        port=options.port,
        reload=options.reload,
        workers=options.workers,
        root_path=options.root_path,
        log_level=options.log_level,
        ssl_certfile=options.ssl_certfile,
        ssl_keyfile=options.ssl_keyfile,
        lifespan="on",
        ws=websocket_protocol(options.ws_deflate),
        ws_per_message_deflate=options.ws_deflate != "off",
        timeout_graceful_shutdown=math.ceil(options.grace),
    )
    server = uvicorn.Server(config)
    if config.should_reload:
        ChangeReload(config, target=server.run, sockets=[config.bind_socket()]).run()
    elif config.workers > 1 and options.reuse_port:
        from microasgi._workers import bind_own_socket, logger, own_sockets

        # Fail here, not in every worker, when anything listens on the address already
        # (without sharing it, so that an old deployment's workers are caught too).
        try:
            bind_own_socket(config.host, config.port, share=False).close()
        except OSError as exc:
            print(f"error: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
            return 1
        scheme = "https" if config.is_ssl else "http"
        logger.info(
            "Uvicorn running on %s://%s:%d, a socket per worker (Press CTRL+C to quit)",
            scheme,
            config.host,
            config.port,
        )
        with own_sockets():
            Supervisor(config, sockets=[]).run()
    elif config.workers > 1:
        Supervisor(config, sockets=[config.bind_socket()]).run()
    else:
        server.run()
        if not server.started:
            return 3  # uvicorn's status for a failed startup
    return 0


# -- hypercorn ------------------------------------------------------------------------------


def _hypercorn_config(options: RunOptions) -> Any:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{options.host}:{options.port}"]
    config.loglevel = "DEBUG" if options.log_level == "trace" else options.log_level.upper()
    config.graceful_timeout = options.grace
    config.application_path = os.environ[APP_ENV]
    if options.ssl_certfile:
        config.certfile = options.ssl_certfile
        config.keyfile = options.ssl_keyfile
    return config


def _hypercorn_worker(config: Any, sockets: Any = None, shutdown_event: Any = None) -> None:
    """One hypercorn worker (in-process, or a process of the supervisor below)."""
    from hypercorn.asyncio.run import worker_serve
    from hypercorn.utils import wrap_app

    app = wrap_app(load_app(root_path=True), config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    drain = current()

    async def shutdown_trigger() -> None:
        if shutdown_event is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in _SIGNALS:
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        else:
            # A multiprocessing.Event cannot be awaited: poll it, as hypercorn does.
            while not shutdown_event.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        # hypercorn now stops accepting and waits up to graceful_timeout for connections.
        drain.start()

    asyncio.run(worker_serve(app, config, sockets=sockets, shutdown_trigger=shutdown_trigger))


def _run_hypercorn(options: RunOptions) -> int:
    config = _hypercorn_config(options)
    if options.process_count == 1 and not options.reload:
        _hypercorn_worker(config)
        return 0
    return _HypercornSupervisor(config, options).run()


class _HypercornSupervisor:
    """Worker processes on shared sockets; SIGTERM/SIGINT drain them all, a changed
    source file (with --reload) restarts them."""

    def __init__(self, config: Any, options: RunOptions) -> None:
        import multiprocessing

        self.config = config
        self.options = options
        self.context = multiprocessing.get_context("spawn")
        self.shutdown = self.context.Event()
        self.stopping = False
        self.listening: list[Any] = []

    def run(self) -> int:
        from multiprocessing.connection import wait

        from hypercorn.utils import check_for_updates, files_to_watch

        sockets = self.config.create_sockets()
        self.listening = [*sockets.secure_sockets, *sockets.insecure_sockets]
        exitcode = 0
        try:
            while not self.stopping:
                processes = self._start(sockets)
                files = files_to_watch() if self.options.reload else {}
                while not self.stopping:
                    if wait([p.sentinel for p in processes], timeout=0.5):
                        self.stopping = True  # a worker died: stop them all
                    elif files and check_for_updates(files):
                        break
                self.shutdown.set()
                for process in processes:
                    process.join()
                    exitcode = exitcode or (process.exitcode or 0)
                self.shutdown.clear()
        finally:
            for sock in self.listening:
                sock.close()
        return exitcode

    def _start(self, sockets: Any) -> list[Any]:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # children inherit SIG_IGN
        try:
            processes = []
            for _ in range(self.options.process_count):
                arguments = {"config": self.config, "sockets": sockets}
                process = self.context.Process(
                    target=_hypercorn_worker,
                    kwargs={**arguments, "shutdown_event": self.shutdown},
                )
                process.start()
                processes.append(process)
        finally:
            signal.signal(signal.SIGINT, previous)
        for sig in _SIGNALS:
            signal.signal(sig, self._stop)
        return processes

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True
        self.shutdown.set()
        for sock in self.listening:  # the workers close theirs as they start draining
            sock.close()


# -- granian --------------------------------------------------------------------------------


def _granian_loop_signals(loop: asyncio.AbstractEventLoop) -> Any:
    """Replaces `granian._signals.set_loop_signals` in a worker: drain, then stop granian."""
    from granian._granian import WorkerSignal

    stop = WorkerSignal()
    drain = current()
    tasks: set[asyncio.Task[None]] = set()

    async def drain_then_stop() -> None:
        await drain.wait_closed(_grace())
        stop.set()

    def on_signal() -> None:
        if drain.draining or not drain.ready:  # a second signal, or no lifespan: stop now
            stop.set()
            return
        drain.start()
        task = loop.create_task(drain_then_stop())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    for sig in _SIGNALS:
        loop.add_signal_handler(sig, on_signal)
    return stop


def granian_loader(target: str) -> ASGIApp:
    """granian's target loader, run in each worker before granian sets its signals."""
    import granian._signals

    granian._signals.set_loop_signals = _granian_loop_signals
    return load_app(root_path=True)


def _run_granian(options: RunOptions) -> int:
    from pathlib import Path

    from granian import Granian
    from granian.constants import Interfaces

    log_level = "debug" if options.log_level == "trace" else options.log_level
    server = Granian(
        os.environ[APP_ENV],
        address=options.host,
        port=options.port,
        interface=Interfaces.ASGI,
        workers=options.process_count,
        reload=options.reload,
        log_level=log_level,  # type: ignore[arg-type]
        ssl_cert=Path(options.ssl_certfile) if options.ssl_certfile else None,
        ssl_key=Path(options.ssl_keyfile) if options.ssl_keyfile else None,
        workers_kill_timeout=math.ceil(options.grace) + 1,
    )
    server.serve(target_loader=granian_loader)
    return 0


# -- the command ----------------------------------------------------------------------------

_RUNNERS: dict[str, Callable[[RunOptions], int]] = {
    "uvicorn": _run_uvicorn,
    "hypercorn": _run_hypercorn,
    "granian": _run_granian,
}


@contextlib.contextmanager
def _environment(options: RunOptions) -> Iterator[None]:
    values = {APP_ENV: options.app, GRACE_ENV: repr(options.grace)}
    values[GC_FREEZE_ENV] = "1" if options.gc_freeze else "0"
    values[ROOT_PATH_ENV] = options.root_path if options.server != "uvicorn" else ""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run(options: RunOptions) -> int:
    """Serve `options.app` with `options.server` until a signal stops it; the exit status."""
    with _environment(options):
        return _RUNNERS[options.server](options)
