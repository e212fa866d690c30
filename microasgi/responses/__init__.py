"""Responses: each one an ASGI app that sends itself."""

from microasgi.responses._base import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from microasgi.responses._file import FileResponse
from microasgi.responses._sse import EventSourceResponse, ServerSentEvent
from microasgi.responses._streaming import StreamingResponse

__all__ = [
    "EventSourceResponse",
    "FileResponse",
    "HTMLResponse",
    "JSONResponse",
    "PlainTextResponse",
    "RedirectResponse",
    "Response",
    "ServerSentEvent",
    "StreamingResponse",
]
