"""Calling endpoints: which argument goes where, worked out once from the signature."""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

from microasgi._concurrency import call_user, describe, is_async_callable
from microasgi.background import BackgroundTasks
from microasgi.requests import HTTPConnection

__all__ = ["CONNECTION_FIRST", "KEYWORDS", "PARAMS", "CallShape", "Endpoint"]


class CallShape(enum.IntEnum):
    """How an endpoint is called, from its signature (0 is the general case)."""

    KEYWORDS = 0  # build the keyword arguments for each call
    PARAMS = 1  # func(**path_params): takes exactly the path parameters
    CONNECTION_FIRST = 2  # func(connection, **path_params)


# PERF: looking a member up on an Enum class costs about 50 ns on CPython 3.11;
# the call path compares with these module constants instead.
KEYWORDS, PARAMS, CONNECTION_FIRST = (
    CallShape.KEYWORDS,
    CallShape.PARAMS,
    CallShape.CONNECTION_FIRST,
)


class _Binding(NamedTuple):
    """Which parameter gets what, as read from the signature."""

    param_names: tuple[str, ...]  # the path parameters the endpoint takes
    connection_name: str | None
    connection_first: bool  # the connection is the first parameter
    background_name: str | None


def _signature(func: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(func, eval_str=True)
    except (NameError, TypeError):
        # Annotations that name something only importable under TYPE_CHECKING.
        return inspect.signature(func)


def _is_subclass(annotation: Any, cls: type) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, cls)


def _bind(
    func: Callable[..., Any],
    path: str,
    path_params: Collection[str],
    connection_class: type[HTTPConnection],
    connection_names: Collection[str],
) -> _Binding:
    """Read the signature; a mistake is a TypeError naming the endpoint."""
    names: list[str] = []
    connection_name = background_name = None
    connection_first = takes_all = False
    for index, param in enumerate(_signature(func).parameters.values()):
        if param.kind is param.VAR_POSITIONAL:
            continue
        if param.kind is param.VAR_KEYWORD:
            takes_all = True
            continue
        annotation = param.annotation
        if _is_subclass(annotation, HTTPConnection):
            if not issubclass(connection_class, annotation):
                raise TypeError(
                    f"{describe(func)}: parameter {param.name!r} is annotated "
                    f"{annotation.__name__}, but this route passes a {connection_class.__name__}"
                )
        elif _is_subclass(annotation, BackgroundTasks):
            background_name = param.name
            continue
        elif param.name in path_params:
            if param.kind is param.POSITIONAL_ONLY:
                raise TypeError(
                    f"{describe(func)}: path parameter {param.name!r} cannot be positional-only"
                )
            names.append(param.name)
            continue
        elif param.name not in connection_names:  # the connection by name, whatever its type
            if param.default is param.empty:
                raise TypeError(
                    f"{describe(func)}: parameter {param.name!r} is neither a path parameter of "
                    f"{path!r} nor the connection, and has no default"
                )
            continue
        if param.kind is param.POSITIONAL_ONLY and index != 0:
            raise TypeError(
                f"{describe(func)}: a positional-only connection parameter must be first"
            )
        connection_name, connection_first = param.name, index == 0
    if takes_all:
        names = list(path_params)
    return _Binding(tuple(names), connection_name, connection_first, background_name)


def _takes_by_position(func: Callable[..., Any], name: str, index: int) -> bool:
    """Whether calling `func` itself (not what a decorator wraps: the signature
    read above follows `__wrapped__`) may pass `name` as argument `index`."""
    try:
        params = list(inspect.signature(func, follow_wrapped=False).parameters.values())
    except (TypeError, ValueError):
        return False
    return (
        index < len(params)
        and params[index].name == name
        and params[index].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    )


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
        "direct",
        "func",
        "is_async",
        "only",
        "param_count",
        "param_names",
        "shape",
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
        binding = _bind(func, path, path_params, connection_class, connection_names)
        self.func = func
        self.is_async = is_async_callable(func)
        self.param_names = binding.param_names
        self.connection_name = binding.connection_name
        self.background_name = binding.background_name
        # The short shapes pass the path parameters on as they are, which is right
        # only when there are exactly the route's own (no mount's among them).
        self.param_count = len(path_params)
        self.shape = CallShape.KEYWORDS
        if binding.background_name is None and set(binding.param_names) == set(path_params):
            if binding.connection_name is None:
                self.shape = CallShape.PARAMS
            elif binding.connection_first:
                self.shape = CallShape.CONNECTION_FIRST
        # What a route may call without `__call__`: an async endpoint of a short shape.
        self.direct = self.is_async and self.shape is not CallShape.KEYWORDS
        # The route's one path parameter, when the short shapes may pass it by
        # position: right after the connection, or first without one.
        self.only: str | None = None
        if self.shape is not CallShape.KEYWORDS and len(path_params) == 1:
            (name,) = path_params
            first = 1 if self.shape is CallShape.CONNECTION_FIRST else 0
            if _takes_by_position(func, name, first):
                self.only = name

    async def __call__(
        self, connection: HTTPConnection, params: dict[str, Any]
    ) -> tuple[Any, BackgroundTasks | None]:
        """Call the endpoint; returns its result and the injected background tasks."""
        shape = self.shape if len(params) == self.param_count else KEYWORDS
        background = None
        if shape is CONNECTION_FIRST:
            result = await call_user(self.func, self.is_async, connection, **params)
        elif shape is PARAMS:
            result = await call_user(self.func, self.is_async, **params)
        else:
            kwargs = {name: params[name] for name in self.param_names}
            if self.connection_name is not None:
                kwargs[self.connection_name] = connection
            if self.background_name is not None:
                background = kwargs[self.background_name] = BackgroundTasks()
            result = await call_user(self.func, self.is_async, **kwargs)
        return result, background

    def __repr__(self) -> str:
        return f"Endpoint({describe(self.func)}, shape={self.shape.name})"
