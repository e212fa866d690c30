"""Router, Route, WebSocketRoute and Mount."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from microasgi._endpoints import Endpoint
from microasgi._errors import ErrorGuard, errors_for
from microasgi._paths import NoMatchFound, PathTemplate, SegmentTrie, search
from microasgi._stack import Middleware, wrap
from microasgi.datastructures import quote_path
from microasgi.exceptions import HTTPException
from microasgi.requests import MAX_BODY_SIZE_KEY, Request
from microasgi.responses import RedirectResponse
from microasgi.responses._base import (
    JSON_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    encode_json,
    send_body,
    to_response,
)
from microasgi.types import ASGIApp, Receive, Scope, Send
from microasgi.websockets import MAX_MESSAGE_SIZE_KEY, WebSocket, WebSocketState

__all__ = ["BaseRoute", "Mount", "NoMatchFound", "Route", "Router", "WebSocketRoute"]

F = TypeVar("F", bound=Callable[..., Any])
_UNSET: Any = object()
_WEBSOCKET = "WEBSOCKET"  # the "method" a websocket scope is routed with


class BaseRoute:
    """Something the router can match: a path template, a name and an ASGI app."""

    template: PathTemplate
    param_names: tuple[str, ...]  # the template's, kept here for the dispatch hot path
    is_mount = False
    name: str | None
    methods: frozenset[str]
    app: ASGIApp

    def url_path_for(self, name: str, params: dict[str, Any]) -> str | None:
        if name != self.name or set(params) != set(self.template.param_convertors):
            return None
        return self.template.format(params)


class Route(BaseRoute):
    """An HTTP endpoint at a path for some methods (GET also answers HEAD)."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Collection[str] | None = None,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        max_body_size: int | None = _UNSET,
    ) -> None:
        self.template = PathTemplate(path)
        self.param_names = self.template.param_names
        self.path = path
        self.endpoint = endpoint
        self.name = name if name is not None else getattr(endpoint, "__name__", None)
        wanted = {m.upper() for m in (methods or ("GET",))}
        if "GET" in wanted:
            wanted.add("HEAD")
        self.methods = frozenset(wanted)
        if max_body_size is not _UNSET:
            self.handle = self._handle_with_limit  # type: ignore[method-assign]
        self.max_body_size = max_body_size
        self._call = Endpoint(
            endpoint,
            path=path,
            path_params=self.template.param_convertors,
            connection_class=Request,
            connection_names=("request",),
        )
        self.app = _guarded(self.handle, middleware)

    async def _handle_with_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[MAX_BODY_SIZE_KEY] = self.max_body_size
        await Route.handle(self, scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Nothing has been sent until the end of the try block, so errors are
        # answered here (inside any middleware, which sees the answer go by).
        request = None
        try:
            call = self._call
            params = scope["path_params"]
            if call.mode and call.is_async and len(params) == call.param_count:
                # The usual shapes, called here without one more coroutine layer.
                if call.mode == 2:
                    request = Request(scope, receive, send)
                    result = await call.func(request, **params)
                else:
                    result = await call.func(**params)
                kind = type(result)
                # dict, list and str are sent without building a Response object.
                if kind is dict or kind is list:
                    body, content_type = encode_json(result), JSON_CONTENT_TYPE
                elif kind is str:
                    body, content_type = result.encode("utf-8"), TEXT_CONTENT_TYPE
                else:
                    body, response = None, to_response(result, self.endpoint)
            else:
                request = Request(scope, receive, send)
                result, background = await call(request, params)
                body, response = None, to_response(result, self.endpoint)
                if background is not None and background.tasks:
                    if response.background is not None:
                        background.tasks.insert(0, response.background)
                    response.background = background
        except Exception as exc:
            await errors_for(scope).http_error(exc, scope, receive, send)
            if request is not None and request._form is not None:
                await request.close()
            return
        try:
            if body is not None:
                await send_body(scope, send, body, content_type)
            else:
                await response(scope, receive, send)
        finally:
            if request is not None and request._form is not None:
                await request.close()  # uploaded files go away with the request

    def __repr__(self) -> str:
        return f"Route({self.path!r}, methods={sorted(self.methods)}, name={self.name!r})"


class WebSocketRoute(BaseRoute):
    """A WebSocket endpoint. Returning closes with 1000 (or denies, if never accepted).

    `max_message_size` (bytes, None for no limit) overrides the app's limit;
    a larger message closes the connection with 1009.
    """

    methods = frozenset({_WEBSOCKET})

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        max_message_size: int | None = _UNSET,
    ) -> None:
        self.template = PathTemplate(path)
        self.param_names = self.template.param_names
        self.path = path
        self.endpoint = endpoint
        self.name = name if name is not None else getattr(endpoint, "__name__", None)
        self.max_message_size = max_message_size
        self._call = Endpoint(
            endpoint,
            path=path,
            path_params=self.template.param_convertors,
            connection_class=WebSocket,
            connection_names=("ws", "websocket"),
        )
        if not self._call.is_async:
            raise TypeError(f"WebSocket endpoint {path!r} must be an async def")
        self.app = _guarded(self.handle, middleware)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.max_message_size is not _UNSET:
            scope[MAX_MESSAGE_SIZE_KEY] = self.max_message_size
        websocket = WebSocket(scope, receive, send)
        try:
            await self._call(websocket, scope["path_params"])
        except Exception as exc:
            state = websocket.application_state
            await errors_for(scope).websocket_error(exc, scope, receive, send, state)
            return
        open_states = (WebSocketState.CONNECTING, WebSocketState.CONNECTED)
        if websocket.application_state in open_states and websocket.client_state in open_states:
            await websocket.close(1000)

    def __repr__(self) -> str:
        return f"WebSocketRoute({self.path!r}, name={self.name!r})"


class Mount(BaseRoute):
    """Another ASGI app under a path prefix.

    The child sees `root_path` extended by the matched prefix and `path`
    unchanged. Mounted Apps and Routers take part in the parent's lifespan.
    """

    methods: frozenset[str] = frozenset()  # not used: a mount takes every method
    is_mount = True

    def __init__(
        self,
        path: str,
        app: ASGIApp,
        *,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        path = path.rstrip("/")
        self.template = PathTemplate(path, prefix=True)
        self.param_names = self.template.param_names
        self.path = path
        self.name = name
        self.mounted = app
        if isinstance(app, Router) or isinstance(getattr(app, "router", None), Router):
            # Our own apps answer their errors where they happen.
            self.app = _guarded(app, middleware)
        else:
            self.app = ErrorGuard(wrap(app, middleware))

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, prefix: str, parent: Router
    ) -> None:
        child = dict(scope)
        root_path = scope.get("root_path", "")
        # Remember the outermost router and root path, for url_for() below the mount.
        if "router" not in scope:
            child["router"] = parent
        if "app_root_path" not in scope:
            child["app_root_path"] = root_path
        child["root_path"] = root_path + prefix
        await self.app(child, receive, send)

    def url_path_for(self, name: str, params: dict[str, Any]) -> str | None:
        own = self.template.param_convertors
        if any(key not in params for key in own):
            return None
        rest = {k: v for k, v in params.items() if k not in own}
        if self.name is not None:
            if name == self.name and set(rest) <= {"path"}:
                # A named mount of a plain ASGI app (e.g. static files): /prefix/<path>.
                tail = quote_path(str(rest.get("path", "")).lstrip("/"))
                return self.template.format({k: params[k] for k in own}) + "/" + tail
            if not name.startswith(self.name + ":"):
                return None
            name = name[len(self.name) + 1 :]
        child_url_path_for = getattr(self.mounted, "url_path_for", None)
        if child_url_path_for is None:
            return None
        try:
            child_path: str = child_url_path_for(name, **rest)
        except NoMatchFound:
            return None
        return self.template.format({k: params[k] for k in own}) + child_path

    def __repr__(self) -> str:
        return f"Mount({self.path!r}, {self.mounted!r}, name={self.name!r})"


def _guarded(app: ASGIApp, middleware: Sequence[Middleware] | None) -> ASGIApp:
    """`app` inside its middleware, with a guard for what the middleware raise."""
    return ErrorGuard(wrap(app, middleware)) if middleware else app


def _route_path(path: str, root: str) -> str:
    """The path below root_path, cut only at a segment boundary."""
    if path.startswith(root):
        rest = path[len(root) :]
        if not rest:
            return "/"
        if rest[0] == "/":
            return rest
    return path


class Router:
    """Dispatches scopes to routes. Usable alone as an ASGI app, or mounted."""

    def __init__(
        self,
        routes: Sequence[BaseRoute] | None = None,
        *,
        redirect_slashes: bool = True,
        lifespan: Any = None,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        self.routes: list[BaseRoute] = []
        self.redirect_slashes = redirect_slashes
        self.lifespan_context = lifespan
        self.lifespan_state: dict[str, Any] | None = None
        self.background_tasks: list[Callable[..., Any]] = []
        self._trie: SegmentTrie[BaseRoute] = SegmentTrie()
        # Fully static paths, looked up in one dict: path -> method -> first route.
        self._static: dict[str, dict[str, BaseRoute]] = {}
        self.middleware = list(middleware or [])
        self._app: ASGIApp = _guarded(self.dispatch, self.middleware)
        for route in routes or ():
            self.add(route)

    # -- registration ----------------------------------------------------------------

    def add(self, route: BaseRoute) -> BaseRoute:
        """Add any route object; decorators and `mount` end up here."""
        prefix = isinstance(route, Mount)
        self.routes.append(route)
        self._trie.insert(route.template, route, prefix=prefix)
        if route.template.is_static and not prefix:
            by_method = self._static.setdefault(route.template.path, {})
            for method in route.methods:
                by_method.setdefault(method, route)
        return route

    def add_route(self, path: str, endpoint: Callable[..., Any], **options: Any) -> Route:
        route = Route(path, endpoint, **options)
        self.add(route)
        return route

    def add_websocket_route(
        self, path: str, endpoint: Callable[..., Any], **options: Any
    ) -> WebSocketRoute:
        route = WebSocketRoute(path, endpoint, **options)
        self.add(route)
        return route

    def mount(
        self,
        path: str,
        app: ASGIApp,
        *,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
    ) -> Mount:
        """Serve `app` (an App, a Router or any ASGI app) under `path`."""
        route = Mount(path, app, name=name, middleware=middleware)
        self.add(route)
        return route

    def route(
        self, path: str, methods: Collection[str] | None = None, **options: Any
    ) -> Callable[[F], F]:
        """Decorator: an endpoint for `methods` (GET by default) at `path`."""

        def decorator(func: F) -> F:
            self.add_route(path, func, methods=methods, **options)
            return func

        return decorator

    def get(self, path: str, **options: Any) -> Callable[[F], F]:
        return self.route(path, ["GET"], **options)

    def post(self, path: str, **options: Any) -> Callable[[F], F]:
        return self.route(path, ["POST"], **options)

    def put(self, path: str, **options: Any) -> Callable[[F], F]:
        return self.route(path, ["PUT"], **options)

    def patch(self, path: str, **options: Any) -> Callable[[F], F]:
        return self.route(path, ["PATCH"], **options)

    def delete(self, path: str, **options: Any) -> Callable[[F], F]:
        return self.route(path, ["DELETE"], **options)

    def head(self, path: str, **options: Any) -> Callable[[F], F]:
        return self.route(path, ["HEAD"], **options)

    def options(self, path: str, **options: Any) -> Callable[[F], F]:
        return self.route(path, ["OPTIONS"], **options)

    def websocket(self, path: str, **options: Any) -> Callable[[F], F]:
        """Decorator: a WebSocket endpoint at `path`."""

        def decorator(func: F) -> F:
            self.add_websocket_route(path, func, **options)
            return func

        return decorator

    def background_task(self, func: F) -> F:
        """Decorator: run `func(state)` for the app's lifetime (see docs/lifespan.md)."""
        self.background_tasks.append(func)
        return func

    def url_path_for(self, name: str, /, **params: Any) -> str:
        """The path of the route called `name` (``"mount:name"`` inside named mounts)."""
        for route in self.routes:
            path = route.url_path_for(name, params)
            if path is not None:
                return path
        raise NoMatchFound(name, params)

    # -- dispatch --------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            from microasgi._lifespan import serve_lifespan

            await serve_lifespan(self, scope, receive, send)
            return
        if "app" not in scope:  # served on its own, not by an App
            if "router" not in scope:
                scope["router"] = self
            if "state" not in scope and self.lifespan_state is not None:
                scope["state"] = dict(self.lifespan_state)
        await self._app(scope, receive, send)

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Find the route for the scope and run it (no middleware, no lifespan)."""
        path: str = scope["path"]
        root = scope.get("root_path")
        if root:
            path = _route_path(path, root)
        method = scope.get("method", _WEBSOCKET)
        static = self._static.get(path)
        if static is not None:
            route = static.get(method)
            if route is not None:
                params = scope.get("path_params")
                scope["path_params"] = dict(params) if params else {}
                await route.app(scope, receive, send)
                return
        allowed: list[frozenset[str]] = []
        values: list[Any] = []
        found = None
        if path[:1] == "/":
            segments = path[1:].split("/")
            found = search(self._trie.root, segments, 0, len(segments), values, method, allowed)
        if found is None:
            await self._no_match(scope, receive, send, path, method, allowed)
            return
        route, consumed = found
        names = route.param_names  # as many as there are values
        params = (
            {names[0]: values[0]} if len(names) == 1 else dict(zip(names, values, strict=False))
        )
        parent = scope.get("path_params")
        scope["path_params"] = {**parent, **params} if parent else params
        if route.is_mount:
            prefix = "/" + "/".join(segments[:consumed]) if consumed else ""
            await route.handle(scope, receive, send, prefix, self)
        else:
            await route.app(scope, receive, send)

    async def _no_match(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        method: str,
        allowed: list[frozenset[str]],
    ) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000, "reason": ""})
            return
        if not path.startswith("/"):
            await self._error(scope, receive, send, HTTPException(400, "Invalid request path"))
            return
        if self.redirect_slashes and path != "/":
            other = path[:-1] if path.endswith("/") else path + "/"
            if not other.startswith("//") and self._trie.match(other[1:].split("/"), method, []):
                location = scope.get("root_path", "") + other
                query = scope.get("query_string", b"")
                if query:
                    location += "?" + query.decode("latin-1")
                await RedirectResponse(location, status_code=307)(scope, receive, send)
                return
        every = set().union(*allowed)
        http_methods = every - {_WEBSOCKET}
        if http_methods:
            allow = ", ".join(sorted(http_methods))
            exc = HTTPException(405, headers={"Allow": allow})
        elif every:
            exc = HTTPException(
                426, "This endpoint only speaks WebSocket", headers={"Upgrade": "websocket"}
            )
        else:
            exc = HTTPException(404)
        await self._error(scope, receive, send, exc)

    async def _error(self, scope: Scope, receive: Receive, send: Send, exc: HTTPException) -> None:
        await errors_for(scope).http_error(exc, scope, receive, send)
