"""Answering errors: exception handlers, the default 4xx and 500 answers, WebSocket closes.

Not a middleware: errors are answered where they are raised (in the route,
the router, or `ErrorGuard` around foreign code such as user middleware and
mounted ASGI apps), which is inside the user middleware, so they see the
answer go by. Each App's `ErrorHandler` reaches the layers below it in the
scope's `AppContext`.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from microasgi._concurrency import call_user, is_async_callable
from microasgi._context import ErrorResponder, context_of
from microasgi._stack import Middleware
from microasgi.exceptions import HTTPException, WebSocketException
from microasgi.requests import ClientDisconnect, Request
from microasgi.responses import JSONResponse, PlainTextResponse, Response
from microasgi.responses._base import to_response
from microasgi.types import ASGIApp, Message, Receive, Scope, Send, WebSocketState
from microasgi.websockets import WebSocket, WebSocketDisconnect

__all__ = [
    "DEFAULT_ERRORS",
    "ErrorGuard",
    "ErrorHandler",
    "ExceptionHandlers",
    "errors_for",
    "guarded",
    "log_after_start",
]

logger = logging.getLogger("microasgi")

ExceptionHandlers = Mapping[int | type[BaseException], Callable[..., Any]]


def http_exception_response(exc: HTTPException) -> Response:
    """The default answer to an HTTPException: its detail as text (or JSON if not a str)."""
    if isinstance(exc.detail, str):
        return PlainTextResponse(exc.detail, exc.status_code, headers=exc.headers)
    return JSONResponse(exc.detail, exc.status_code, headers=exc.headers)


class ErrorHandler:
    """Answers for an exception: a response, or a WebSocket close.

    Handlers are looked up by status code for HTTPException, then by
    exception class along the MRO; 500 and Exception handlers also take
    unexpected errors. A handler gets the connection object the route built
    (the same Request, with what it has already read), or a new one when the
    error came from outside a route.
    """

    __slots__ = ("debug", "handlers")

    def __init__(self, handlers: ExceptionHandlers, debug: bool = False) -> None:
        self.handlers = handlers
        self.debug = debug

    def __repr__(self) -> str:
        return f"ErrorHandler({len(self.handlers)} handlers, debug={self.debug})"

    async def after_send(
        self, exc: Exception, scope: Scope, receive: Receive, send: Send, sent: str | None
    ) -> None:
        """Answer for `exc`; `sent` is the type of the last message the app sent, if any."""
        if scope["type"] == "websocket":
            await self.websocket_error(exc, scope, receive, send, _state_after(sent))
        else:
            await self.http_error(exc, scope, receive, send, sent is not None)

    def _lookup(self, exc: Exception) -> Callable[..., Any] | None:
        handlers = self.handlers
        if not handlers:
            return None
        if isinstance(exc, HTTPException) and exc.status_code in handlers:
            return handlers[exc.status_code]
        expected = isinstance(exc, (HTTPException, WebSocketException))
        for cls in type(exc).__mro__:
            if expected and cls is Exception:
                # Exception and 500 handlers are for unexpected errors only.
                return None
            if cls in handlers:
                return handlers[cls]
        return handlers.get(500)

    async def http_error(
        self,
        exc: Exception,
        scope: Scope,
        receive: Receive,
        send: Send,
        started: bool = False,
        connection: Any = None,
    ) -> None:
        """Answer an HTTP request for `exc` (if `started`, nothing can be answered: log)."""
        if isinstance(exc, ClientDisconnect):
            return  # nobody is left to answer
        if started:
            log_after_start(exc, scope)
            return
        if connection is None:
            connection = Request(scope, receive, send)
        response = await self.response_for(exc, connection)
        await response(scope, receive, send)

    async def response_for(self, exc: Exception, request: Request) -> Response:
        """The response for `exc` (not a ClientDisconnect): the handler's, or the default."""
        handler = self._lookup(exc)
        if handler is not None:
            try:
                result = await call_user(handler, is_async_callable(handler), request, exc)
                return to_response(result, handler)
            except Exception as handler_exc:
                logger.error("Exception handler %r failed", handler, exc_info=handler_exc)
                exc = handler_exc
        if isinstance(exc, HTTPException):
            return http_exception_response(exc)
        scope = request.scope
        logger.error("Exception in %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
        return self._server_error(exc)

    def _server_error(self, exc: Exception) -> Response:
        if self.debug:
            text = "".join(traceback.format_exception(exc))
            return PlainTextResponse(text, 500)
        return PlainTextResponse("Internal Server Error", 500)

    async def websocket_error(
        self,
        exc: Exception,
        scope: Scope,
        receive: Receive,
        send: Send,
        state: WebSocketState,
        connection: Any = None,
    ) -> None:
        """Close (or, before accept, deny) a WebSocket for `exc`."""
        if _client_left(exc):
            return
        if state in (WebSocketState.CLOSED, WebSocketState.RESPONSE):
            if not isinstance(exc, WebSocketException):
                logger.error(
                    "Exception in WebSocket %s after close", scope.get("path"), exc_info=exc
                )
            return
        websocket: WebSocket = connection
        if websocket is None:
            websocket = WebSocket(scope, receive, send)
            if state is WebSocketState.CONNECTED:  # a handler may still send or close
                websocket.client_state = websocket.application_state = state
        handler = self._lookup(exc)
        if handler is not None:
            try:
                await call_user(handler, is_async_callable(handler), websocket, exc)
            except Exception as handler_exc:
                logger.error("Exception handler %r failed", handler, exc_info=handler_exc)
                exc = handler_exc
            if websocket.application_state in (WebSocketState.CLOSED, WebSocketState.RESPONSE):
                return
            # The handler did not end the connection (say, an HTTP-style handler that
            # returned a response): close it, or deny the handshake, as below.
        connecting = websocket.application_state is WebSocketState.CONNECTING
        if isinstance(exc, WebSocketException):
            code, reason = exc.code, exc.reason
        elif isinstance(exc, HTTPException) and connecting:
            code, reason = 1008, str(exc.detail)
        else:
            logger.error("Exception in WebSocket %s", scope.get("path"), exc_info=exc)
            code, reason = 1011, ""
        if connecting and websocket.can_send_denial_response:
            # Deny the handshake with the HTTPException's own answer (or a 500).
            if isinstance(exc, HTTPException):
                await websocket.send_denial_response(http_exception_response(exc))
                return
            if code == 1011:
                await websocket.send_denial_response(self._server_error(exc))
                return
        await websocket.close(code, reason)  # before accept: the server answers 403


def log_after_start(exc: BaseException, scope: Scope) -> None:
    """Log an exception raised once the response had started (nothing can be answered).

    Our own responses take an OSError from send() (how an ASGI 2.4 server says
    the client has gone) in their stride, and the guard around foreign code
    notes it; what arrives here is an error of the app's, whatever its type.
    """
    method, path = scope.get("method", "WEBSOCKET"), scope.get("path")
    logger.error("Exception after the response started (%s %s)", method, path, exc_info=exc)


def _state_after(sent: str | None) -> WebSocketState:
    if sent is None:
        return WebSocketState.CONNECTING
    if sent == "websocket.close":
        return WebSocketState.CLOSED
    if sent.startswith("websocket.http.response"):
        return WebSocketState.RESPONSE
    return WebSocketState.CONNECTED


DEFAULT_ERRORS = ErrorHandler({})


def errors_for(scope: Scope) -> ErrorResponder:
    """The error handling of the microasgi app serving `scope` (the defaults outside one)."""
    context = context_of(scope)
    return DEFAULT_ERRORS if context is None else context.errors


def guarded(
    app: ASGIApp, middleware: Sequence[Middleware] | None, *, guard_app: bool = False
) -> ASGIApp:
    """`app` inside `middleware` (the first outermost), each middleware in a guard.

    What a middleware raises is answered right outside it, so the middleware
    around it see that answer go by (CORS headers on the 500 of a middleware
    placed inside CORSMiddleware). `guard_app` guards `app` itself too: for
    foreign apps, which do not answer their own errors.
    """
    if guard_app:
        app = ErrorGuard(app)
    for item in reversed(middleware or ()):
        app = ErrorGuard(item.cls(app, *item.args, **item.options))
    return app


class ErrorGuard:
    """Runs code that may send by itself (middleware, a mounted ASGI app) and
    answers for what it raises, knowing from the messages it saw whether a
    response had started. Our own routes need no guard: they know."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent: str | None = None
        gone: OSError | None = None

        async def tracked_send(message: Message) -> None:
            nonlocal sent, gone
            try:
                await send(message)
            except OSError as exc:
                gone = exc  # the server saying the client has left
                raise
            sent = message["type"]

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:
            if gone is not None and exc is gone:
                method, path = scope.get("method", "WEBSOCKET"), scope.get("path")
                logger.debug("Client went away during the response (%s %s): %s", method, path, exc)
                return
            await errors_for(scope).after_send(exc, scope, receive, send, sent)


def _client_left(exc: BaseException) -> bool:
    """A WebSocketDisconnect, or a group of nothing else: a handler that runs a task
    group (one task receiving, one sending) sees the client leave from inside it."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(WebSocketDisconnect)[1] is None
    return isinstance(exc, WebSocketDisconnect)
