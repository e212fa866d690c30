"""Work that runs after the response has been sent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from microasgi._concurrency import call_user, describe, is_async_callable

__all__ = ["BackgroundTask", "BackgroundTasks"]

logger = logging.getLogger("microasgi")


class BackgroundTask:
    """One call to run after the response; a plain function runs in a worker thread."""

    def __init__(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.is_async = is_async_callable(func)

    async def __call__(self) -> None:
        await call_user(self.func, self.is_async, *self.args, **self.kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({describe(self.func)})"


class BackgroundTasks(BackgroundTask):
    """Several calls, run in order after the response.

    A task that raises is logged on the ``microasgi`` logger and the rest still run.
    """

    def __init__(self, tasks: list[BackgroundTask] | None = None) -> None:
        self.tasks: list[BackgroundTask] = list(tasks or [])

    def add_task(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Run `func(*args, **kwargs)` after the response (a plain function in a worker thread)."""
        self.tasks.append(BackgroundTask(func, *args, **kwargs))

    async def __call__(self) -> None:
        for task in self.tasks:
            try:
                await task()
            except Exception:
                logger.exception("Background task %s failed", describe(task.func))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.tasks!r})"
