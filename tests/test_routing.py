"""Routing: decorators, matching, 404/405/426, slash redirects, mounts, url_path_for."""

from __future__ import annotations

import functools
import json
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from microasgi import App, BackgroundTasks, HTTPException, Request, Router, WebSocket
from microasgi._paths import NoMatchFound
from microasgi.middleware import Middleware
from microasgi.responses import PlainTextResponse
from microasgi.testclient import WebSocketDenied
from tests.helpers import AddHeader, http_scope, run_app

HTTP_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


# -- helpers ----------------------------------------------------------------------------


async def echo_scope(scope: Any, receive: Any, send: Any) -> None:
    """A raw ASGI app answering with what it saw of the scope."""
    if scope["type"] != "http":
        return
    body = json.dumps(
        {
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "path_params": {k: str(v) for k, v in (scope.get("path_params") or {}).items()},
            "method": scope["method"],
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- decorators -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["app", "router"])
@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete", "options"])
def test_method_decorators(make_client: Any, kind: str, method: str) -> None:
    target: Any = App() if kind == "app" else Router()

    async def endpoint(request: Request) -> str:
        return f"{request.method} ok"

    returned = getattr(target, method)("/thing")(endpoint)
    assert returned is endpoint
    client = make_client(target)
    r = client.request(method.upper(), "/thing")
    assert r.status_code == 200
    assert r.text == f"{method.upper()} ok"
    for other in HTTP_METHODS:
        if other == method.upper() or (method == "get" and other == "HEAD"):
            continue
        r = client.request(other, "/thing")
        assert r.status_code == 405, other
        expected = ["GET", "HEAD"] if method == "get" else [method.upper()]
        assert r.headers["allow"] == ", ".join(expected)


@pytest.mark.parametrize("kind", ["app", "router"])
def test_head_decorator(make_client: Any, kind: str) -> None:
    target: Any = App() if kind == "app" else Router()

    @target.head("/h")
    async def endpoint() -> PlainTextResponse:
        return PlainTextResponse("", headers={"x-head": "yes"})

    client = make_client(target)
    r = client.head("/h")
    assert r.status_code == 200
    assert r.headers["x-head"] == "yes"
    r = client.get("/h")
    assert r.status_code == 405
    assert r.headers["allow"] == "HEAD"


@pytest.mark.parametrize("kind", ["app", "router"])
def test_route_decorator_with_methods(make_client: Any, kind: str) -> None:
    target: Any = App() if kind == "app" else Router()

    @target.route("/items", methods=["GET", "post"])
    def items(request: Request) -> str:
        return request.method

    @target.route("/default")
    async def default() -> str:
        return "default"

    client = make_client(target)
    assert client.get("/items").text == "GET"
    assert client.post("/items").text == "POST"
    assert client.head("/items").status_code == 200
    r = client.put("/items")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD, POST"
    assert client.get("/default").text == "default"
    assert client.post("/default").status_code == 405


@pytest.mark.parametrize("kind", ["app", "router"])
def test_websocket_decorator(make_client: Any, kind: str) -> None:
    target: Any = App() if kind == "app" else Router()

    async def chat(ws: WebSocket, room: str) -> None:
        await ws.accept()
        text = await ws.receive_text()
        await ws.send_text(f"{room}: {text}")
        await ws.close()

    assert target.websocket("/ws/{room}")(chat) is chat
    client = make_client(target)
    with client.websocket_connect("/ws/lobby") as ws:
        ws.send_text("hi")
        assert ws.receive_text(timeout=5) == "lobby: hi"


def test_websocket_to_an_unknown_or_http_path_is_denied(make_client: Any) -> None:
    app = App()

    @app.get("/http")
    async def http() -> str:
        return "x"

    client = make_client(app)
    for path in ["/nowhere", "/http"]:
        with pytest.raises(WebSocketDenied) as info:
            client.websocket_connect(path, timeout=5)
        assert info.value.status_code == 403


@pytest.mark.parametrize("kind", ["app", "router"])
def test_name_option_and_default_name(kind: str) -> None:
    target: Any = App() if kind == "app" else Router()

    @target.get("/a/{x}", name="custom")
    async def first(x: str) -> None: ...

    @target.post("/b")
    async def second() -> None: ...

    @target.websocket("/ws", name="socket")
    async def third(ws: WebSocket) -> None: ...

    assert target.url_path_for("custom", x="1") == "/a/1"
    assert target.url_path_for("second") == "/b"
    assert target.url_path_for("socket") == "/ws"
    with pytest.raises(NoMatchFound):
        target.url_path_for("first", x="1")
    with pytest.raises(NoMatchFound):
        target.url_path_for("third")


# -- matching order -------------------------------------------------------------------


def test_static_beats_parameter_regardless_of_order(make_client: Any) -> None:
    app = App()

    @app.get("/users/{uid}")
    async def by_id(uid: str) -> str:
        return f"param {uid}"

    @app.get("/users/me")
    async def me() -> str:
        return "static me"

    @app.get("/{section}/list")
    async def section(section: str) -> str:
        return f"param section {section}"

    @app.get("/users/list")
    async def user_list() -> str:
        return "static list"

    client = make_client(app)
    assert client.get("/users/me").text == "static me"
    assert client.get("/users/42").text == "param 42"
    assert client.get("/users/list").text == "static list"
    assert client.get("/posts/list").text == "param section posts"


def test_static_beats_parameter_in_a_router_with_more_segments(make_client: Any) -> None:
    router = Router()

    @router.get("/a/{x}/c")
    async def param() -> str:
        return "param"

    @router.get("/a/b/c")
    async def static() -> str:
        return "static"

    client = make_client(router)
    assert client.get("/a/b/c").text == "static"
    assert client.get("/a/z/c").text == "param"


def test_then_registration_order(make_client: Any) -> None:
    app = App()

    @app.get("/x/{a:int}")
    async def int_first(a: int) -> str:
        return f"int {a}"

    @app.get("/x/{b}")
    async def str_second(b: str) -> str:
        return f"str {b}"

    @app.get("/y/{b}")
    async def str_first(b: str) -> str:
        return f"str {b}"

    @app.get("/y/{a:int}")
    async def int_second(a: int) -> str:
        return f"int {a}"

    client = make_client(app)
    assert client.get("/x/5").text == "int 5"
    assert client.get("/x/five").text == "str five"
    assert client.get("/y/5").text == "str 5"


def test_same_template_twice_first_wins(make_client: Any) -> None:
    app = App()

    @app.get("/dup/{x}")
    async def first(x: str) -> str:
        return "first"

    @app.get("/dup/{x}")
    async def second(x: str) -> str:
        return "second"

    @app.get("/static-dup")
    async def static_first() -> str:
        return "first"

    @app.get("/static-dup")
    async def static_second() -> str:
        return "second"

    client = make_client(app)
    assert client.get("/dup/1").text == "first"
    assert client.get("/static-dup").text == "first"


def test_path_tail_follows_registration_order(make_client: Any) -> None:
    """A `{p:path}` parameter is a parameter: registration order decides against another."""
    app = App()

    @app.get("/f/{rest:path}")
    async def tail(rest: str) -> str:
        return f"tail {rest}"

    @app.get("/f/{name}")
    async def single(name: str) -> str:
        return f"single {name}"

    client = make_client(app)
    assert client.get("/f/a/b").text == "tail a/b"
    assert client.get("/f/a").text == "tail a"


def test_parameter_before_path_tail_when_registered_first(make_client: Any) -> None:
    app = App()

    @app.get("/f/{name}")
    async def single(name: str) -> str:
        return f"single {name}"

    @app.get("/f/{rest:path}")
    async def tail(rest: str) -> str:
        return f"tail {rest}"

    client = make_client(app)
    assert client.get("/f/a").text == "single a"
    assert client.get("/f/a/b").text == "tail a/b"


def backtracking_app() -> App:
    app = App()

    @app.get("/users/me/{x:int}")
    async def me_number(x: int) -> str:
        return f"me number {x}"

    @app.get("/users/{uid}/posts")
    async def user_posts(uid: str) -> str:
        return f"posts of {uid}"

    return app


def test_backtracking(make_client: Any) -> None:
    client = make_client(backtracking_app())
    assert client.get("/users/me/posts").text == "posts of me"
    assert client.get("/users/me/5").text == "me number 5"
    assert client.get("/users/bob/posts").text == "posts of bob"
    assert client.get("/users/me/other").status_code == 404


def test_backtracking_on_method(make_client: Any) -> None:
    app = App()

    @app.get("/users/me")
    async def me() -> str:
        return "static get"

    @app.post("/users/{uid}")
    async def post_user(uid: str) -> str:
        return f"param post {uid}"

    client = make_client(app)
    assert client.get("/users/me").text == "static get"
    assert client.post("/users/me").text == "param post me"
    r = client.put("/users/me")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD, POST"


def test_deep_backtracking(make_client: Any) -> None:
    app = App()
    for index, path in enumerate(
        [
            "/a/b/c/d/{e:int}",
            "/a/b/c/{d}/e",
            "/a/b/{c}/d/f",
            "/a/{b}/c/d/g",
            "/{a}/b/c/d/h",
            "/{a}/{b}/{c}/{d}/{e}",
        ]
    ):

        async def endpoint(request: Request, index: int = index) -> Any:
            return {"route": index, "params": request.path_params}

        app.router.add_route(path, endpoint, name=f"r{index}")

    client = make_client(app)
    assert client.get("/a/b/c/d/7").json() == {"route": 0, "params": {"e": 7}}
    assert client.get("/a/b/c/d/e").json() == {"route": 1, "params": {"d": "d"}}
    assert client.get("/a/b/c/d/f").json() == {"route": 2, "params": {"c": "c"}}
    assert client.get("/a/b/c/d/g").json() == {"route": 3, "params": {"b": "b"}}
    assert client.get("/a/b/c/d/h").json() == {"route": 4, "params": {"a": "a"}}
    assert client.get("/a/b/c/d/z").json() == {
        "route": 5,
        "params": {"a": "a", "b": "b", "c": "c", "d": "d", "e": "z"},
    }
    assert client.get("/a/b/c/d").status_code == 404
    assert client.get("/a/b/c/d/z/y").status_code == 404


def test_no_params_leak_from_abandoned_branches(make_client: Any) -> None:
    app = App()

    @app.get("/{a}/{b:int}/x")
    async def first(request: Request) -> Any:
        return {"first": request.path_params}

    @app.get("/{c}/{d}/y")
    async def second(request: Request) -> Any:
        return {"second": request.path_params}

    client = make_client(app)
    assert client.get("/p/1/y").json() == {"second": {"c": "p", "d": "1"}}
    assert client.get("/p/1/x").json() == {"first": {"a": "p", "b": 1}}


def test_thousand_parametrised_routes(make_client: Any) -> None:
    app = App()
    shared = Router()
    for i in range(1000):

        async def endpoint(request: Request, x: int, i: int = i) -> Any:
            return {"i": i, "x": x}

        app.router.add_route(f"/r{i}/{{x:int}}", endpoint, name=f"r{i}")
        shared.add_route(f"/items/{{x:int}}/v{i}", endpoint, name=f"v{i}")
    app.mount("/shared", shared, name="shared")

    assert len(app.routes) == 1001
    client = make_client(app)
    assert client.get("/r999/5").json() == {"i": 999, "x": 5}
    assert client.get("/r500/7").json() == {"i": 500, "x": 7}
    assert client.get("/r0/1").json() == {"i": 0, "x": 1}
    assert client.get("/r1000/1").status_code == 404
    assert client.get("/r999/x").status_code == 404
    assert client.get("/shared/items/3/v999").json() == {"i": 999, "x": 3}
    assert client.get("/shared/items/4/v500").json() == {"i": 500, "x": 4}
    assert client.get("/shared/items/4/v1000").status_code == 404
    assert app.url_path_for("r999", x=5) == "/r999/5"
    assert app.url_path_for("shared:v500", x=4) == "/shared/items/4/v500"


def test_url_is_percent_decoded_once(make_client: Any) -> None:
    app = App()

    @app.get("/files/{name}")
    async def file(name: str) -> str:
        return name

    @app.get("/caf\u00e9")
    async def cafe() -> str:
        return "unicode static"

    client = make_client(app)
    assert client.get("/files/a%2520b").text == "a%20b"
    assert client.get("/caf%C3%A9").text == "unicode static"


# -- 405, HEAD, OPTIONS, 426 ----------------------------------------------------------


def test_405_allow_header_union_across_routes(make_client: Any) -> None:
    app = App()

    @app.get("/thing")
    async def get_thing() -> str:
        return "get"

    @app.post("/thing")
    async def post_thing() -> str:
        return "post"

    @app.get("/t/{id}")
    async def get_t(id: str) -> str:
        return "get"

    @app.put("/t/{id:int}")
    async def put_t(id: int) -> str:
        return "put"

    @app.route("/t/{id}", methods=["PATCH", "DELETE"])
    async def patch_t(id: str) -> str:
        return "patch"

    client = make_client(app)
    assert client.get("/thing").text == "get"
    assert client.post("/thing").text == "post"
    r = client.delete("/thing")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD, POST"
    r = client.post("/t/5")
    assert r.status_code == 405
    assert r.headers["allow"] == "DELETE, GET, HEAD, PATCH, PUT"
    r = client.post("/t/abc")
    assert r.status_code == 405
    assert r.headers["allow"] == "DELETE, GET, HEAD, PATCH"


def test_405_in_a_standalone_router(make_client: Any) -> None:
    router = Router()

    @router.post("/only-post")
    async def endpoint() -> str:
        return "post"

    r = make_client(router).get("/only-post")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"


def test_405_goes_through_app_exception_handler(make_client: Any) -> None:
    app = App()

    @app.post("/p")
    async def endpoint() -> str:
        return "post"

    @app.exception_handler(405)
    async def handler(request: Request, exc: HTTPException) -> PlainTextResponse:
        return PlainTextResponse("custom 405", 405, headers=exc.headers)

    r = make_client(app).get("/p")
    assert r.status_code == 405
    assert r.text == "custom 405"
    assert r.headers["allow"] == "POST"


def test_options_to_a_get_only_route_is_405(make_client: Any) -> None:
    app = App()

    @app.get("/x")
    async def endpoint() -> str:
        return "x"

    r = make_client(app).options("/x")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"


def head_app() -> App:
    app = App()

    @app.get("/json")
    async def as_json() -> Any:
        return {"hello": "world"}

    @app.get("/text/{name}")
    def as_text(name: str) -> str:
        return f"hello {name}"

    @app.get("/response")
    async def as_response() -> PlainTextResponse:
        return PlainTextResponse("with headers", headers={"x-custom": "1"})

    @app.get("/bytes")
    async def as_bytes(request: Request) -> bytes:
        return b"\x00" * 100

    sub = Router()

    @sub.get("/inner")
    async def inner() -> Any:
        return ["mounted"]

    app.mount("/sub", sub)
    return app


@pytest.mark.parametrize("path", ["/json", "/text/bob", "/response", "/bytes", "/sub/inner"])
def test_head_served_for_every_get_route(make_client: Any, path: str) -> None:
    client = make_client(head_app())
    get = client.get(path)
    head = client.head(path)
    assert get.status_code == head.status_code == 200
    assert head.content == b""
    assert int(get.headers["content-length"]) == len(get.content) > 0
    for name in ("content-length", "content-type", "x-custom"):
        assert head.headers.get(name) == get.headers.get(name)


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/json", "/text/bob", "/response", "/bytes", "/sub/inner"])
async def test_head_sends_no_body_bytes(path: str) -> None:
    app = head_app()
    get = await run_app(app, http_scope("GET", path))
    head = await run_app(app, http_scope("HEAD", path))
    assert head.status == get.status == 200
    assert head.body == b""
    assert get.body
    length = str(len(get.body)).encode()
    assert head.header(b"content-length") == get.header(b"content-length") == length


def test_get_on_websocket_only_path_is_426(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close()

    @app.websocket("/rooms/{room}")
    async def room(ws: WebSocket, room: str) -> None:
        await ws.close()

    client = make_client(app)
    for path in ["/ws", "/rooms/a"]:
        r = client.get(path)
        assert r.status_code == 426
        assert r.headers["upgrade"] == "websocket"
        assert client.post(path).status_code == 426


def test_http_and_websocket_on_the_same_path(make_client: Any) -> None:
    app = App()

    @app.get("/live")
    async def page() -> str:
        return "page"

    @app.websocket("/live")
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("socket")
        await ws.close()

    client = make_client(app)
    assert client.get("/live").text == "page"
    r = client.post("/live")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"
    with client.websocket_connect("/live") as ws:
        assert ws.receive_text(timeout=5) == "socket"


# -- 404 and slash redirects ----------------------------------------------------------


def slash_app() -> App:
    app = App()

    @app.route("/about", methods=["GET", "POST"])
    async def about(request: Request) -> str:
        return f"about {request.method}"

    @app.get("/dir/")
    async def directory() -> str:
        return "dir"

    @app.get("/users/{uid:int}")
    async def user(uid: int) -> str:
        return f"user {uid}"

    @app.get("/")
    async def root() -> str:
        return "root"

    api = Router()

    @api.get("/items")
    async def items() -> str:
        return "items"

    @api.get("/")
    async def api_root() -> str:
        return "api root"

    app.mount("/api", api)
    return app


def test_404_for_no_match(make_client: Any) -> None:
    client = make_client(slash_app())
    for path in ["/nope", "/about/more", "/users/x", "/dir/x", "/api/nope"]:
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 404, path
        assert "location" not in r.headers


def test_404_in_a_standalone_router(make_client: Any) -> None:
    router = Router()

    @router.get("/a")
    async def a() -> str:
        return "a"

    assert make_client(router).get("/b").status_code == 404


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("/about/", "/about"),
        ("/about/?x=1&y=%20", "/about?x=1&y=%20"),
        ("/dir", "/dir/"),
        ("/dir?q=1", "/dir/?q=1"),
        ("/users/5/", "/users/5"),
        ("/api/items/", "/api/items"),
        ("/api", "/api/"),
        ("/api?x=y", "/api/?x=y"),
    ],
)
def test_trailing_slash_redirect(make_client: Any, url: str, location: str) -> None:
    client = make_client(slash_app())
    r = client.get(url, follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == location
    followed = client.get(url)
    assert followed.status_code == 200


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("/about/?a=b", "/prefix/about?a=b"),
        ("/prefix/about/", "/prefix/about"),
        ("/dir", "/prefix/dir/"),
        ("/api/items/?q=1", "/prefix/api/items?q=1"),
        ("/api", "/prefix/api/"),
    ],
)
def test_trailing_slash_redirect_keeps_root_path(make_client: Any, url: str, location: str) -> None:
    client = make_client(slash_app(), root_path="/prefix")
    r = client.get(url, follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == location


def test_trailing_slash_redirect_keeps_method(make_client: Any) -> None:
    client = make_client(slash_app())
    r = client.post("/about/", follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == "/about"
    assert client.post("/about/").text == "about POST"


def test_no_redirect_when_neither_form_matches(make_client: Any) -> None:
    client = make_client(slash_app())
    for url in ["/nothing/", "/nothing", "/users/x/", "/about/x/"]:
        r = client.get(url, follow_redirects=False)
        assert r.status_code == 404, url
        assert "location" not in r.headers


def test_no_redirect_when_slashes_redirect_disabled(make_client: Any) -> None:
    app = App(redirect_slashes=False)

    @app.get("/about")
    async def about() -> str:
        return "about"

    r = make_client(app).get("/about/", follow_redirects=False)
    assert r.status_code == 404


@pytest.mark.anyio
@pytest.mark.parametrize("root_path", ["", "/prefix"])
@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("//evil.com", "//evil.com/"),
        ("//evil.com/", "//evil.com"),
        ("//evil.com/x", "//evil.com/x/"),
        ("///evil.com", "///evil.com/"),
        ("/{host}", "/\\evil.com/"),
        ("/{a}/{b}", "/\t/evil.com/"),
    ],
)
async def test_redirect_location_never_protocol_relative(
    root_path: str, template: str, path: str
) -> None:
    app = App()
    app.router.add_route(template, lambda: "reached")
    ex = await run_app(app, http_scope("GET", root_path + path, root_path=root_path))
    assert ex.status in (307, 404)
    raw_location = ex.header(b"location")
    if raw_location is not None:
        location = raw_location.decode()
        # Browsers read "//host", "/\\host" and "/<tab>/host" as another site.
        assert location.startswith(root_path + "/")
        assert not location.startswith("//")
        assert not location.startswith("/\\")
        assert "\t" not in location


@pytest.mark.anyio
async def test_invalid_path_is_not_a_500() -> None:
    app = App()

    @app.get("/")
    async def root() -> str:
        return "root"

    ex = await run_app(app, http_scope("GET", "no-leading-slash"))
    assert ex.status is not None
    assert 400 <= ex.status < 500


# -- mounts ---------------------------------------------------------------------------


def test_mount_raw_asgi_app_sees_root_path_and_path(make_client: Any) -> None:
    app = App()
    app.mount("/raw", echo_scope)
    client = make_client(app)
    assert client.get("/raw/a/b").json() == {
        "path": "/raw/a/b",
        "root_path": "/raw",
        "path_params": {},
        "method": "GET",
    }
    assert client.post("/raw/").json()["method"] == "POST"
    assert client.get("/raw/").json()["path"] == "/raw/"
    r = client.get("/raw", follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == "/raw/"
    assert client.get("/rawx").status_code == 404


def test_mount_with_outer_root_path(make_client: Any) -> None:
    app = App()
    app.mount("/raw", echo_scope)
    data = make_client(app, root_path="/prefix").get("/raw/a").json()
    assert data["path"] == "/prefix/raw/a"
    assert data["root_path"] == "/prefix/raw"


@pytest.mark.parametrize("child_kind", ["app", "router"])
def test_mount_app_or_router(make_client: Any, child_kind: str) -> None:
    parent = App()
    child: Any = App() if child_kind == "app" else Router()

    @child.get("/hello/{name}")
    async def hello(request: Request, name: str) -> Any:
        return {
            "name": name,
            "path": request.scope["path"],
            "root_path": request.scope["root_path"],
            "url": str(request.url),
        }

    @child.get("/")
    async def child_root() -> str:
        return "child root"

    parent.mount("/child", child)
    client = make_client(parent)
    assert client.get("/child/hello/bob").json() == {
        "name": "bob",
        "path": "/child/hello/bob",
        "root_path": "/child",
        "url": "http://testserver/child/hello/bob",
    }
    assert client.get("/child/").text == "child root"
    assert client.get("/child/nope").status_code == 404
    r = client.delete("/child/hello/bob")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"


def test_nested_mounts(make_client: Any) -> None:
    app = App()
    level1 = Router()
    level2 = App()
    level2.mount("/raw", echo_scope)

    @level2.get("/deep")
    async def deep(request: Request) -> Any:
        return {"path": request.scope["path"], "root_path": request.scope["root_path"]}

    level1.mount("/b", level2)
    app.mount("/a", level1)
    client = make_client(app, root_path="/p")
    assert client.get("/a/b/deep").json() == {"path": "/p/a/b/deep", "root_path": "/p/a/b"}
    data = client.get("/a/b/raw/x/y").json()
    assert data["path"] == "/p/a/b/raw/x/y"
    assert data["root_path"] == "/p/a/b/raw"


def test_mount_with_path_parameter(make_client: Any) -> None:
    app = App()
    org = Router()

    @org.get("/users/{uid}")
    async def user(request: Request, uid: str) -> Any:
        org_id = request.path_params["org_id"]
        return {"uid": uid, "params": request.path_params, "type": type(org_id).__name__}

    @org.get("/info")
    def info(request: Request) -> Any:
        return {"params": request.path_params}

    app.mount("/org/{org_id:int}", org, name="org")
    app.mount("/raw/{org_id:int}", echo_scope)
    client = make_client(app)
    assert client.get("/raw/7/x").json()["path_params"] == {"org_id": "7"}
    r = client.get("/org/5/users/abc")
    assert r.status_code == 200
    assert r.json() == {"uid": "abc", "params": {"org_id": 5, "uid": "abc"}, "type": "int"}
    r = client.get("/org/5/info")
    assert r.status_code == 200
    assert r.json() == {"params": {"org_id": 5}}
    assert client.get("/org/x/users/abc").status_code == 404


def test_mount_with_path_parameter_partial_binding(make_client: Any) -> None:
    """Endpoints that do not take every parameter by name also see the mount's."""
    app = App()
    org = Router()

    @org.get("/users/{uid}/{extra}")
    async def user(request: Request, uid: str) -> Any:
        return {"uid": uid, "params": request.path_params}

    app.mount("/org/{org_id:int}", org)
    r = make_client(app).get("/org/5/users/abc/e")
    assert r.status_code == 200
    assert r.json() == {"uid": "abc", "params": {"org_id": 5, "uid": "abc", "extra": "e"}}


def test_mount_at_root_is_tried_after_routes(make_client: Any) -> None:
    app = App()
    app.mount("/", echo_scope)  # registered first, still last

    @app.get("/x")
    async def x() -> str:
        return "route x"

    @app.get("/{name}/detail")
    async def detail(name: str) -> str:
        return f"detail {name}"

    client = make_client(app)
    assert client.get("/x").text == "route x"
    assert client.get("/foo/detail").text == "detail foo"
    data = client.get("/foo/bar").json()
    assert data == {"path": "/foo/bar", "root_path": "", "path_params": {}, "method": "GET"}
    assert client.get("/").json()["path"] == "/"
    # A method that the route does not take goes to the catch-all mount.
    assert client.post("/x").json()["method"] == "POST"


def test_static_route_beats_mount_with_same_prefix(make_client: Any) -> None:
    app = App()
    app.mount("/api", echo_scope)

    @app.get("/api/special")
    async def special() -> str:
        return "special route"

    client = make_client(app)
    assert client.get("/api/special").text == "special route"
    assert client.get("/api/other").json()["root_path"] == "/api"


def test_per_route_middleware(make_client: Any) -> None:
    app = App()
    router = Router()

    @app.get("/with", middleware=[Middleware(AddHeader, value="route")])
    async def with_mw() -> str:
        return "with"

    @app.get("/without")
    async def without() -> str:
        return "without"

    @router.post("/r", middleware=[Middleware(AddHeader, name="x-router", value="r")])
    def router_route() -> str:
        return "r"

    @router.post("/r2")
    def router_route2() -> str:
        return "r2"

    app.mount("/router", router)
    client = make_client(app)
    assert client.get("/with").headers["x-mw"] == "route"
    assert "x-mw" not in client.get("/without").headers
    assert client.post("/router/r").headers["x-router"] == "r"
    assert "x-router" not in client.post("/router/r2").headers


def test_per_route_middleware_on_websocket_route(make_client: Any) -> None:
    seen: list[str] = []

    class Record:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["path"])
            await self.app(scope, receive, send)

    app = App()

    @app.websocket("/ws", middleware=[Middleware(Record)])
    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("hi")
        await ws.close()

    @app.websocket("/other")
    async def other(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("other")
        await ws.close()

    client = make_client(app)
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_text(timeout=5) == "hi"
    with client.websocket_connect("/other") as ws:
        assert ws.receive_text(timeout=5) == "other"
    assert seen == ["/ws"]


def test_per_mount_middleware(make_client: Any) -> None:
    app = App()
    sub = Router()

    @sub.get("/a")
    async def a() -> str:
        return "a"

    @app.get("/outside")
    async def outside() -> str:
        return "outside"

    app.mount("/sub", sub, middleware=[Middleware(AddHeader, value="mount")])
    app.mount("/raw", echo_scope, middleware=[Middleware(AddHeader, name="x-raw", value="raw")])
    app.mount("/plain", echo_scope)
    client = make_client(app)
    assert client.get("/sub/a").headers["x-mw"] == "mount"
    assert "x-mw" not in client.get("/outside").headers
    assert client.get("/raw/x").headers["x-raw"] == "raw"
    assert "x-raw" not in client.get("/plain/x").headers
    assert "x-mw" not in client.get("/plain/x").headers


def test_router_level_middleware_only_for_that_router(make_client: Any) -> None:
    app = App()
    sub = Router(middleware=[Middleware(AddHeader, value="router")])

    @sub.get("/a")
    async def a() -> str:
        return "a"

    @app.get("/b")
    async def b() -> str:
        return "b"

    app.mount("/sub", sub)
    client = make_client(app)
    assert client.get("/sub/a").headers["x-mw"] == "router"
    assert "x-mw" not in client.get("/b").headers


def test_mounted_lifespan_state_reaches_its_requests(make_client: Any) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def parent_lifespan(app: Any) -> Any:
        events.append("parent start")
        yield {"parent": "p"}
        events.append("parent stop")

    @asynccontextmanager
    async def child_lifespan(app: Any) -> Any:
        events.append("child start")
        yield {"child": "c"}
        events.append("child stop")

    app = App(lifespan=parent_lifespan)
    child = Router(lifespan=child_lifespan)

    @child.get("/state")
    async def state(request: Request) -> Any:
        return {"parent": request.state.parent, "child": request.state.child}

    app.mount("/child", child)
    with make_client(app) as client:
        assert events == ["parent start", "child start"]
        assert client.get("/child/state").json() == {"parent": "p", "child": "c"}
    assert events[2:] == ["child stop", "parent stop"]


# -- url_path_for and request.url_for -------------------------------------------------


def url_app() -> App:
    app = App()

    @app.get("/users/{user_id:int}", name="user")
    async def user(request: Request, user_id: int) -> str:
        return str(request.url_for("user", user_id=user_id))

    @app.get("/links")
    async def links(request: Request) -> Any:
        return {
            "user": str(request.url_for("user", user_id=3)),
            "item": str(request.url_for("api:item", item_id=4)),
            "deep": str(request.url_for("api:v1:thing", name="t")),
            "org": str(request.url_for("org:member", org_id=9, member="m")),
            "static": str(request.url_for("static", path="css/site.css")),
            "child": str(request.url_for("child_route")),
        }

    api = Router()

    @api.get("/items/{item_id:int}", name="item")
    async def item(request: Request, item_id: int) -> Any:
        return {
            "self": str(request.url_for("api:item", item_id=item_id)),
            "outer": str(request.url_for("user", user_id=1)),
        }

    v1 = App()

    @v1.get("/things/{name}", name="thing")
    async def thing(request: Request, name: str) -> Any:
        return {
            "self": str(request.url_for("api:v1:thing", name=name)),
            "outer": str(request.url_for("user", user_id=2)),
        }

    api.mount("/v1", v1, name="v1")
    app.mount("/api", api, name="api")

    org = Router()

    @org.get("/members/{member}", name="member")
    async def member(request: Request, member: str) -> str:
        org_id = request.path_params["org_id"]
        return str(request.url_for("org:member", org_id=org_id, member=member))

    app.mount("/org/{org_id:int}", org, name="org")

    unnamed = Router()

    @unnamed.get("/route", name="child_route")
    async def child_route() -> str:
        return "child"

    app.mount("/unnamed", unnamed)
    app.mount("/static", echo_scope, name="static")
    return app


def test_url_path_for_simple_and_mounts() -> None:
    app = url_app()
    assert app.url_path_for("user", user_id=3) == "/users/3"
    assert app.url_path_for("links") == "/links"
    assert app.url_path_for("api:item", item_id=4) == "/api/items/4"
    assert app.url_path_for("api:v1:thing", name="x") == "/api/v1/things/x"
    assert app.url_path_for("org:member", org_id=9, member="m") == "/org/9/members/m"
    assert app.url_path_for("child_route") == "/unnamed/route"
    assert app.url_path_for("static", path="css/site.css") == "/static/css/site.css"
    assert app.url_path_for("static", path="/css/site.css") == "/static/css/site.css"
    # The mounted routers answer for their own names too.
    api = app.routes[2].mounted  # type: ignore[attr-defined]
    assert api.url_path_for("item", item_id=1) == "/items/1"
    assert api.url_path_for("v1:thing", name="y") == "/v1/things/y"


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("nope", {}),
        ("user", {}),  # missing parameter
        ("user", {"user_id": 1, "extra": 2}),  # extra parameter
        ("user", {"userid": 1}),
        ("item", {"item_id": 1}),  # needs the mount name
        ("api:nope", {}),
        ("api:item", {}),
        ("api:thing", {"name": "x"}),  # needs the nested mount name
        ("v1:thing", {"name": "x"}),
        ("org:member", {"member": "m"}),  # missing the mount parameter
        ("other:item", {"item_id": 1}),
        ("unnamed:child_route", {}),
    ],
)
def test_url_path_for_no_match(name: str, params: dict[str, Any]) -> None:
    app = url_app()
    with pytest.raises(NoMatchFound) as info:
        app.url_path_for(name, **params)
    assert isinstance(info.value, LookupError)
    with pytest.raises(LookupError):
        app.router.url_path_for(name, **params)


def test_request_url_for(make_client: Any) -> None:
    client = make_client(url_app())
    assert client.get("/users/7").text == "http://testserver/users/7"
    assert client.get("/links").json() == {
        "user": "http://testserver/users/3",
        "item": "http://testserver/api/items/4",
        "deep": "http://testserver/api/v1/things/t",
        "org": "http://testserver/org/9/members/m",
        "static": "http://testserver/static/css/site.css",
        "child": "http://testserver/unnamed/route",
    }


def test_request_url_for_inside_mounts(make_client: Any) -> None:
    client = make_client(url_app())
    assert client.get("/api/items/4").json() == {
        "self": "http://testserver/api/items/4",
        "outer": "http://testserver/users/1",
    }
    assert client.get("/api/v1/things/t").json() == {
        "self": "http://testserver/api/v1/things/t",
        "outer": "http://testserver/users/2",
    }


def test_request_url_for_inside_a_parametrised_mount(make_client: Any) -> None:
    client = make_client(url_app())
    assert client.get("/org/9/members/m").text == "http://testserver/org/9/members/m"


def test_request_url_for_with_root_path(make_client: Any) -> None:
    client = make_client(url_app(), root_path="/prefix")
    assert client.get("/users/7").text == "http://testserver/prefix/users/7"
    assert client.get("/links").json()["deep"] == "http://testserver/prefix/api/v1/things/t"
    assert client.get("/api/items/4").json() == {
        "self": "http://testserver/prefix/api/items/4",
        "outer": "http://testserver/prefix/users/1",
    }
    assert client.get("/api/v1/things/t").json() == {
        "self": "http://testserver/prefix/api/v1/things/t",
        "outer": "http://testserver/prefix/users/2",
    }


@pytest.mark.parametrize("root_path", ["", "/prefix"])
def test_request_url_for_with_a_router_as_the_outermost_app(
    make_client: Any, root_path: str
) -> None:
    outer = Router()
    inner = Router()

    @outer.get("/top", name="top")
    async def top(request: Request) -> str:
        return str(request.url_for("top"))

    @inner.get("/x", name="x")
    async def x(request: Request) -> Any:
        return [str(request.url_for("inner:x")), str(request.url_for("top"))]

    outer.mount("/inner", inner, name="inner")
    client = make_client(outer, root_path=root_path)
    assert client.get("/top").text == f"http://testserver{root_path}/top"
    assert client.get("/inner/x").json() == [
        f"http://testserver{root_path}/inner/x",
        f"http://testserver{root_path}/top",
    ]


def test_request_url_for_unknown_name_is_an_error(make_client: Any) -> None:
    app = App()

    @app.get("/x")
    async def x(request: Request) -> str:
        try:
            request.url_for("missing")
        except NoMatchFound:
            return "no match"
        return "found?"

    assert make_client(app).get("/x").text == "no match"


def test_parameters_with_different_names_share_one_trie_branch(make_client: Any) -> None:
    """Branches are keyed by convertor, so 1,000 differently named params stay one branch."""
    app = App()
    for i in range(1000):

        async def endpoint(request: Request, _i: int = i) -> dict[str, Any]:
            return {"route": _i, "params": request.path_params}

        app.router.add_route(f"/x/{{p{i}}}/r{i}", endpoint)
    root_params = app.router._trie.root.static["x"].params
    assert len(root_params) == 1  # one shared `str` branch, not 1,000
    client = make_client(app)
    assert client.get("/x/abc/r999").json() == {"route": 999, "params": {"p999": "abc"}}
    assert client.get("/x/abc/r5").json() == {"route": 5, "params": {"p5": "abc"}}
    assert client.get("/x/abc/r1000").status_code == 404


def test_named_raw_mount_path_and_root_path_are_percent_encoded(make_client: Any) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    app = App()
    app.mount("/legacy", raw, name="legacy")

    @app.get("/where")
    async def where(request: Request) -> str:
        return str(request.url_for("legacy", path="a b/c"))

    assert app.url_path_for("legacy", path="a b/c") == "/legacy/a%20b/c"
    client = make_client(app, root_path="/my app")
    assert client.get("/my app/where").text == "http://testserver/my%20app/legacy/a%20b/c"


def test_named_mount_of_a_plain_app_needs_the_path_parameter() -> None:
    app = url_app()
    with pytest.raises(NoMatchFound):
        app.url_path_for("static")
    with pytest.raises(NoMatchFound):
        app.url_path_for("static", path="a", other="b")
    assert app.url_path_for("static", path="") == "/static/"


def test_named_mount_of_a_router_is_addressable_with_a_path() -> None:
    app = url_app()
    assert app.url_path_for("api", path="/anything") == "/api/anything"


# -- route names and reprs -------------------------------------------------------------


def test_callable_object_endpoint_is_named_after_its_class(make_client: Any) -> None:
    class Greeter:
        async def __call__(self, request: Request) -> str:
            return "hi"

    app = App()
    route = app.router.add_route("/greet", Greeter())
    assert route.name == "Greeter"
    assert app.url_path_for("Greeter") == "/greet"
    assert make_client(app).get("/greet").text == "hi"


def test_reprs_say_what_routes_are() -> None:
    from microasgi.routing import Mount, Route, WebSocketRoute

    async def users(request: Request) -> str:
        return ""

    async def chat(ws: WebSocket) -> None: ...

    route = Route("/users/{uid:int}", users, methods=["GET", "POST"])
    assert repr(route) == (
        "Route('/users/{uid:int}', test_reprs_say_what_routes_are.<locals>.users, "
        "methods=['GET', 'HEAD', 'POST'], name='users')"
    )
    assert repr(WebSocketRoute("/ws", chat, name="room")) == (
        "WebSocketRoute('/ws', test_reprs_say_what_routes_are.<locals>.chat, name='room')"
    )
    router = Router()
    assert repr(Mount("/api/", router, name="api")) == f"Mount('/api', {router!r}, name='api')"
    assert repr(Mount("/", router)) == f"Mount('/', {router!r})"


# -- the path below root_path -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("/app/users", "/app", "/users"),
        ("/app", "/app", ""),  # the root itself
        ("/app/", "/app", "/"),
        ("/application/users", "/app", None),  # not at a segment boundary
        ("/other/users", "/app", None),  # the server did not prefix it
    ],
)
def test_below_root_cuts_only_at_a_segment_boundary(
    path: str, root: str, expected: str | None
) -> None:
    from microasgi._paths import below_root

    assert below_root(path, root) == expected


@pytest.mark.parametrize(
    ("path", "routed"),
    [
        ("/app/users", "/users"),
        ("/app", "/"),  # the root itself is "/" to the router
        ("/app/", "/"),
        ("/application/users", "/application/users"),
        ("/other/users", "/other/users"),
    ],
)
def test_router_routes_the_path_below_root_path(make_client: Any, path: str, routed: str) -> None:
    app = App()

    @app.get("/{rest:path}")
    async def rest(request: Request, rest: str) -> str:
        return "/" + rest

    @app.get("/")
    async def top() -> str:
        return "/"

    response = make_client(app, root_path="/app").get(path)
    assert response.text == routed


def test_path_not_under_root_path_is_routed_as_is(make_client: Any) -> None:
    app = App()

    @app.get("/application/users")
    async def users() -> str:
        return "found by the whole path"

    exchange = anyio.run(
        lambda: run_app(app, http_scope("GET", "/application/users", root_path="/app"))
    )
    assert exchange.body == b"found by the whole path"


def test_path_tail_with_a_wrong_method_is_405(make_client: Any) -> None:
    app = App()

    @app.get("/files/{rest:path}")
    async def files(rest: str) -> str:
        return rest

    client = make_client(app)
    assert client.get("/files/a/b/c").text == "a/b/c"
    r = client.post("/files/a/b/c")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"


def test_path_tail_wrong_method_falls_through_to_a_later_route(make_client: Any) -> None:
    app = App()

    @app.get("/files/{rest:path}")
    async def read(rest: str) -> str:
        return "read " + rest

    @app.post("/files/{rest:path}")
    async def write(rest: str) -> str:
        return "wrote " + rest

    client = make_client(app)
    assert client.post("/files/x/y").text == "wrote x/y"
    assert client.get("/files/x/y").text == "read x/y"


# -- the endpoint pipeline: the short path and the general one give the same answer ----------


def endpoints_returning(value: Any) -> dict[str, Any]:
    """Endpoints returning `value`, one per way the route may call them."""

    async def connection_first(request: Request, item: int) -> Any:
        assert item == 5, item  # a wrong value would be a 500
        return value

    async def params_only(item: int) -> Any:
        assert item == 5, item  # a wrong value would be a 500
        return value

    async def connection_keywords(request: Request, *, item: int) -> Any:
        assert item == 5, item  # a wrong value would be a 500
        return value

    async def params_keywords(*, item: int) -> Any:
        assert item == 5, item  # a wrong value would be a 500
        return value

    async def keywords(item: int, request: Request) -> Any:  # connection not first
        assert item == 5, item  # a wrong value would be a 500
        return value

    async def with_tasks(item: int, tasks: BackgroundTasks) -> Any:
        assert item == 5, item  # a wrong value would be a 500
        return value

    def sync(request: Request, item: int) -> Any:
        assert item == 5, item  # a wrong value would be a 500
        return value

    return {
        "connection_first": connection_first,
        "params_only": params_only,
        "connection_keywords": connection_keywords,
        "params_keywords": params_keywords,
        "keywords": keywords,
        "with_tasks": with_tasks,
        "sync": sync,
    }


RETURN_VALUES = [
    {"id": 1, "name": "é"},
    [1, "two", None],
    "plain text ✓",
    b"\x00bytes",
    None,
    PlainTextResponse("a response", status_code=201, headers={"x-custom": "1"}),
]


@pytest.mark.parametrize("value", RETURN_VALUES, ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("middleware", [False, True], ids=["direct", "function-middleware"])
def test_every_call_path_gives_the_same_response(value: Any, method: str, middleware: bool) -> None:
    """Route.handle, and Route._produce under a function middleware, each with
    their short path and the general one."""
    from microasgi._endpoints import CallShape

    endpoints = endpoints_returning(value)
    app = App()
    for name, endpoint in endpoints.items():
        app.get(f"/{name}/{{item:int}}")(endpoint)
    if middleware:

        @app.middleware
        async def pass_on(request: Request, call_next: Any) -> Any:
            return await call_next(request)

    routes = {route.path.split("/")[1]: route for route in app.routes}
    # Each endpoint takes the path it is meant to (the short path: async and a short shape).
    # The short shapes pass a lone path parameter by position when it may be.
    calls = {name: route._call for name, route in routes.items()}  # type: ignore[attr-defined]
    assert {name: (call.shape, call.only) for name, call in calls.items()} == {
        "connection_first": (CallShape.CONNECTION_FIRST, "item"),
        "params_only": (CallShape.PARAMS, "item"),
        "connection_keywords": (CallShape.CONNECTION_FIRST, None),
        "params_keywords": (CallShape.PARAMS, None),
        "keywords": (CallShape.KEYWORDS, None),
        "with_tasks": (CallShape.KEYWORDS, None),
        "sync": (CallShape.CONNECTION_FIRST, "item"),  # not async: the general path
    }
    assert [name for name, call in calls.items() if not call.direct] == [
        "keywords",
        "with_tasks",
        "sync",
    ]
    answers = {}
    for name in endpoints:
        exchange = anyio.run(lambda n=name: run_app(app, http_scope(method, f"/{n}/5")))
        answers[name] = (exchange.status, exchange.headers, exchange.body)
    reference = answers["keywords"]
    assert all(answer == reference for answer in answers.values()), answers


def test_a_decorated_endpoint_gets_its_parameter_by_keyword(make_client: Any) -> None:
    """The signature is read through `functools.wraps` (the wrapped function's),
    but the wrapper is what is called: its own signature decides whether the
    lone path parameter may go by position."""

    def by_keywords(func: Any) -> Any:
        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await func(*args, **kwargs)

        return wrapper

    def request_then_keywords(func: Any) -> Any:
        @functools.wraps(func)
        async def wrapper(request: Request, **kwargs: Any) -> Any:
            return await func(request, **kwargs)

        return wrapper

    def same_signature(func: Any) -> Any:
        @functools.wraps(func)
        async def wrapper(request: Request, item: int) -> Any:
            return await func(request, item)

        return wrapper

    app = App()

    @app.get("/a/{item:int}")
    @request_then_keywords
    async def a(request: Request, item: int) -> dict[str, int]:
        return {"item": item}

    @app.get("/b/{item:int}")
    @by_keywords
    async def b(item: int) -> dict[str, int]:
        return {"item": item}

    @app.get("/c/{item:int}")
    @same_signature
    async def c(request: Request, item: int) -> dict[str, int]:
        return {"item": item}

    client = make_client(app)
    for path in ("a", "b", "c"):
        assert client.get(f"/{path}/7").json() == {"item": 7}
    calls = {route.path[1]: route._call for route in app.routes}  # type: ignore[attr-defined]
    assert {key: call.only for key, call in calls.items()} == {"a": None, "b": None, "c": "item"}


class SingleCallable:
    """A middleware that checks its app the way OpenTelemetry's ASGI middleware
    does (asgiref's guarantee_single_callable): a plain function would be taken
    for an old two-step ASGI 2 app."""

    def __init__(self, app: Any) -> None:
        from asgiref.compatibility import guarantee_single_callable

        self.app = guarantee_single_callable(app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def test_the_app_awaits_the_router_directly_without_middleware(make_client: Any) -> None:
    """With nothing around the router, the App awaits the router's work without
    dispatch's coroutine frame; a middleware gets `dispatch`, which is a
    coroutine function, as middleware that tell ASGI 3 apps apart require."""
    import inspect

    def build(middleware: list[Middleware]) -> App:
        app = App(middleware=middleware)

        @app.get("/items/{item:int}")
        async def item(item: int) -> dict[str, int]:
            return {"item": item}

        return app

    bare = build([])
    assert make_client(bare).get("/items/3").json() == {"item": 3}
    assert bare._stack == bare.router._resolve
    assert inspect.iscoroutinefunction(bare.router.dispatch)

    wrapped = build([Middleware(SingleCallable)])
    assert make_client(wrapped).get("/items/4").json() == {"item": 4}
    router = Router(middleware=[Middleware(SingleCallable)])
    router.add_route("/r/{item:int}", build([]).routes[0].endpoint)
    assert make_client(router).get("/r/5").json() == {"item": 5}


def test_an_overridden_dispatch_runs_with_and_without_middleware(make_client: Any) -> None:
    """The shortcut past dispatch's frame is only taken for Router's own dispatch."""
    seen: list[str] = []

    class Tracing(Router):
        async def dispatch(self, scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["path"])
            await super().dispatch(scope, receive, send)

    async def hello() -> str:
        return "hello"

    for middleware in ([], [Middleware(AddHeader)]):
        alone = Tracing(middleware=middleware)
        alone.add_route("/alone", hello)
        app = App(middleware=middleware)
        app.router = Tracing()
        app.add_route("/in-app", hello)
        seen.clear()
        assert make_client(alone).get("/alone").text == "hello"
        assert make_client(app).get("/in-app").text == "hello"
        assert seen == ["/alone", "/in-app"], middleware


def test_short_path_is_not_taken_with_a_mounts_parameters(make_client: Any) -> None:
    router = Router()

    @router.get("/items/{item:int}")
    async def item(request: Request, item: int) -> dict[str, Any]:
        return {"item": item, "all": request.path_params}

    app = App()
    app.mount("/org/{org}", router)
    assert make_client(app).get("/org/acme/items/3").json() == {
        "item": 3,
        "all": {"org": "acme", "item": 3},
    }


# -- the matched path template in the scope ---------------------------------------------------


class RecordTemplate:
    """An outer pure-ASGI middleware reading scope["path_template"] as the response starts."""

    def __init__(self, app: Any, seen: list[Any]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.seen.append(scope.get("path_template"))
            await send(message)

        await self.app(scope, receive, watch)
        self.seen.append(scope.get("path_template"))


def test_the_matched_path_template_is_in_the_scope(make_client: Any) -> None:
    seen: list[Any] = []
    app = App(middleware=[Middleware(RecordTemplate, seen=seen)])

    @app.get("/users/{user_id:int}")
    async def user(request: Request, user_id: int) -> str:
        return str(request.scope["path_template"])

    api = Router()

    @api.get("/items/{item_id}")
    async def item(request: Request, item_id: str) -> str:
        return str(request.scope["path_template"])

    v2 = Router()

    @v2.get("/things/{name}")
    async def thing(request: Request, name: str) -> str:
        return str(request.scope["path_template"])

    api.mount("/v2", v2)
    app.mount("/org/{org}/api", api)

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse(str(scope.get("path_template")))(scope, receive, send)

    app.mount("/static", raw)

    client = make_client(app)
    assert client.get("/users/7").text == "/users/{user_id:int}"
    assert client.get("/org/acme/api/items/3").text == "/org/{org}/api/items/{item_id}"
    assert client.get("/org/acme/api/v2/things/x").text == "/org/{org}/api/v2/things/{name}"
    assert client.get("/static/css/site.css").text == "/static"
    assert client.get("/nowhere").status_code == 404
    assert seen == [
        "/users/{user_id:int}",
        "/users/{user_id:int}",
        "/org/{org}/api/items/{item_id}",
        "/org/{org}/api/items/{item_id}",
        "/org/{org}/api/v2/things/{name}",
        "/org/{org}/api/v2/things/{name}",
        "/static",
        "/static",
        None,  # no route matched: no template
        None,
    ]
