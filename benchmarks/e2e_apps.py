"""The apps `bench_e2e.py` serves: raw ASGI, microasgi and Starlette, each answering
the same four routes the usual way, plain, behind one pure-ASGI middleware and
behind one function middleware (`@app.middleware("http")`).

Routes (the same answers from every app, checked before anything is timed):

- ``GET /plaintext`` -> ``Hello, World!``
- ``GET /r0/items/{item_id:int}`` -> ``{"item_id": 42}``
- ``GET /search?q=...&page=...`` with four headers and a cookie ->
  ``{"q": ..., "page": 2, "agent": <user-agent>, "session": <cookie>}``
- ``POST /orders`` with a 1 KB JSON body -> ``{"items": <count>, "total": <sum>}``

Served as ``e2e_apps:NAME`` where NAME is one of `APPS`.
"""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse as StarletteJSON
from starlette.responses import PlainTextResponse as StarlettePlainText
from starlette.routing import Route as StarletteRoute

from microasgi import App, Request
from microasgi._drain import DrainMiddleware
from microasgi.types import ASGIApp, Message, Receive, Scope, Send

HELLO = "Hello, World!"


class AddHeader:
    """The pure-ASGI middleware: one response header added, nothing else."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-middleware", b"1")]
            await send(message)

        await self.app(scope, receive, send_with_header)


# -- raw ASGI ---------------------------------------------------------------------------------


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


async def _raw_reply(send: Send, body: bytes, media_type: bytes) -> None:
    headers = [(b"content-type", media_type), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def raw(scope: Scope, receive: Receive, send: Send) -> None:
    """The four routes written by hand."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if path == "/plaintext":
        await _raw_reply(send, HELLO.encode(), b"text/plain; charset=utf-8")
    elif path.startswith("/r0/items/"):
        item = int(path.rsplit("/", 1)[1])
        await _raw_reply(send, _json({"item_id": item}), b"application/json")
    elif path == "/search":
        query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        headers = dict(scope["headers"])
        cookie: SimpleCookie = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
        session = cookie["session"].value if "session" in cookie else None
        data = {
            "q": query.get("q"),
            "page": int(query.get("page", "1")),
            "agent": headers.get(b"user-agent", b"").decode("latin-1"),
            "session": session,
        }
        await _raw_reply(send, _json(data), b"application/json")
    elif path == "/orders":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        order = json.loads(body)
        result = {"items": len(order["items"]), "total": sum(i["price"] for i in order["items"])}
        await _raw_reply(send, _json(result), b"application/json")
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


raw_asgi_mw = AddHeader(raw)


# -- microasgi --------------------------------------------------------------------------------


def _microasgi(asgi_mw: bool = False, function_mw: bool = False) -> App:
    app = App()

    @app.get("/plaintext")
    async def plaintext() -> str:
        return HELLO

    @app.get("/r0/items/{item_id:int}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/search")
    async def search(request: Request) -> dict[str, Any]:
        return {
            "q": request.query_params.get("q"),
            "page": int(request.query_params.get("page", "1")),
            "agent": request.headers.get("user-agent", ""),
            "session": request.cookies.get("session"),
        }

    @app.post("/orders")
    async def orders(request: Request) -> dict[str, Any]:
        order = await request.json()
        return {"items": len(order["items"]), "total": sum(i["price"] for i in order["items"])}

    if asgi_mw:
        app.add_middleware(AddHeader)
    if function_mw:

        @app.middleware
        async def add_header(request: Request, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers["x-middleware"] = "1"
            return response

    return app


microasgi = _microasgi()
microasgi_asgi_mw = _microasgi(asgi_mw=True)
microasgi_func_mw = _microasgi(function_mw=True)
# What `python -m microasgi run` serves: the app inside the drain's wrapper.
microasgi_drain = DrainMiddleware(_microasgi())


# -- Starlette --------------------------------------------------------------------------------


def _starlette(asgi_mw: bool = False, function_mw: bool = False) -> Starlette:
    async def plaintext(request: StarletteRequest) -> StarlettePlainText:
        return StarlettePlainText(HELLO)

    async def item(request: StarletteRequest) -> StarletteJSON:
        return StarletteJSON({"item_id": request.path_params["item_id"]})

    async def search(request: StarletteRequest) -> StarletteJSON:
        return StarletteJSON(
            {
                "q": request.query_params.get("q"),
                "page": int(request.query_params.get("page", "1")),
                "agent": request.headers.get("user-agent", ""),
                "session": request.cookies.get("session"),
            }
        )

    async def orders(request: StarletteRequest) -> StarletteJSON:
        order = await request.json()
        items = order["items"]
        return StarletteJSON({"items": len(items), "total": sum(i["price"] for i in items)})

    app = Starlette(
        routes=[
            StarletteRoute("/plaintext", plaintext),
            StarletteRoute("/r0/items/{item_id:int}", item),
            StarletteRoute("/search", search),
            StarletteRoute("/orders", orders, methods=["POST"]),
        ]
    )
    if asgi_mw:
        app.add_middleware(AddHeader)
    if function_mw:  # what @app.middleware("http") was: a BaseHTTPMiddleware

        async def add_header(request: StarletteRequest, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers["x-middleware"] = "1"
            return response

        app.add_middleware(BaseHTTPMiddleware, dispatch=add_header)
    return app


starlette = _starlette()
starlette_asgi_mw = _starlette(asgi_mw=True)
starlette_func_mw = _starlette(function_mw=True)

APPS = [
    "raw",
    "raw_asgi_mw",
    "microasgi",
    "microasgi_asgi_mw",
    "microasgi_func_mw",
    "microasgi_drain",
    "starlette",
    "starlette_asgi_mw",
    "starlette_func_mw",
]
