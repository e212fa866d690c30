"""The per-app context: settings reach requests through the scope, never through `scope["app"]`.

Also how our apps and routers behave under somebody else's app (Starlette), and
somebody else's under ours: limits, lifespan and `url_path_for` must survive both.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount as StarletteMount
from starlette.routing import Route as StarletteRoute
from starlette.routing import Router as StarletteRouter

from microasgi import App, PlainTextResponse, Request, Router
from microasgi._context import CONTEXT_KEY, DEFAULT_MAX_BODY_SIZE, AppContext, context_of
from microasgi.routing import NoMatchFound
from tests.helpers import MakeClient, http_scope, run_app


def body_size_app(**options: Any) -> App:
    app = App(**options)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    return app


def test_debug_set_after_construction_takes_effect(make_client: MakeClient) -> None:
    app = App()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    client = make_client(app, raise_server_exceptions=False)
    assert client.get("/boom").text == "Internal Server Error"
    app.debug = True  # after a first request: the context is rebuilt
    response = client.get("/boom")
    assert response.status_code == 500
    assert "RuntimeError: kaboom" in response.text
    app.debug = False
    assert client.get("/boom").text == "Internal Server Error"


def test_debug_set_before_the_first_request(make_client: MakeClient) -> None:
    app = App()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    app.debug = True
    assert "kaboom" in make_client(app, raise_server_exceptions=False).get("/boom").text


def test_max_body_size_set_after_construction_takes_effect(make_client: MakeClient) -> None:
    app = body_size_app()
    client = make_client(app)
    assert client.post("/echo", content=b"x" * 100).json() == {"size": 100}
    app.max_body_size = 10
    assert client.post("/echo", content=b"x" * 100).status_code == 413
    assert app.max_body_size == 10


def test_the_app_puts_one_frozen_context_in_the_scope(make_client: MakeClient) -> None:
    app = App(max_body_size=123, max_message_size=45)
    seen: list[Any] = []

    @app.get("/")
    async def index(request: Request) -> str:
        seen.append(request.scope[CONTEXT_KEY])
        return "ok"

    client = make_client(app)
    client.get("/")
    client.get("/")
    context = seen[0]
    assert isinstance(context, AppContext)
    assert seen[1] is context  # built once, not per request
    assert (context.max_body_size, context.max_message_size) == (123, 45)
    assert context.router is app.router
    with pytest.raises(AttributeError):
        context.max_body_size = 1  # type: ignore[misc]


def test_a_request_outside_any_app_uses_the_defaults() -> None:
    scope = http_scope("POST", "/")
    assert context_of(scope) is None
    request = Request(scope)
    assert request._max_body_size() == DEFAULT_MAX_BODY_SIZE
    with pytest.raises(RuntimeError, match="url_for needs"):
        request.url_for("anything")


def test_router_served_alone_puts_a_default_context(make_client: MakeClient) -> None:
    router = Router()

    @router.get("/items/{item_id:int}", name="item")
    async def item(request: Request, item_id: int) -> dict[str, Any]:
        context = context_of(request.scope)
        assert context is not None
        return {
            "url": str(request.url_for("item", item_id=item_id + 1)),
            "limit": context.max_body_size,
        }

    assert make_client(router).get("/items/1").json() == {
        "url": "http://testserver/items/2",
        "limit": DEFAULT_MAX_BODY_SIZE,
    }


def test_route_override_applies_inside_a_mounted_app_with_its_own_limit(
    make_client: MakeClient,
) -> None:
    child = App(max_body_size=50)

    @child.post("/small")
    async def small(request: Request) -> int:
        return len(await request.body())  # type: ignore[return-value]

    @child.post("/big", max_body_size=1000)
    async def big(request: Request) -> str:
        return str(len(await request.body()))

    parent = App(max_body_size=10)
    parent.mount("/child", child)

    @parent.post("/own")
    async def own(request: Request) -> str:
        return str(len(await request.body()))

    client = make_client(parent)
    assert client.post("/own", content=b"x" * 20).status_code == 413  # the parent's 10
    assert client.post("/child/big", content=b"x" * 500).text == "500"  # the route's 1000
    assert client.post("/child/small", content=b"x" * 60).status_code == 413  # the child's 50


def test_url_for_in_a_mounted_app_resolves_from_the_outermost_router(
    make_client: MakeClient,
) -> None:
    child = App()

    @child.get("/here", name="here")
    async def here(request: Request) -> dict[str, str]:
        return {
            "home": str(request.url_for("home")),
            "here": str(request.url_for("child:here")),
        }

    parent = App()
    parent.mount("/child", child, name="child")

    @parent.get("/", name="home")
    async def home() -> str:
        return "home"

    assert make_client(parent, root_path="/root").get("/root/child/here").json() == {
        "home": "http://testserver/root/",
        "here": "http://testserver/root/child/here",
    }


# -- under somebody else's app ------------------------------------------------------------


def test_router_mounted_under_starlette_keeps_the_default_body_limit(
    make_client: MakeClient,
) -> None:
    router = Router()

    @router.post("/echo")
    async def echo(request: Request) -> str:
        return str(len(await request.body()))

    outer = Starlette(routes=[StarletteMount("/api", app=router)])
    client = make_client(outer)
    assert client.post("/api/echo", content=b"x" * 1000).text == "1000"
    too_big = client.post("/api/echo", content=b"x" * (DEFAULT_MAX_BODY_SIZE + 1))
    assert too_big.status_code == 413


def test_app_mounted_under_starlette_keeps_its_settings(make_client: MakeClient) -> None:
    app = body_size_app(max_body_size=5)
    outer = Starlette(routes=[StarletteMount("/app", app=app)])
    client = make_client(outer)
    assert client.post("/app/echo", content=b"abc").json() == {"size": 3}
    assert client.post("/app/echo", content=b"abcdef").status_code == 413


def starlette_router(events: list[str]) -> StarletteRouter:
    async def hello(request: Any) -> Any:
        return PlainTextResponse("from starlette")

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        events.append("starlette startup")
        yield
        events.append("starlette shutdown")

    return StarletteRouter(
        routes=[StarletteRoute("/hello", hello, name="hello")], lifespan=lifespan
    )


def test_starlette_router_mounted_in_an_app_does_not_break_our_lifespan(
    make_client: MakeClient,
) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> Any:
        events.append("startup")
        yield
        events.append("shutdown")

    app = App(lifespan=lifespan)
    app.mount("/legacy", starlette_router(events))

    @app.background_task
    async def ticker() -> None:
        events.append("ticker")

    with make_client(app) as client:
        assert client.get("/legacy/hello").text == "from starlette"
    # Ours ran and shut down; a foreign app's lifespan is its own business (not run).
    assert events[0] == "startup"
    assert events[-1] == "shutdown"
    assert "starlette startup" not in events


def test_foreign_url_path_for_errors_do_not_stop_the_search() -> None:
    class Raises:
        def __init__(self, error: Exception) -> None:
            self.error = error

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            raise AssertionError("not called")

        def url_path_for(self, name: str, /, **params: Any) -> str:
            raise self.error

    app = App()
    app.mount("/starlette", starlette_router([]))  # raises Starlette's own NoMatchFound
    app.mount("/type-error", Raises(TypeError("bad arguments")))
    app.mount("/key-error", Raises(KeyError("x")))

    @app.get("/target/{n:int}", name="target")
    async def target(n: int) -> str:
        return str(n)

    assert app.url_path_for("target", n=3) == "/target/3"
    assert app.url_path_for("hello") == "/starlette/hello"  # the foreign router answers
    with pytest.raises(NoMatchFound):
        app.url_path_for("missing")


@pytest.mark.anyio
async def test_foreign_app_under_a_mount_gets_errors_answered_by_our_context() -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("raw app failed")

    app = App()
    app.mount("/raw", raw)
    seen: list[str] = []

    @app.exception_handler(RuntimeError)
    async def handler(request: Request, exc: RuntimeError) -> PlainTextResponse:
        seen.append(str(exc))
        return PlainTextResponse("handled", status_code=502)

    exchange = await run_app(app, http_scope("GET", "/raw/x"))
    assert exchange.status == 502
    assert exchange.body == b"handled"
    assert seen == ["raw app failed"]
