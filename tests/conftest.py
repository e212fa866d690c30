"""Shared fixtures: every core test runs on asyncio and on trio."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from microasgi.testclient import TestClient
from microasgi.types import ASGIApp


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
