"""Function middleware: `async def mw(request, call_next)`, run in the endpoint's own task.

Unlike an ASGI middleware, a function middleware works on Response objects:
`call_next(request)` runs the next middleware, then the endpoint, and returns
the Response the endpoint made (or the error response for what it raised),
before anything has been sent. The middleware may change its headers, or
return another response; the route sends what comes out. Nothing runs in
another task and nothing is buffered: a StreamingResponse streams when it is
sent, and context variables, background tasks and disconnects behave as
without middleware.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from microasgi._errors import errors_for
from microasgi.requests import Request
from microasgi.responses import Response
from microasgi.responses._base import to_response
from microasgi.types import Receive, Scope, Send

__all__ = ["Chain", "Respond", "compose", "respond"]

#: What a step of the chain is: take the request, give the response.
Respond = Callable[[Request], Awaitable[Response]]
#: The function middleware of an app, outermost first.
Chain = tuple[Callable[..., Any], ...]


class _Next:
    """`call_next` for one middleware: the rest of the chain."""

    __slots__ = ("func", "inner")

    def __init__(self, func: Callable[..., Any], inner: Respond) -> None:
        self.func = func
        self.inner = inner

    async def __call__(self, request: Request) -> Response:
        result = await self.func(request, self.inner)
        return result if isinstance(result, Response) else to_response(result, self.func)


def compose(chain: Chain, produce: Respond) -> Respond:
    """`produce` inside the function middleware `chain`.

    `produce` gives the endpoint's response, or the error response for what
    the endpoint raised: it raises nothing but ClientDisconnect (nobody to
    answer), which the middleware see go by.
    """
    call: Respond = produce
    for func in reversed(chain):
        call = _Next(func, call)
    return call


async def respond(
    composed: Respond, scope: Scope, receive: Receive, send: Send, request: Request
) -> None:
    """Run the composed chain for `request` and send what comes out.

    What a middleware itself raises is answered like an endpoint's error, but
    after the middleware (it cannot change that answer). Uploads the request
    parsed are closed once the response is sent.
    """
    try:
        try:
            response = await composed(request)
        except Exception as exc:
            await errors_for(scope).http_error(exc, scope, receive, send, connection=request)
            return
        await response(scope, receive, send)
    finally:
        if request._form is not None:
            await request.close()
