"""microasgi: a lightweight, fast and correct ASGI web microframework."""

from microasgi.app import App
from microasgi.background import BackgroundTask, BackgroundTasks
from microasgi.datastructures import UploadFile
from microasgi.exceptions import HTTPException, WebSocketException
from microasgi.requests import Request
from microasgi.responses import (
    EventSourceResponse,
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    ServerSentEvent,
    StreamingResponse,
)
from microasgi.routing import Router
from microasgi.websockets import WebSocket, WebSocketDisconnect

__version__ = "0.1.0"

__all__ = [
    "App",
    "BackgroundTask",
    "BackgroundTasks",
    "EventSourceResponse",
    "FileResponse",
    "HTMLResponse",
    "HTTPException",
    "JSONResponse",
    "PlainTextResponse",
    "RedirectResponse",
    "Request",
    "Response",
    "Router",
    "ServerSentEvent",
    "StreamingResponse",
    "UploadFile",
    "WebSocket",
    "WebSocketDisconnect",
    "WebSocketException",
]
