"""What the parts below an App need to know of it, as one object in the scope.

When an App (or a Router served on its own) is entered, it puts an
`AppContext` under the scope key `CONTEXT_KEY`. Requests, WebSockets,
`url_for`, WSGI mounts and error answering read their limits, the error
handling and the router from it, never from attributes of `scope["app"]`,
which may be anybody's application.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from microasgi.types import Receive, Scope, Send, WebSocketState

__all__ = [
    "CONTEXT_KEY",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_COOKIE_SIZE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "ROOT_PATH_KEY",
    "AppContext",
    "ErrorResponder",
    "PathResolver",
    "context_of",
]

CONTEXT_KEY = "microasgi.context"
#: The root path of the outermost microasgi app, set by the first Mount crossed
#: (url_for builds absolute URLs from it).
ROOT_PATH_KEY = "microasgi.root_path"

DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_MAX_COOKIE_SIZE = 32 * 1024


class ErrorResponder(Protocol):
    """Answers for an exception (implemented by the App's error handling)."""

    async def http_error(
        self,
        exc: Exception,
        scope: Scope,
        receive: Receive,
        send: Send,
        started: bool = False,
        connection: Any = None,
    ) -> None: ...

    async def websocket_error(
        self,
        exc: Exception,
        scope: Scope,
        receive: Receive,
        send: Send,
        state: WebSocketState,
        connection: Any = None,
    ) -> None: ...

    async def response_for(self, exc: Exception, request: Any) -> Any: ...

    async def after_send(
        self, exc: Exception, scope: Scope, receive: Receive, send: Send, sent: str | None
    ) -> None: ...


class PathResolver(Protocol):
    """Something that turns a route name and parameters into a path (a Router)."""

    def url_path_for(self, name: str, /, **params: Any) -> str: ...


@dataclasses.dataclass(frozen=True, slots=True)
class AppContext:
    """One App's settings as the layers below it see them.

    `router` resolves `url_for` names: the outermost app's router, so that
    names of sibling mounts resolve from anywhere (None: not served by a
    microasgi Router).
    """

    errors: ErrorResponder
    router: PathResolver | None = None
    max_body_size: int | None = DEFAULT_MAX_BODY_SIZE
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    max_cookie_size: int | None = DEFAULT_MAX_COOKIE_SIZE
    #: Function middleware, `async def mw(request, call_next) -> response`, outermost first.
    http_middleware: tuple[Callable[..., Any], ...] = ()

    def replace(self, **changes: Any) -> AppContext:
        return dataclasses.replace(self, **changes)


def context_of(scope: Scope) -> AppContext | None:
    """The context of the microasgi app serving `scope`, or None outside one."""
    context: AppContext | None = scope.get(CONTEXT_KEY)
    return context
