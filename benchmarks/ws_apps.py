"""The WebSocket echo apps compared, and the entry point that serves one of them.

    .venv/bin/python benchmarks/ws_apps.py APP PORT [--ws IMPL] [--profile FILE]

bench_ws.py starts each app in its own process with this, so that the server and
the client do not share an event loop (or a core). Every app echoes each message
back as it came: text as text, bytes as bytes. `/echo` reads with `iter_text`,
`/echo-bytes` with `iter_bytes` (the raw ASGI app does not route: any path works).

With `--profile FILE` the server runs under cProfile and writes the statistics to
FILE when it stops (on SIGTERM or SIGINT), for looking at where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import signal
import sys
import warnings
from collections.abc import Callable, Sequence

from harness import ASGIApp, Receive, Scope, Send

__all__ = ["APPS", "BYTES_PATH", "TEXT_PATH", "main", "serve"]

TEXT_PATH = "/echo"
BYTES_PATH = "/echo-bytes"


# -- raw ASGI: no framework, the obvious code ------------------------------------------


async def raw_echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Accepts, then sends every message back until the client leaves."""
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return  # websocket.disconnect
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


# -- microasgi -------------------------------------------------------------------------


def microasgi_echo() -> ASGIApp:
    from microasgi import App, WebSocket

    app = App()

    @app.websocket(TEXT_PATH)
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        async for message in ws.iter_text():
            await ws.send_text(message)

    @app.websocket(BYTES_PATH)
    async def echo_bytes(ws: WebSocket) -> None:
        await ws.accept()
        async for data in ws.iter_bytes():
            await ws.send_bytes(data)

    return app


# -- Starlette -------------------------------------------------------------------------


def starlette_echo() -> ASGIApp:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket as StarletteWebSocket

    async def echo(ws: StarletteWebSocket) -> None:
        await ws.accept()
        async for message in ws.iter_text():
            await ws.send_text(message)

    async def echo_bytes(ws: StarletteWebSocket) -> None:
        await ws.accept()
        async for data in ws.iter_bytes():
            await ws.send_bytes(data)

    return Starlette(
        routes=[WebSocketRoute(TEXT_PATH, echo), WebSocketRoute(BYTES_PATH, echo_bytes)]
    )


APPS: dict[str, Callable[[], ASGIApp]] = {
    "raw": lambda: raw_echo,
    "microasgi": microasgi_echo,
    "starlette": starlette_echo,
}


# -- serving ---------------------------------------------------------------------------


def serve(app: ASGIApp, port: int, ws: str) -> None:
    """Run `app` under uvicorn on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    import uvicorn

    # uvicorn and websockets warn that the `websockets` implementation (on the
    # legacy API of websockets) is deprecated: it still works, and is what is measured.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="The `websockets` implementation is deprecated")
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", ws=ws
    )
    uvicorn.Server(config).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("app", choices=sorted(APPS))
    parser.add_argument("port", type=int)
    parser.add_argument("--ws", default="websockets", help="uvicorn's ws implementation")
    parser.add_argument("--profile", metavar="FILE", help="run under cProfile, stats to FILE")
    args = parser.parse_args(argv)
    app = APPS[args.app]()
    if not args.profile:
        serve(app, args.port, args.ws)
        return 0
    # uvicorn handles SIGTERM, then raises it again once it has shut down: make that
    # an exit (not a kill), so that the statistics get written.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        serve(app, args.port, args.ws)
    finally:
        profiler.disable()
        profiler.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
