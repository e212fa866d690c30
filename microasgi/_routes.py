"""Routes: BaseRoute, and the endpoint routes Route and WebSocketRoute.

`microasgi.routing` exports them, with Mount and the Router that dispatches to them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

from microasgi._concurrency import describe
from microasgi._context import CONTEXT_KEY, AppContext
from microasgi._endpoints import CONNECTION_FIRST, Endpoint
from microasgi._errors import DEFAULT_ERRORS, errors_for, guarded
from microasgi._json import encode_json
from microasgi._lifespan import LifespanOwner
from microasgi._paths import PathTemplate
from microasgi._pipeline import Chain, Respond, compose, respond
from microasgi._stack import Middleware
from microasgi.requests import ClientDisconnect, Request
from microasgi.responses import Response
from microasgi.responses._base import JSON_CONTENT_TYPE, TEXT_CONTENT_TYPE, log_gone, to_response
from microasgi.types import ASGIApp, Receive, Scope, Send
from microasgi.websockets import WebSocket, WebSocketState

__all__ = ["UNSET", "WEBSOCKET", "BaseRoute", "Mounted", "Route", "WebSocketRoute"]

UNSET: Any = object()  # a limit the route leaves to the app
WEBSOCKET = "WEBSOCKET"  # the "method" a websocket scope is routed with


class Mounted(Protocol):
    """What the router calls on a Mount (`microasgi.routing.Mount`)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, prefix: str) -> None: ...


class BaseRoute:
    """Something the router can match: a path template, a name and an ASGI app.

    `limits` are the route's own values of the app's limits (`max_body_size`,
    `max_message_size`): the route serves its scopes with the app's context
    with those replaced.
    """

    is_mount = False  # a prefix that takes any method, matched after routes
    mount: Mounted | None = None  # the route itself, for a Mount (saves an isinstance)
    #: The App or Router a Mount serves (whose lifespan runs with the parent's).
    lifespan_child: LifespanOwner | None = None
    methods: frozenset[str] = frozenset()
    app: ASGIApp

    def __init__(self, path: str, name: str | None, *, prefix: bool = False, **limits: Any) -> None:
        self.path = path
        self.template = PathTemplate(path, prefix=prefix)
        self.param_names = self.template.param_names  # what the trie names the values by
        self.name = name
        self._limits = {key: value for key, value in limits.items() if value is not UNSET}
        self._context_cache: tuple[AppContext | None, AppContext] | None = None

    def _with_limits(self, app: ASGIApp) -> ASGIApp:
        """`app`, serving its scopes with this route's limits in the context."""
        if not self._limits:
            return app

        async def with_limits(scope: Scope, receive: Receive, send: Send) -> None:
            scope[CONTEXT_KEY] = self._context_for(scope.get(CONTEXT_KEY))
            await app(scope, receive, send)

        return with_limits

    def _context_for(self, parent: AppContext | None) -> AppContext:
        # One app serves a route, nearly always: keep the last context made.
        cached = self._context_cache
        if cached is not None and cached[0] is parent:
            return cached[1]
        base = parent if parent is not None else AppContext(errors=DEFAULT_ERRORS)
        context = base.replace(**self._limits)
        self._context_cache = (parent, context)
        return context

    def url_path_for(self, name: str, params: dict[str, Any]) -> str | None:
        """The path for `name` with `params`, or None if this route is not it."""
        if name != self.name or set(params) != set(self.template.param_convertors):
            return None
        return self.template.format(params)


class _EndpointRoute(BaseRoute):
    """What Route and WebSocketRoute share: an endpoint called with a connection."""

    connection_names: tuple[str, ...]

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        name: str | None,
        middleware: Sequence[Middleware] | None,
        connection_class: type[Request] | type[WebSocket],
        **limits: Any,
    ) -> None:
        if name is None:  # the function's name; for a callable object, its class's
            name = getattr(endpoint, "__name__", None) or type(endpoint).__name__
        super().__init__(path, name, **limits)
        self.endpoint = endpoint
        self._call = Endpoint(
            endpoint,
            path=path,
            path_params=self.template.param_convertors,
            connection_class=connection_class,
            connection_names=self.connection_names,
        )
        self.app = self._with_limits(guarded(self.handle, middleware))

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class Route(_EndpointRoute):
    """An HTTP endpoint at a path for some methods (GET also answers HEAD).

    `max_body_size` (bytes, None for no limit) overrides the app's limit.
    """

    connection_names = ("request",)

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Collection[str] | None = None,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        max_body_size: int | None = UNSET,
    ) -> None:
        wanted = {m.upper() for m in (methods or ("GET",))}
        if "GET" in wanted:
            wanted.add("HEAD")
        self.methods = frozenset(wanted)
        self._composed: tuple[Chain, Respond] | None = None
        super().__init__(path, endpoint, name, middleware, Request, max_body_size=max_body_size)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request: call the endpoint and send its response."""
        context = scope.get(CONTEXT_KEY)
        if context is not None and context.http_middleware:
            await self._handle_through(context.http_middleware, scope, receive, send)
            return
        call = self._call
        params = scope["path_params"]
        request: Request | None = None  # built only for an endpoint that takes it
        body = None
        try:
            try:
                if call.direct and len(params) == call.param_count:
                    # PERF: the usual endpoints (async, taking the path parameters and
                    # maybe the request first) are called here, a lone path parameter
                    # by position, and a dict, list or str they return is sent without
                    # building a Response object: two coroutine frames and two objects
                    # fewer per request (see docs/architecture.md).
                    # test_every_call_path_gives_the_same_response runs each path.
                    only = call.only
                    if call.shape is CONNECTION_FIRST:
                        request = Request(scope, receive, send)
                        if only is None:
                            result = await call.func(request, **params)
                        else:
                            result = await call.func(request, params[only])
                    elif only is None:
                        result = await call.func(**params)
                    else:
                        result = await call.func(params[only])
                    kind = type(result)
                    if kind is dict or kind is list:
                        body, content_type = encode_json(result), JSON_CONTENT_TYPE
                    elif kind is str:
                        body, content_type = result.encode("utf-8"), TEXT_CONTENT_TYPE
                    else:
                        response = to_response(result, self.endpoint)
                else:
                    request = Request(scope, receive, send)
                    response = await self._produce(request)
            except Exception as exc:
                # Nothing has been sent yet: answer here, inside any middleware
                # (which sees the answer go by), with the endpoint's own request.
                await errors_for(scope).http_error(exc, scope, receive, send, connection=request)
                return
            if body is not None:
                # PERF: what Response.__call__ does for a plain 200, without the
                # object or one more coroutine frame (test_every_call_path_... compares).
                headers = [(b"content-length", b"%d" % len(body)), content_type]
                try:
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    if scope["method"] == "HEAD":
                        body = b""
                    await send({"type": "http.response.body", "body": body})
                except OSError as exc:
                    log_gone(scope, exc)
            else:
                await response(scope, receive, send)
        finally:
            if request is not None and request._form is not None:
                await request.close()  # uploaded files go away with the request

    async def _produce(self, request: Request) -> Response:
        """The endpoint's response to `request`, or the error response for what it
        raised (what function middleware get from `call_next`)."""
        call = self._call
        params = request.scope["path_params"]
        try:
            if call.direct and len(params) == call.param_count:
                # PERF: the usual endpoints directly, as in handle().
                only = call.only
                if call.shape is CONNECTION_FIRST:
                    if only is None:
                        result = await call.func(request, **params)
                    else:
                        result = await call.func(request, params[only])
                elif only is None:
                    result = await call.func(**params)
                else:
                    result = await call.func(params[only])
                return to_response(result, self.endpoint)
            result, background = await call(request, params)
            response = to_response(result, self.endpoint)
        except ClientDisconnect:
            raise  # nobody to answer
        except Exception as exc:
            answer: Response = await errors_for(request.scope).response_for(exc, request)
            return answer
        if background is not None and background.tasks:
            if response.background is not None:
                background.tasks.insert(0, response.background)
            response.background = background
        return response

    async def _handle_through(
        self, chain: Chain, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """The request through the app's function middleware, then the endpoint."""
        composed = self._composed
        if composed is None or composed[0] is not chain:  # one app serves a route, nearly always
            composed = self._composed = (chain, compose(chain, self._produce))
        await respond(composed[1], scope, receive, send, Request(scope, receive, send))

    def __repr__(self) -> str:
        methods = sorted(self.methods)
        return f"Route({self.path!r}, {describe(self.endpoint)}, {methods=}, name={self.name!r})"


class WebSocketRoute(_EndpointRoute):
    """A WebSocket endpoint. Returning closes with 1000 (or denies, if never accepted).

    `max_message_size` (bytes, None for no limit) overrides the app's limit;
    a larger message closes the connection with 1009.
    """

    methods = frozenset({WEBSOCKET})
    connection_names = ("ws", "websocket")

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        name: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        max_message_size: int | None = UNSET,
    ) -> None:
        super().__init__(
            path, endpoint, name, middleware, WebSocket, max_message_size=max_message_size
        )
        if not self._call.is_async:
            raise TypeError(f"WebSocket endpoint {path!r} must be an async def")

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the endpoint for one WebSocket connection."""
        websocket = WebSocket(scope, receive, send)
        try:
            await self._call(websocket, scope["path_params"])
        except Exception as exc:
            state = websocket.application_state
            await errors_for(scope).websocket_error(
                exc, scope, receive, send, state, connection=websocket
            )
            return
        open_states = (WebSocketState.CONNECTING, WebSocketState.CONNECTED)
        if websocket.application_state in open_states and websocket.client_state in open_states:
            await websocket.close(1000)

    def __repr__(self) -> str:
        return f"WebSocketRoute({self.path!r}, {describe(self.endpoint)}, name={self.name!r})"
