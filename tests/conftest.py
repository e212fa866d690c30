"""Shared fixtures: every core test runs on asyncio and on trio."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from microasgi.testclient import TestClient
from microasgi.types import ASGIApp
from tests.servers import ServerPool
from tests.services import RedisServer, require


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The event loop for `@pytest.mark.anyio` tests and for `make_client`."""
    return str(request.param)


@pytest.fixture
def make_client(anyio_backend: str) -> Iterator[Callable[..., TestClient]]:
    """`make_client(app, **options)`: a TestClient on the test's backend, closed afterwards.

    Use it as `with make_client(app) as client:` to run the lifespan too.
    """
    clients: list[TestClient] = []

    def make(app: ASGIApp, **options: Any) -> TestClient:
        client = TestClient(app, backend=anyio_backend, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server on a free port (skipped, or failed in CI, if not installed)."""
    require(
        shutil.which("redis-server") is not None,
        "redis-server",
        "install it (apt-get install redis-server)",
    )
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that used the server pool gets, in its report, what any server of
    the pool that has died or stopped answering printed: the failure may be a crash's
    victim (a refused connection, a handshake without an answer) and not its cause."""
    report = yield
    pool = getattr(item, "funcargs", {}).get("server_pool")
    if report.failed and isinstance(pool, ServerPool):
        for note in pool.post_mortems():
            report.sections.append(("a server of the pool is down", note))
    return report


@pytest.fixture(scope="session")
def server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    """The servers of the matrix (tests/servers.py), each started once, on first use."""
    pool = ServerPool(tmp_path_factory.mktemp("server-certificates"))
    try:
        yield pool
    finally:
        pool.close()
