"""The one way microasgi calls a user function: await it, or run it in a worker thread.

Endpoints, exception handlers and background tasks all go through here, so
"is this async?" has one answer everywhere.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread

__all__ = ["call_user", "describe", "is_async_callable"]


def is_async_callable(func: Any) -> bool:
    """True for an `async def` function, an object whose class has an `async def
    __call__`, and a `functools.partial` of either (however deeply nested)."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    if inspect.isclass(func) or inspect.isroutine(func):
        return False  # calling a class builds an instance, not a coroutine
    return inspect.iscoroutinefunction(getattr(type(func), "__call__", None))  # noqa: B004


def call_user(
    func: Callable[..., Any], is_async: bool, /, *args: Any, **kwargs: Any
) -> Awaitable[Any]:
    """What to await to call `func`: its coroutine when `is_async` (see
    `is_async_callable`), else a run in a worker thread, so that it cannot block
    the event loop. (A plain function returning the awaitable adds no coroutine
    frame to the endpoint's call.)"""
    if is_async:
        coroutine: Awaitable[Any] = func(*args, **kwargs)
        return coroutine
    return anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))


def describe(func: Any) -> str:
    """How logs and error messages name a user function."""
    name = getattr(func, "__qualname__", None)
    if name is None and callable(func) and not isinstance(func, functools.partial):
        name = getattr(type(func), "__qualname__", None)  # a callable object
    return name or repr(func)
