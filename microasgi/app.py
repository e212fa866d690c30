"""App: a router, a middleware stack, lifespan and error handling."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, overload

from microasgi._concurrency import describe, is_async_callable
from microasgi._context import (
    CONTEXT_KEY,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_COOKIE_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
    AppContext,
)
from microasgi._errors import ErrorHandler, guarded, log_after_start
from microasgi._lifespan import Lifespan, serve_lifespan
from microasgi._stack import Middleware
from microasgi.datastructures import State
from microasgi.routing import DEFAULT_MAX_PATH_LENGTH, BaseRoute, Routed, Router
from microasgi.types import ASGIApp, Receive, Scope, Send

__all__ = ["App"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class _Setting(Generic[T]):
    """An App setting the layers below read from its context: setting it (also
    after the app has started) rebuilds the context for the next request."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = "_" + name

    def __get__(self, app: App, owner: type | None = None) -> T:
        value: T = getattr(app, self.attribute)
        return value

    def __set__(self, app: App, value: T) -> None:
        setattr(app, self.attribute, value)
        app._context = None


class App(Routed):
    """A microasgi application.

    `middleware` is a list of `Middleware(cls, **options)`, the first one
    outermost. `max_body_size` (bytes, None for no limit) bounds request
    bodies; larger ones are answered with 413. `max_message_size` bounds
    WebSocket messages; a larger one closes the connection with 1009. A
    request path longer than `max_path_length` characters is answered 414, a
    Cookie header longer than `max_cookie_size` bytes 431 (when read).
    `debug=True` puts tracebacks in 500 responses. Setting `debug` or a limit
    on a running app takes effect on the next request.
    """

    def __init__(
        self,
        debug: bool = False,
        lifespan: Lifespan | None = None,
        middleware: Sequence[Middleware] | None = None,
        max_body_size: int | None = DEFAULT_MAX_BODY_SIZE,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        routes: Sequence[BaseRoute] | None = None,
        exception_handlers: dict[int | type[BaseException], Callable[..., Any]] | None = None,
        redirect_slashes: bool = True,
        max_path_length: int = DEFAULT_MAX_PATH_LENGTH,
        max_cookie_size: int | None = DEFAULT_MAX_COOKIE_SIZE,
    ) -> None:
        self._context: AppContext | None = None
        self.debug = debug
        self.max_body_size = max_body_size
        self.max_message_size = max_message_size
        self.max_cookie_size = max_cookie_size
        self.router = Router(
            routes,
            redirect_slashes=redirect_slashes,
            lifespan=lifespan,
            max_path_length=max_path_length,
        )
        self.user_middleware: list[Middleware] = list(middleware or [])
        # Function middleware (`@app.middleware`), outermost first.
        self.http_middleware: list[Callable[..., Any]] = []
        self.exception_handlers: dict[int | type[BaseException], Callable[..., Any]] = dict(
            exception_handlers or {}
        )
        self.state = State()
        self._stack: ASGIApp | None = None
        # The context under a parent app: (the parent's context, ours under it).
        self._nested: tuple[AppContext, AppContext] | None = None

    # -- settings: each change reaches the next request --------------------------------

    debug = _Setting[bool]()
    max_body_size = _Setting[int | None]()
    max_message_size = _Setting[int | None]()
    max_cookie_size = _Setting[int | None]()

    def _build_context(self) -> AppContext:
        self._context = AppContext(
            errors=ErrorHandler(self.exception_handlers, self.debug),
            router=self.router,
            max_body_size=self.max_body_size,
            max_message_size=self.max_message_size,
            max_cookie_size=self.max_cookie_size,
            http_middleware=tuple(self.http_middleware),
        )
        self._nested = None
        return self._context

    def _context_under(self, parent: AppContext, own: AppContext) -> AppContext:
        """Ours, but names resolve from the parent's router (url_for across mounts)."""
        nested = self._nested
        if nested is not None and nested[0] is parent:
            return nested[1]
        # The parent's function middleware run around ours, as its ASGI middleware do.
        context = own.replace(
            router=parent.router or own.router,
            http_middleware=parent.http_middleware + own.http_middleware,
        )
        self._nested = (parent, context)
        return context

    # -- errors and middleware -----------------------------------------------------------

    def exception_handler(self, key: int | type[BaseException]) -> Callable[[F], F]:
        """Decorator: handle HTTPExceptions with status `key`, or exceptions of class `key`.

        The handler gets `(request, exc)` (or `(websocket, exc)`) and returns
        what an endpoint may return.
        """

        def decorator(func: F) -> F:
            self._check_not_started("add an exception handler")
            self.exception_handlers[key] = func
            return func

        return decorator

    @overload
    def middleware(self, func: F, /) -> F: ...

    @overload
    def middleware(self, kind: str, /) -> Callable[[F], F]: ...

    def middleware(self, func_or_kind: F | str, /) -> F | Callable[[F], F]:
        """Decorator: a function middleware, `async def mw(request, call_next)`.

        It runs in the endpoint's own task, around every HTTP request this app's
        routes (or its router, for 404s and 405s) answer, and it becomes the
        outermost function middleware. `call_next(request)` returns the
        endpoint's Response, or the error response for what it raised, before
        anything is sent; the middleware returns that response (maybe changed)
        or another one. `@app.middleware("http")` works too, as in Starlette.
        """
        if isinstance(func_or_kind, str):
            if func_or_kind != "http":
                raise ValueError('function middleware are for "http" only')
            return self.middleware
        func = func_or_kind
        if not is_async_callable(func):
            raise TypeError(f"function middleware {describe(func)} must be an async def")
        self._check_not_started("add middleware")
        self.http_middleware.insert(0, func)
        return func

    def add_middleware(self, cls: Any, /, *args: Any, **options: Any) -> None:
        """Add a middleware around everything added so far (it becomes the outermost)."""
        self._check_not_started("add middleware")
        self.user_middleware.insert(0, Middleware(cls, *args, **options))

    def _check_not_started(self, what: str) -> None:
        if self._stack is not None:
            raise RuntimeError(f"cannot {what} after the application has started")

    def _build_stack(self) -> ASGIApp:
        self._stack = stack = self.router._shortcut(self.build_middleware_stack())
        return stack

    def build_middleware_stack(self) -> ASGIApp:
        """The user middleware around the router, each in a guard for its errors.

        Errors of routes and the router are answered where they happen, inside
        the middleware (so a middleware sees the 500 go by); a middleware's own
        are answered right outside it.
        """
        return guarded(self.router.dispatch, self.user_middleware)

    # -- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(self, scope, receive, send)
            return
        scope["app"] = self
        context = self._context or self._build_context()
        if CONTEXT_KEY in scope:  # mounted in another microasgi app
            context = self._context_under(scope[CONTEXT_KEY], context)
        scope[CONTEXT_KEY] = context
        if "state" not in scope and self.lifespan_state is not None:
            # The server does not pass lifespan state along: do it ourselves.
            scope["state"] = dict(self.lifespan_state)
        try:
            await (self._stack or self._build_stack())(scope, receive, send)
        except Exception as exc:
            # Everything raised before a response started was answered where it was
            # raised; what arrives here came after: log it, the server ends the response.
            log_after_start(exc, scope)
