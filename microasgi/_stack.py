"""The middleware stack: plain ASGI callables wrapped around an app."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from microasgi.types import ASGIApp

__all__ = ["Middleware", "wrap"]


class Middleware:
    """A middleware class and its options, instantiated when the stack is built.

    `cls(app, *args, **options)` must return an ASGI callable.
    """

    def __init__(self, cls: Any, /, *args: Any, **options: Any) -> None:
        self.cls = cls
        self.args = args
        self.options = options

    def __iter__(self) -> Iterator[Any]:
        return iter((self.cls, self.args, self.options))

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        name = getattr(self.cls, "__name__", repr(self.cls))
        return f"Middleware({name}{', ' if options else ''}{options})"


def wrap(app: ASGIApp, middleware: Sequence[Middleware] | None) -> ASGIApp:
    """Wrap `app` so the first middleware of the list is the outermost."""
    for item in reversed(middleware or ()):
        app = item.cls(app, *item.args, **item.options)
    return app
