"""The one way user functions are called: `is_async_callable` and `call_user`."""

from __future__ import annotations

import functools
import threading
from typing import Any

import pytest

from microasgi import App, BackgroundTask, BackgroundTasks
from microasgi._concurrency import call_user, describe, is_async_callable
from tests.helpers import MakeClient


async def coroutine_function(x: int = 0) -> int:
    return x


def plain_function(x: int = 0) -> int:
    return x


class AsyncCallable:
    async def __call__(self, x: int = 0) -> int:
        return x


class SyncCallable:
    def __call__(self, x: int = 0) -> int:
        return x


class WithAsyncMethod:
    async def method(self) -> None: ...


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (coroutine_function, True),
        (plain_function, False),
        (AsyncCallable(), True),
        (SyncCallable(), False),
        (functools.partial(coroutine_function, 1), True),
        (functools.partial(functools.partial(coroutine_function), 1), True),
        (functools.partial(AsyncCallable(), 1), True),
        (functools.partial(plain_function, 1), False),
        (functools.partial(SyncCallable(), 1), False),
        (WithAsyncMethod().method, True),
        (AsyncCallable, False),  # calling the class builds an instance
        (lambda: None, False),
        (print, False),
    ],
)
def test_is_async_callable(func: Any, expected: bool) -> None:
    assert is_async_callable(func) is expected


@pytest.mark.anyio
async def test_call_user_awaits_async_and_threads_sync() -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def sync(x: int) -> int:
        threads.append(threading.get_ident())
        return x * 2

    assert await call_user(sync, False, 21) == 42
    assert threads and threads[0] != loop_thread
    assert await call_user(coroutine_function, True, x=7) == 7


def test_describe_names_functions_and_callable_objects() -> None:
    assert describe(plain_function) == "plain_function"
    assert describe(AsyncCallable()) == "AsyncCallable"
    assert "partial" in describe(functools.partial(plain_function))


def test_background_task_with_partial_of_async_callable_object_runs(
    make_client: MakeClient,
) -> None:
    ran: list[Any] = []

    class Notify:
        async def __call__(self, who: str, what: str) -> None:
            ran.append((who, what))

    app = App()

    @app.get("/")
    async def index(tasks: BackgroundTasks) -> str:
        tasks.add_task(functools.partial(Notify(), "alice"), "joined")
        return "ok"

    @app.get("/single")
    async def single() -> Any:
        from microasgi import PlainTextResponse

        task = BackgroundTask(functools.partial(Notify(), "bob"), what="left")
        return PlainTextResponse("ok", background=task)

    client = make_client(app)
    assert client.get("/").text == "ok"
    assert client.get("/single").text == "ok"
    assert ran == [("alice", "joined"), ("bob", "left")]


def test_sync_exception_handler_runs_in_a_worker_thread(make_client: MakeClient) -> None:
    app = App()
    loop_threads: list[int] = []
    handler_threads: list[int] = []

    @app.get("/")
    async def index() -> None:
        loop_threads.append(threading.get_ident())
        raise KeyError("x")

    @app.exception_handler(KeyError)
    def handler(request: Any, exc: KeyError) -> str:
        handler_threads.append(threading.get_ident())
        return "handled"

    assert make_client(app).get("/").text == "handled"
    assert handler_threads[0] != loop_threads[0]


def test_async_callable_object_exception_handler_is_awaited(make_client: MakeClient) -> None:
    class Handler:
        async def __call__(self, request: Any, exc: Exception) -> str:
            return f"awaited {type(exc).__name__}"

    app = App(exception_handlers={KeyError: Handler()})

    @app.get("/")
    async def index() -> None:
        raise KeyError("x")

    assert make_client(app).get("/").text == "awaited KeyError"


def test_repr_of_background_tasks() -> None:
    tasks = BackgroundTasks()
    tasks.add_task(plain_function, 1)
    assert repr(tasks) == "BackgroundTasks([BackgroundTask(plain_function)])"
