"""Calling endpoints: parameter binding worked out once, and return-value conversion."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection
from typing import Any

import anyio.to_thread

from microasgi.background import BackgroundTasks
from microasgi.requests import HTTPConnection

__all__ = ["Endpoint", "is_async_callable"]


def is_async_callable(func: Any) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or (
        callable(func) and inspect.iscoroutinefunction(getattr(func, "__call__", None))  # noqa: B004
    )


def describe(func: Any) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def _signature(func: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(func, eval_str=True)
    except (NameError, TypeError):
        # Annotations that name something only importable under TYPE_CHECKING.
        return inspect.signature(func)


class Endpoint:
    """An endpoint with its call worked out from its signature.

    A parameter gets the connection object when it is annotated with the
    connection class (or a parent such as HTTPConnection) or has one of
    `connection_names`; a `BackgroundTasks` annotation gets a fresh task list
    that runs after the response; any other name must be a path parameter or
    have a default. Mistakes are reported when the route is added.
    """

    __slots__ = (
        "background_name",
        "connection_name",
        "func",
        "is_async",
        "mode",
        "param_count",
        "param_names",
    )

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        path: str,
        path_params: Collection[str],
        connection_class: type[HTTPConnection],
        connection_names: Collection[str],
    ) -> None:
        self.func = func
        self.is_async = is_async_callable(func)
        self.connection_name: str | None = None
        self.background_name: str | None = None
        names: list[str] = []
        takes_all = False
        first_is_connection = False
        signature = _signature(func)
        for index, param in enumerate(signature.parameters.values()):
            annotation = param.annotation
            if param.kind is param.VAR_POSITIONAL:
                continue
            if param.kind is param.VAR_KEYWORD:
                takes_all = True
                continue
            is_connection = False
            if isinstance(annotation, type) and issubclass(annotation, HTTPConnection):
                if not issubclass(connection_class, annotation):
                    raise TypeError(
                        f"{describe(func)}: parameter {param.name!r} is annotated "
                        f"{annotation.__name__}, but this route passes a "
                        f"{connection_class.__name__}"
                    )
                is_connection = True
            elif isinstance(annotation, type) and issubclass(annotation, BackgroundTasks):
                self.background_name = param.name
            elif param.name in path_params:
                if param.kind is param.POSITIONAL_ONLY:
                    raise TypeError(
                        f"{describe(func)}: path parameter {param.name!r} cannot be positional-only"
                    )
                names.append(param.name)
            elif param.name in connection_names:
                is_connection = True  # by its name, whatever (else) it is annotated with
            elif param.default is param.empty:
                raise TypeError(
                    f"{describe(func)}: parameter {param.name!r} is neither a path parameter of "
                    f"{path!r} nor the connection, and has no default"
                )
            if is_connection:
                self.connection_name = param.name
                first_is_connection = index == 0
            if is_connection and param.kind is param.POSITIONAL_ONLY and index != 0:
                raise TypeError(
                    f"{describe(func)}: a positional-only connection parameter must be first"
                )
        if takes_all:
            names = list(path_params)
        self.param_names = tuple(names)
        # The fast modes pass the path parameters on as they are, which is right
        # only when there are exactly the route's own (no mount's among them).
        self.param_count = len(path_params)
        every_param = set(names) == set(path_params)
        # The usual shapes get a call without building a new dict.
        if self.background_name is None and every_param:
            if self.connection_name is None:
                self.mode = 1  # func(**params)
            elif first_is_connection:
                self.mode = 2  # func(conn, **params)
            else:
                self.mode = 0
        else:
            self.mode = 0

    async def __call__(
        self, connection: HTTPConnection, params: dict[str, Any]
    ) -> tuple[Any, BackgroundTasks | None]:
        """Call the endpoint; returns its result and the injected background tasks."""
        mode = self.mode if len(params) == self.param_count else 0
        background = None
        if mode == 2:
            args: tuple[Any, ...] = (connection,)
            kwargs = params
        elif mode == 1:
            args = ()
            kwargs = params
        else:
            args = ()
            kwargs = {name: params[name] for name in self.param_names}
            if self.connection_name is not None:
                kwargs[self.connection_name] = connection
            if self.background_name is not None:
                background = kwargs[self.background_name] = BackgroundTasks()
        if self.is_async:
            return await self.func(*args, **kwargs), background
        call = functools.partial(self.func, *args, **kwargs)
        return await anyio.to_thread.run_sync(call), background
