"""The server matrix, WebSockets: echo, close codes both ways, the size limit, denied
handshakes, subprotocols and the chat example with two clients, under every server
of tests/servers.py, spoken to with the `websockets` client library."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.servers import (
    GRANIAN_ACCEPT_HEADERS,
    HYPERCORN_WS_1006,
    WS_SERVERS,
    Server,
    ServerPool,
    known_bug,
)

pytestmark = pytest.mark.integration
TIMEOUT = 5


@pytest.fixture(params=WS_SERVERS)
def server(server_pool: ServerPool, request: pytest.FixtureRequest) -> Server:
    return server_pool.get(request.param, request.node.nodeid)


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 20))


def events(server: Server) -> list[Any]:
    return httpx.get(server.http_url + "/events", timeout=5).json()  # type: ignore[no-any-return]


def disconnect_code(server: Server, tag: str) -> int:
    """The close code the /ws handler was told for the connection tagged `tag`."""
    deadline = time.monotonic() + 10
    while True:
        for event in events(server):
            if event[:2] == ["ws disconnect", tag]:
                return int(event[2])
        assert time.monotonic() < deadline, f"no disconnect recorded for {tag}"
        time.sleep(0.05)


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Wait for the server's close; its code and reason as the client received them.

    A test whose handler closes waits for it before leaving: a client closing at the
    same moment races the handler's close, which can bring a server down
    (HYPERCORN_TRIO_CLOSE_RACE: its own test is in tests/test_servers_bugs.py)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    except ConnectionClosed as exc:
        if exc.rcvd is None:
            return None, None
        return exc.rcvd.code, exc.rcvd.reason


def test_echo_text_and_bytes(server: Server) -> None:
    async def scenario() -> None:
        async with connect(server.ws_url + "/ws", open_timeout=TIMEOUT) as ws:
            assert await ws.recv() == "hello from lifespan"
            await ws.send("ping")
            assert await ws.recv() == "echo: ping"
            await ws.send(b"\x00\x01\x02")
            assert await ws.recv() == b"\x02\x01\x00"

    run(scenario())


@pytest.mark.parametrize("code", [1000, 4005])
def test_the_clients_close_code_reaches_the_handler(
    request: pytest.FixtureRequest, server: Server, code: int
) -> None:
    known_bug(request, server.kind.id.startswith("hypercorn"), HYPERCORN_WS_1006)

    tag = f"{server.kind.id}-{code}"

    async def scenario() -> None:
        async with connect(f"{server.ws_url}/ws?tag={tag}", open_timeout=TIMEOUT) as ws:
            await ws.recv()
            await ws.send("first")
            await ws.recv()
            await ws.close(code, "client leaves")

    run(scenario())
    assert disconnect_code(server, tag) == code


def test_the_handlers_close_code_and_reason_reach_the_client(server: Server) -> None:
    async def scenario() -> None:
        async with connect(server.ws_url + "/ws", open_timeout=TIMEOUT) as ws:
            await ws.recv()
            await ws.send("close:4001:see you")
            assert await closed_with(ws) == (4001, "see you")

    run(scenario())


def test_a_failing_handler_closes_with_1011(server: Server) -> None:
    async def scenario() -> None:
        async with connect(server.ws_url + "/ws", open_timeout=TIMEOUT) as ws:
            await ws.recv()
            await ws.send("raise")
            assert (await closed_with(ws))[0] == 1011

    run(scenario())


def test_a_message_over_the_size_limit_closes_with_1009(server: Server) -> None:
    async def scenario() -> None:
        async with connect(server.ws_url + "/ws-small", open_timeout=TIMEOUT) as ws:
            await ws.send("x" * 1000)
            assert await ws.recv() == "got 1000"
            await ws.send("x" * 2000)
            assert (await closed_with(ws))[0] == 1009

    run(scenario())


def test_denied_and_unknown_handshakes_get_403(server: Server) -> None:
    async def scenario() -> None:
        for path in ("/ws-deny", "/no-such-socket"):
            with pytest.raises(InvalidStatus) as denied:
                async with connect(server.ws_url + path, open_timeout=TIMEOUT):
                    pass
            assert denied.value.response.status_code == 403, path

    run(scenario())


def test_subprotocol_negotiation(server: Server) -> None:
    async def scenario() -> None:
        offered: Any = ["chat.v1", "chat.v2"]
        async with connect(
            server.ws_url + "/ws-accept", subprotocols=offered, open_timeout=TIMEOUT
        ) as ws:
            assert ws.subprotocol == "chat.v2"
            assert json.loads(await ws.recv()) == {"offered": ["chat.v1", "chat.v2"]}
            assert await closed_with(ws) == (1000, "")

    run(scenario())


def test_accept_headers_reach_the_client(request: pytest.FixtureRequest, server: Server) -> None:
    known_bug(request, server.kind.id == "granian", GRANIAN_ACCEPT_HEADERS)

    async def scenario() -> None:
        async with connect(server.ws_url + "/ws-accept", open_timeout=TIMEOUT) as ws:
            assert ws.response is not None
            assert ws.response.headers.get("x-accepted") == "yes"
            assert (await closed_with(ws))[0] == 1000

    run(scenario())


async def next_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next chat event of `kind`, skipping the others (joins, history...)."""
    while True:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if event.get("type") == kind:
            return event


def test_the_chat_with_two_clients(server: Server) -> None:
    room = f"matrix-{server.kind.id}"
    url = f"{server.ws_url}/chat/ws/{room}"

    async def scenario() -> None:
        async with connect(url + "?nick=ann", open_timeout=TIMEOUT) as ann:
            async with connect(url + "?nick=bob", open_timeout=TIMEOUT) as bob:
                joined = await next_of(ann, "join")
                while joined.get("nick") != "bob":
                    joined = await next_of(ann, "join")
                await ann.send(json.dumps({"text": "hello bob"}))
                message = await next_of(bob, "message")
                assert (message["nick"], message["text"]) == ("ann", "hello bob")
                await bob.send(json.dumps({"text": "hi ann"}))
                reply = await next_of(ann, "message")
                while reply["nick"] != "bob":
                    reply = await next_of(ann, "message")
                assert reply["text"] == "hi ann"
            left = await next_of(ann, "leave")
            assert left["nick"] == "bob"

    run(scenario())
