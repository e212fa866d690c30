"""Router, Route, WebSocketRoute and Mount (the routes themselves are in `_routes`)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from microasgi._context import CONTEXT_KEY, ROOT_PATH_KEY, AppContext
from microasgi._errors import DEFAULT_ERRORS, errors_for, guarded
from microasgi._lifespan import Lifespan, LifespanOwner, serve_lifespan
from microasgi._paths import NoMatchFound, below_root
from microasgi._pipeline import compose, respond
from microasgi._routes import WEBSOCKET, BaseRoute, Route, WebSocketRoute
from microasgi._stack import Middleware
from microasgi._trie import SegmentTrie
from microasgi.datastructures import quote_path
from microasgi.exceptions import HTTPException
from microasgi.requests import Request
from microasgi.responses import RedirectResponse, Response
from microasgi.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "PATH_TEMPLATE_KEY",
    "BaseRoute",
    "Mount",
    "NoMatchFound",
    "Route",
    "Router",
    "WebSocketRoute",
]

F = TypeVar("F", bound=Callable[..., Any])
#: Scope key of the matched route's path template, mount prefixes included
#: (`/api/items/{item_id:int}`): a low-cardinality name for logs and metrics.
PATH_TEMPLATE_KEY = "path_template"
_MOUNTED_KEY = "microasgi.mounted"


class _Decorate(Protocol):
    def __call__(self, path: str, **options: Any) -> Callable[[F], F]: ...


class _MethodDecorator:
    """`app.get(path, **options)` and its siblings: `route(path, [method], **options)`."""

    def __init__(self, method: str) -> None:
        self.method = method

    def __get__(self, registry: _Registration, owner: type | None = None) -> _Decorate:
        return functools.partial(registry.route, methods=[self.method])


class _Registration:
    """What App and Router share to register routes: every way ends in `add()`."""

    @property
    def background_tasks(self) -> list[Callable[..., Any]]:
        """Coroutines registered with `@background_task`."""
        raise NotImplementedError

    def add(self, route: BaseRoute) -> BaseRoute:
        """Add any route object; decorators and `mount` end up here."""
        raise NotImplementedError

    def add_route(self, path: str, endpoint: Callable[..., Any], **options: Any) -> Route:
        """Add a `Route(path, endpoint, **options)` and return it."""
        route = Route(path, endpoint, **options)
        self.add(route)
        return route

    def add_websocket_route(
        self, path: str, endpoint: Callable[..., Any], **options: Any
    ) -> WebSocketRoute:
        """Add a `WebSocketRoute(path, endpoint, **options)` and return it."""
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

    get = _MethodDecorator("GET")
    """`@app.get(path, **options)`: an endpoint for GET (and HEAD) at `path`."""
    post = _MethodDecorator("POST")
    """`@app.post(path, **options)`: an endpoint for POST at `path`."""
    put = _MethodDecorator("PUT")
    """`@app.put(path, **options)`: an endpoint for PUT at `path`."""
    patch = _MethodDecorator("PATCH")
    """`@app.patch(path, **options)`: an endpoint for PATCH at `path`."""
    delete = _MethodDecorator("DELETE")
    """`@app.delete(path, **options)`: an endpoint for DELETE at `path`."""
    head = _MethodDecorator("HEAD")
    """`@app.head(path, **options)`: an endpoint for HEAD at `path`."""
    options = _MethodDecorator("OPTIONS")
    """`@app.options(path, **options)`: an endpoint for OPTIONS at `path`."""

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


class Routed(_Registration):
    """Base class of apps built around a microasgi Router (App): a Mount knows
    them as ours (their lifespan runs with the parent's, they answer their own
    errors, their router resolves names below the mount)."""

    router: Router
    lifespan_state: dict[str, Any] | None = None

    def add(self, route: BaseRoute) -> BaseRoute:
        """Add any route object to the app's router."""
        return self.router.add(route)

    @property
    def routes(self) -> list[BaseRoute]:
        """The app's routes, in the order they were added."""
        return self.router.routes

    @property
    def lifespan_context(self) -> Lifespan | None:
        """The app's lifespan (its router's)."""
        return self.router.lifespan_context

    @property
    def background_tasks(self) -> list[Callable[..., Any]]:
        """Coroutines registered with `@app.background_task`."""
        return self.router.background_tasks

    def lifespan_children(self) -> Iterable[LifespanOwner]:
        """The Apps and Routers mounted in this app (their lifespans run with its)."""
        return self.router.lifespan_children()

    def _prepare(self) -> None:
        """Compile the route lookup now rather than on the first request."""
        self.router._prepare()

    def url_path_for(self, name: str, /, **params: Any) -> str:
        """The path of the route called `name` (``"mount:name"`` inside named mounts)."""
        return self.router.url_path_for(name, **params)


class Mount(BaseRoute):
    """Another ASGI app under a path prefix.

    The child sees `root_path` extended by the matched prefix and `path`
    unchanged. Mounted Apps and Routers take part in the parent's lifespan.
    """

    is_mount = True

    def __init__(
        self,
        path: str,
        app: ASGIApp,
        *,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        super().__init__(path.rstrip("/"), name, prefix=True)
        self.mount = self
        self.mounted = app
        if isinstance(app, (Router, Routed)):
            self.lifespan_child = app
            self.app = guarded(app, middleware)  # it answers its own errors
        else:
            self.app = guarded(app, middleware, guard_app=True)

    async def handle(self, scope: Scope, receive: Receive, send: Send, prefix: str) -> None:
        """Call the mounted app with `root_path` extended by the matched `prefix`."""
        child = dict(scope)
        root_path = scope.get("root_path", "")
        if ROOT_PATH_KEY not in scope:  # the outermost app's, for url_for below the mount
            child[ROOT_PATH_KEY] = root_path
        child["root_path"] = root_path + prefix
        # For the path template below: (the templates of the mounts crossed, the outermost scope).
        mounted = scope.get(_MOUNTED_KEY)
        child[_MOUNTED_KEY] = (
            (self.path, scope) if mounted is None else (mounted[0] + self.path, mounted[1])
        )
        await self.app(child, receive, send)

    def url_path_for(self, name: str, params: dict[str, Any]) -> str | None:
        """The path for `name` below this mount: `"mount:name"`, or the mount's own
        name with a `path` parameter."""
        own = self.template.param_convertors
        if any(key not in params for key in own):
            return None
        rest = {k: v for k, v in params.items() if k not in own}
        if self.name is not None:
            if name == self.name:
                # The mount itself: /prefix/<path>, e.g. a file under static files.
                if set(rest) != {"path"}:
                    return None
                tail = quote_path(str(rest["path"]).lstrip("/"))
                return self._prefix(params) + "/" + tail
            if not name.startswith(self.name + ":"):
                return None
            name = name[len(self.name) + 1 :]
        child_path = self._child_path(name, rest)
        return None if child_path is None else self._prefix(params) + child_path

    def _prefix(self, params: dict[str, Any]) -> str:
        return self.template.format({k: params[k] for k in self.template.param_convertors})

    def _child_path(self, name: str, params: dict[str, Any]) -> str | None:
        if isinstance(self.mounted, Router):
            return self.mounted.find_path(name, params)
        if isinstance(self.mounted, Routed):
            return self.mounted.router.find_path(name, params)
        # Somebody else's app: ask it if it can tell, and take any error as "not here".
        url_path_for = getattr(self.mounted, "url_path_for", None)
        if url_path_for is None:
            return None
        try:
            return str(url_path_for(name, **params))
        except Exception:
            return None

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name is not None else ""
        return f"Mount({self.path or '/'!r}, {self.mounted!r}{name})"


#: Paths longer than this (characters, after percent-decoding) are answered 414.
DEFAULT_MAX_PATH_LENGTH = 8192


class Router(_Registration):
    """Dispatches scopes to routes. Usable alone as an ASGI app, or mounted.

    A request path longer than `max_path_length` characters is answered with
    414 before any matching.
    """

    def __init__(
        self,
        routes: Sequence[BaseRoute] | None = None,
        *,
        redirect_slashes: bool = True,
        lifespan: Lifespan | None = None,
        middleware: Sequence[Middleware] | None = None,
        max_path_length: int = DEFAULT_MAX_PATH_LENGTH,
    ) -> None:
        self.routes: list[BaseRoute] = []
        self.redirect_slashes = redirect_slashes
        self.max_path_length = max_path_length
        self.lifespan_context = lifespan
        self.lifespan_state: dict[str, Any] | None = None
        self._background_tasks: list[Callable[..., Any]] = []
        self._trie: SegmentTrie[BaseRoute] = SegmentTrie()
        self.middleware = list(middleware or [])
        self._app = self._shortcut(guarded(self.dispatch, self.middleware))
        # What a Router served on its own (not by an App) puts in the scope.
        self._own_context = AppContext(errors=DEFAULT_ERRORS, router=self)
        for route in routes or ():
            self.add(route)

    # -- registration ----------------------------------------------------------------

    def add(self, route: BaseRoute) -> BaseRoute:
        """Add any route object; decorators and `mount` end up here."""
        self.routes.append(route)
        self._trie.insert(route.template, route, prefix=route.is_mount)
        return route

    @property
    def background_tasks(self) -> list[Callable[..., Any]]:
        return self._background_tasks

    def lifespan_children(self) -> Iterable[LifespanOwner]:
        """The Apps and Routers mounted here (their lifespans run with this one's)."""
        return [route.lifespan_child for route in self.routes if route.lifespan_child is not None]

    def _prepare(self) -> None:
        """Compile the route lookup now rather than on the first request (the
        lifespan's startup does, once the app's own startup has run)."""
        self._trie.prepare()

    def url_path_for(self, name: str, /, **params: Any) -> str:
        """The path of the route called `name` (``"mount:name"`` inside named mounts)."""
        path = self.find_path(name, params)
        if path is None:
            raise NoMatchFound(name, params)
        return path

    def find_path(self, name: str, params: dict[str, Any]) -> str | None:
        """`url_path_for`, with None for no match."""
        for route in self.routes:
            path = route.url_path_for(name, params)
            if path is not None:
                return path
        return None

    # -- dispatch --------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(self, scope, receive, send)
            return
        if CONTEXT_KEY not in scope:  # served on its own, or under somebody else's app
            scope[CONTEXT_KEY] = self._own_context
            if "state" not in scope and self.lifespan_state is not None:
                scope["state"] = dict(self.lifespan_state)
        await self._app(scope, receive, send)

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Find the route for the scope and run it (no middleware, no lifespan)."""
        await self._resolve(scope, receive, send)

    def _shortcut(self, stack: ASGIApp) -> ASGIApp:
        """`stack`, or `_resolve` when `stack` is Router's own `dispatch` of this
        router with nothing around it.

        PERF: then the App (or the Router served alone) awaits the router's work
        without dispatch's coroutine frame; an overridden dispatch still runs
        (test_the_app_awaits_the_router_directly..., test_an_overridden_dispatch...).
        """
        bound_to, func = getattr(stack, "__self__", None), getattr(stack, "__func__", None)
        return self._resolve if bound_to is self and func is Router.dispatch else stack

    def _resolve(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """What `dispatch` awaits: the route's own coroutine for the scope (or the
        router's answer for a miss), with the route's parameters in the scope.

        Not a coroutine: everything up to there is synchronous. With nothing
        around the router, the App awaits this directly, which saves a coroutine
        frame per request; middleware get `dispatch`, a coroutine function
        (OpenTelemetry's and Sentry's tell ASGI 3 apps by that). An error here is
        raised by the call, not by the await.
        """
        path: str = scope["path"]
        root = scope.get("root_path")
        if root and (below := below_root(path, root)) is not None:
            path = below or "/"
        method = scope.get("method", WEBSOCKET)
        if len(path) > self.max_path_length:
            return self._refuse_long_path(scope, receive, send)
        try:
            found = self._trie.lookup(path, method)
        except Exception as exc:  # a convertor's bug: ValueError would mean no match
            return errors_for(scope).after_send(exc, scope, receive, send, None)
        if found[0] is None:
            return self._no_match(scope, receive, send, path, method, found[1])
        route, params, prefix = found
        parent = scope.get("path_params")
        # (An empty `params` is shared by every lookup: the scope gets its own.)
        scope["path_params"] = {**parent, **params} if parent else params or {}
        # The matched template, mount prefixes included, for logs and metrics; also
        # written into the outermost scope, which a mount copies.
        mounted = scope.get(_MOUNTED_KEY)
        if mounted is None:
            scope[PATH_TEMPLATE_KEY] = route.path
        else:
            mounted[1][PATH_TEMPLATE_KEY] = scope[PATH_TEMPLATE_KEY] = mounted[0] + route.path
        if route.mount is not None:
            return route.mount.handle(scope, receive, send, prefix)
        return route.app(scope, receive, send)

    async def _refuse_long_path(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "path too long"})
            return
        limit = self.max_path_length
        await _answer(
            scope, receive, send, HTTPException(414, f"Request path longer than {limit} characters")
        )

    async def _no_match(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        method: str,
        allowed: frozenset[str],
    ) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000, "reason": ""})
            return
        await _answer(scope, receive, send, self._miss(scope, path, method, allowed))

    def _miss(
        self, scope: Scope, path: str, method: str, allowed: frozenset[str]
    ) -> HTTPException | Response:
        """What a path no route takes gets: 400, a slash redirect, 405, 426 or 404."""
        if not path.startswith("/"):
            return HTTPException(400, "Invalid request path")
        if self.redirect_slashes and path != "/":
            other = path[:-1] if path.endswith("/") else path + "/"
            if not other.startswith("//") and self._trie.lookup(other, method)[0] is not None:
                location = scope.get("root_path", "") + other
                query = scope.get("query_string", b"")
                if query:
                    location += "?" + query.decode("latin-1")
                return RedirectResponse(location, status_code=307)
        http_methods = allowed - {WEBSOCKET}
        if http_methods:
            return HTTPException(405, headers={"Allow": ", ".join(sorted(http_methods))})
        if allowed:
            return HTTPException(
                426, "This endpoint only speaks WebSocket", headers={"Upgrade": "websocket"}
            )
        return HTTPException(404)


class _Constant:
    """The innermost step of a chain for a request no route takes: a fixed answer."""

    __slots__ = ("answer",)

    def __init__(self, answer: HTTPException | Response) -> None:
        self.answer = answer

    async def __call__(self, request: Request) -> Response:
        if isinstance(self.answer, HTTPException):
            response: Response = await errors_for(request.scope).response_for(self.answer, request)
            return response
        return self.answer


async def _answer(
    scope: Scope, receive: Receive, send: Send, answer: HTTPException | Response
) -> None:
    """Send the router's own answer, through the app's function middleware if any."""
    context = scope.get(CONTEXT_KEY)
    if context is not None and context.http_middleware:
        composed = compose(context.http_middleware, _Constant(answer))
        await respond(composed, scope, receive, send, Request(scope, receive, send))
    elif isinstance(answer, HTTPException):
        await errors_for(scope).http_error(answer, scope, receive, send)
    else:
        await answer(scope, receive, send)
