"""The apps being compared: raw ASGI, microasgi and Starlette, each written the usual way.

Starlette is a development dependency used only here, never by microasgi.
"""

from __future__ import annotations

import json
from typing import Any

from harness import ASGIApp, Receive, Scope, Send
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.responses import PlainTextResponse as StarlettePlainTextResponse
from starlette.routing import Route as StarletteRoute

from microasgi import App, Request

__all__ = [
    "HELLO",
    "microasgi_json",
    "microasgi_json_function_middleware",
    "microasgi_plaintext",
    "raw_json",
    "raw_plaintext",
    "starlette_json",
    "starlette_json_function_middleware",
    "starlette_plaintext",
]

HELLO = "Hello, World!"


# -- raw ASGI: no framework, the obvious code ------------------------------------------


async def raw_plaintext(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers every request with "Hello, World!"."""
    assert scope["type"] == "http"
    body = HELLO.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def raw_json(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers `/.../{user_id}` with {"id": user_id}, the int parsed from the last segment."""
    assert scope["type"] == "http"
    user_id = int(scope["path"].rsplit("/", 1)[1])
    body = json.dumps({"id": user_id}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- microasgi -------------------------------------------------------------------------


def microasgi_plaintext() -> ASGIApp:
    app = App()

    @app.get("/")
    async def hello() -> str:
        return HELLO

    return app


def microasgi_json(paths: list[str]) -> ASGIApp:
    """One JSON route per path template, all served by the same kind of endpoint."""
    app = App()

    async def get_user(request: Request, user_id: int) -> dict[str, Any]:
        return {"id": user_id}

    for index, path in enumerate(paths):
        app.get(path, name=f"user{index}")(get_user)
    return app


def microasgi_json_function_middleware(paths: list[str]) -> ASGIApp:
    """The JSON app with one function middleware that passes the request on."""
    app = microasgi_json(paths)
    assert isinstance(app, App)

    @app.middleware
    async def pass_on(request: Request, call_next: Any) -> Any:
        return await call_next(request)

    return app


# -- Starlette -------------------------------------------------------------------------


def starlette_plaintext() -> ASGIApp:
    async def hello(request: StarletteRequest) -> StarlettePlainTextResponse:
        return StarlettePlainTextResponse(HELLO)

    return Starlette(routes=[StarletteRoute("/", hello)])


def starlette_json(paths: list[str]) -> ASGIApp:
    async def get_user(request: StarletteRequest) -> StarletteJSONResponse:
        return StarletteJSONResponse({"id": request.path_params["user_id"]})

    routes = [
        StarletteRoute(path, get_user, name=f"user{index}") for index, path in enumerate(paths)
    ]
    return Starlette(routes=routes)


def starlette_json_function_middleware(paths: list[str]) -> ASGIApp:
    """The JSON app with one BaseHTTPMiddleware (Starlette's function middleware)."""
    app = starlette_json(paths)
    assert isinstance(app, Starlette)

    async def pass_on(request: StarletteRequest, call_next: Any) -> Any:
        return await call_next(request)

    app.add_middleware(BaseHTTPMiddleware, dispatch=pass_on)
    return app
