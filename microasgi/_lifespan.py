"""The lifespan protocol: startup and shutdown of an app and everything mounted in it.

Lifespans of mounted Apps and Routers run too, parent first, in mount order,
and shut down in reverse. Every yielded mapping is merged into the lifespan
state that each request then sees as `request.state`. Coroutines registered
with `@app.background_task` run from after startup until shutdown.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

import anyio

from microasgi.datastructures import State
from microasgi.types import Receive, Scope, Send

__all__ = ["Lifespan", "LifespanOwner", "serve_empty_lifespan", "serve_lifespan"]

logger = logging.getLogger("microasgi")

Lifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]


class LifespanOwner(Protocol):
    """An App or Router: a lifespan, background tasks, and Apps or Routers mounted in it."""

    lifespan_state: dict[str, Any] | None

    @property
    def lifespan_context(self) -> Lifespan | None: ...

    @property
    def background_tasks(self) -> list[Callable[..., Any]]: ...

    def lifespan_children(self) -> Iterable[LifespanOwner]: ...

    def _prepare(self) -> None:
        """Build now what the first request would otherwise build (the route lookup)."""
        ...


def _participants(root: LifespanOwner) -> list[LifespanOwner]:
    """The root and every App/Router mounted below it, each once, parent first."""
    seen: set[int] = set()
    found: list[LifespanOwner] = []

    def visit(owner: LifespanOwner) -> None:
        if id(owner) in seen:
            return
        seen.add(id(owner))
        found.append(owner)
        for child in owner.lifespan_children():
            visit(child)

    visit(root)
    return found


def _context(owner: LifespanOwner) -> AbstractAsyncContextManager[Any] | None:
    factory = owner.lifespan_context
    if factory is None:
        return None
    if inspect.isasyncgenfunction(factory):
        factory = asynccontextmanager(factory)
    context: AbstractAsyncContextManager[Any] = factory(owner)
    return context


async def _run_background(func: Callable[..., Any], state: State) -> None:
    name = getattr(func, "__qualname__", repr(func))
    try:
        if inspect.signature(func).parameters:
            await func(state)
        else:
            await func()
    except Exception:
        logger.exception("Background task %s crashed", name)
    else:
        logger.info("Background task %s finished", name)


async def _startup(owners: list[LifespanOwner], stack: AsyncExitStack) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for owner in owners:
        context = _context(owner)
        if context is None:
            continue
        value = await stack.enter_async_context(context)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise TypeError(f"a lifespan must yield a mapping or None, not {type(value).__name__}")
        clash = merged.keys() & value.keys()
        if clash:
            raise RuntimeError(f"lifespan state key(s) {sorted(clash)} yielded by two lifespans")
        merged.update(value)
    return merged


async def serve_lifespan(owner: LifespanOwner, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer the server's lifespan events for `owner` and everything mounted in it."""
    owners = _participants(owner)
    message = await receive()
    if message["type"] != "lifespan.startup":  # pragma: no cover - a server bug
        return
    state: dict[str, Any] = scope["state"] if isinstance(scope.get("state"), dict) else {}
    stack = AsyncExitStack()
    try:
        state.update(await _startup(owners, stack))
        for participant in owners:
            participant._prepare()  # part of starting: a failure is a failed startup
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            try:
                await stack.aclose()
            except Exception:
                logger.exception("Error while undoing a failed startup")
        if not isinstance(exc, Exception):
            raise
        logger.exception("Application startup failed")
        await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
        return
    for participant in owners:
        participant.lifespan_state = state
    await send({"type": "lifespan.startup.complete"})

    tasks = [func for participant in owners for func in participant.background_tasks]
    async with anyio.create_task_group() as tg:
        for func in tasks:
            tg.start_soon(_run_background, func, State(state))
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        tg.cancel_scope.cancel()

    try:
        await stack.aclose()
    except Exception as exc:
        logger.exception("Application shutdown failed")
        await send({"type": "lifespan.shutdown.failed", "message": f"{type(exc).__name__}: {exc}"})
        return
    finally:
        for participant in owners:
            participant.lifespan_state = None
    await send({"type": "lifespan.shutdown.complete"})


async def serve_empty_lifespan(receive: Receive, send: Send) -> None:
    """Answer the lifespan events of an app with nothing to start or stop.

    Servers wait for an answer to each event, so an app served alone must say so.
    """
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
