"""`python -m microasgi run module:app` serves an app with uvicorn, hypercorn or granian.

The same options reach each server; on SIGTERM (or Ctrl-C) every worker drains:
WebSockets close with 1012, event streams end, other requests get a grace period
(see docs/running.md). With uvicorn, WebSockets use a protocol of ours
(microasgi._uvicorn) that answers every handshake, including those uvicorn's
default leaves unanswered.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from collections.abc import Sequence

from microasgi._drain import DEFAULT_GRACE
from microasgi._servers import SERVERS, WS_DEFLATE, RunOptions, run, websocket_protocol

__all__ = ["main", "websocket_protocol"]

_INSTALL = {
    "uvicorn": "pip install 'microasgi[server]'",
    "hypercorn": "pip install 'microasgi[hypercorn]'",
    "granian": "pip install 'microasgi[granian]'",
}
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _seconds(value: str) -> float:
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(value)
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m microasgi", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_ = commands.add_parser("run", help="serve an app with uvicorn, hypercorn or granian")
    run_.add_argument("app", help="the app to serve, as module:attribute (e.g. examples.hello:app)")
    run_.add_argument(
        "--server", choices=SERVERS, default="uvicorn", help="the ASGI server (default uvicorn)"
    )
    run_.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    run_.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    run_.add_argument("--reload", action="store_true", help="restart when source files change")
    run_.add_argument("--workers", type=int, default=None, help="number of worker processes")
    run_.add_argument(
        "--root-path", default="", help="the path prefix a proxy serves the app under"
    )
    run_.add_argument(
        "--log-level", default="info", choices=_LOG_LEVELS, help="log level (default info)"
    )
    run_.add_argument("--ssl-certfile", default=None, help="TLS certificate file (PEM)")
    run_.add_argument("--ssl-keyfile", default=None, help="TLS private key file (PEM)")
    run_.add_argument(
        "--grace",
        type=_seconds,
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help="on SIGTERM, how long requests may take to finish before they are cancelled "
        f"(default {DEFAULT_GRACE:g})",
    )
    run_.add_argument(
        "--ws-deflate",
        choices=WS_DEFLATE,
        default=None,
        help="uvicorn only: WebSocket compression, each message on its own (message, the "
        "default), with contexts kept per connection (context: about 40 KiB more each), "
        "or off",
    )
    run_.add_argument(
        "--reuse-port",
        action="store_true",
        help="uvicorn on Linux, with --workers: each worker listens on a socket of its own "
        "(SO_REUSEPORT), so that the kernel spreads new connections evenly over the workers",
    )
    run_.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="leave the garbage collector alone (by default each worker freezes what is "
        "alive once the app has started, so that later collections skip it)",
    )
    return parser


def _error(message: str, status: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if ":" not in args.app:
        return _error(f"{args.app!r} is not of the form module:attribute")
    if args.workers is not None and args.workers < 1:
        return _error("--workers must be 1 or more")
    if args.reload and args.workers and args.workers > 1 and args.server == "uvicorn":
        return _error("--reload and --workers cannot be used together with uvicorn")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        return _error("--ssl-certfile and --ssl-keyfile go together")
    if args.ws_deflate is not None and args.server != "uvicorn":
        return _error(f"--ws-deflate is for uvicorn: {args.server} negotiates compression itself")
    if args.reuse_port and args.server != "uvicorn":
        return _error(f"--reuse-port is for uvicorn: {args.server} shares one socket itself")
    if args.reuse_port and (args.workers or 1) < 2:
        return _error("--reuse-port gives each worker a socket: it needs --workers 2 or more")
    if args.reuse_port and not sys.platform.startswith("linux"):
        return _error("--reuse-port needs Linux (its SO_REUSEPORT spreads connections)")
    if importlib.util.find_spec(args.server) is None:
        return _error(f"{args.server} is not installed: {_INSTALL[args.server]}", 1)
    options = RunOptions(
        app=args.app,
        server=args.server,
        host=args.host,
        port=args.port,
        workers=args.workers,
        reload=args.reload,
        root_path=args.root_path,
        log_level=args.log_level,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        grace=args.grace,
        ws_deflate=args.ws_deflate or "message",
        gc_freeze=args.gc_freeze,
        reuse_port=args.reuse_port,
    )
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
