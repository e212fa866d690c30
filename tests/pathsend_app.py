"""An app for tests/test_files_integration.py to serve with granian: a FileResponse and
StaticFiles over the directory in $PATHSEND_DIR, and /log, the ASGI message types each
request's response was sent with (to see pathsend used)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from microasgi import App, FileResponse
from microasgi.staticfiles import StaticFiles
from microasgi.types import Message, Receive, Scope, Send

DIRECTORY = Path(os.environ.get("PATHSEND_DIR", "."))
LOG: list[tuple[str, list[str]]] = []

inner = App()
inner.mount("/static", StaticFiles(directory=DIRECTORY))


@inner.get("/file")
async def file() -> FileResponse:
    return FileResponse(DIRECTORY / "file.bin")


@inner.get("/log")
async def log() -> list[Any]:
    return [entry for entry in LOG if entry[0] != "/log"]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """`inner`, recording the message types of every HTTP response."""
    if scope["type"] != "http":
        await inner(scope, receive, send)
        return
    types: list[str] = []
    LOG.append((scope["path"], types))

    async def recording(message: Message) -> None:
        if message["type"] != "http.response.body" or "http.response.body" not in types:
            types.append(message["type"])
        await send(message)

    await inner(scope, receive, recording)
