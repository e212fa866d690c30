"""The middleware stack: plain ASGI callables wrapped around an app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["Middleware"]


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
        name = getattr(self.cls, "__name__", None) or repr(self.cls)
        arguments = [repr(arg) for arg in self.args]
        arguments.extend(f"{key}={value!r}" for key, value in self.options.items())
        return f"Middleware({', '.join([name, *arguments])})"
