"""`python -m microasgi run module:app` serves an app with uvicorn.

uvicorn gets a WebSocket protocol of ours (microasgi._uvicorn) that answers
every handshake, including those its default one leaves unanswered.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m microasgi", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve an app with uvicorn")
    run.add_argument("app", help="the app to serve, as module:attribute (e.g. examples.hello:app)")
    run.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    run.add_argument("--reload", action="store_true", help="restart when source files change")
    run.add_argument("--workers", type=int, default=None, help="number of worker processes")
    run.add_argument("--root-path", default="", help="the path prefix a proxy serves the app under")
    run.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    return parser


def websocket_protocol() -> str:
    """uvicorn's `ws` setting: the protocol that answers every handshake, or "none"."""
    try:
        from microasgi._uvicorn import PROTOCOL
    except ImportError as exc:  # no websockets library, or a uvicorn older than 0.52
        print(
            f"warning: WebSockets are off ({exc}): pip install 'microasgi[server]'",
            file=sys.stderr,
        )
        return "none"
    return PROTOCOL


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if ":" not in args.app:
        print(f"error: {args.app!r} is not of the form module:attribute", file=sys.stderr)
        return 2
    if args.reload and args.workers and args.workers > 1:
        print("error: --reload and --workers cannot be used together", file=sys.stderr)
        return 2
    try:
        import uvicorn
    except ImportError:
        print("error: uvicorn is not installed: pip install 'microasgi[server]'", file=sys.stderr)
        return 1
    uvicorn.run(
        args.app,
        host=args.host,
        port=args.port,
        reload=args.reload,
        workers=args.workers,
        root_path=args.root_path,
        log_level=args.log_level,
        lifespan="on",
        ws=websocket_protocol(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
