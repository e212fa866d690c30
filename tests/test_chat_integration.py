"""The chat example served by a real uvicorn (`python -m microasgi run`), spoken to with
the `websockets` client library: several clients in two rooms."""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import ServerProcess, free_port

pytest.importorskip("uvicorn")
websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import InvalidStatus  # noqa: E402

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0


# -- a chat server in a subprocess (also used by test_chat_redis and test_chat_browser) --


class ChatServer(ServerProcess):
    """`python -m microasgi run examples.chat:app` in a process of its own."""

    def __init__(
        self,
        port: int,
        broadcast_url: str = "memory://",
        workers: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            "examples.chat:app",
            port,
            env={"MICROASGI_BROADCAST_URL": broadcast_url, **(env or {})},
            args=["--workers", str(workers)] if workers else [],
        )
        self.broadcast_url = broadcast_url
        self.workers = workers


@contextlib.contextmanager
def chat_server(
    broadcast_url: str = "memory://",
    *,
    workers: int | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[ChatServer]:
    server = ChatServer(free_port(), broadcast_url, workers, env)
    try:
        server.start()
        yield server
    finally:
        server.close()


def events_of(frame: str | bytes) -> list[Any]:
    """The events in one frame from the chat: one, or several in a batch."""
    event = json.loads(frame)
    return list(event["events"]) if event["type"] == "batch" else [event]


# Events a connection received in a batch and the test has not read yet.
_unread: weakref.WeakKeyDictionary[ClientConnection, list[Any]] = weakref.WeakKeyDictionary()


async def next_event(ws: ClientConnection, *types: str, timeout: float = TIMEOUT) -> Any:
    """The next event of one of `types` (any if none), skipping the others."""
    unread = _unread.setdefault(ws, [])
    async with asyncio.timeout(timeout):
        while True:
            if not unread:
                unread += events_of(await ws.recv())
            event = unread.pop(0)
            if not types or event["type"] in types:
                return event


async def join(stack: AsyncExitStack, url: str, nick: str) -> ClientConnection:
    """Connect and wait for our own join: from then on we receive the room's messages."""
    ws = await stack.enter_async_context(connect(url, open_timeout=TIMEOUT, close_timeout=2))
    event = await next_event(ws)
    assert event == {"type": "join", "nick": nick}
    return ws


# -- the tests -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ChatServer]:
    with chat_server() as server:
        yield server


def test_pages(server: ChatServer) -> None:
    with httpx.Client(base_url=server.http_url, timeout=TIMEOUT) as client:
        landing = client.get("/")
        assert landing.status_code == 200
        assert "<form" in landing.text
        page = client.get("/rooms/alpha")
        assert page.status_code == 200
        assert 'data-room="alpha"' in page.text
        assert client.get("/rooms/no%20such").status_code == 404
        assert client.get("/static/chat.js").headers["content-type"].startswith("text/javascript")


ROOMS = {"alpha": ["ann", "al", "ada"], "beta": ["bob", "bea"]}
PER_CLIENT = 8


def test_every_message_reaches_its_room_only_in_order(server: ChatServer) -> None:
    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            clients: dict[str, tuple[str, ClientConnection]] = {}
            for room, nicks in ROOMS.items():
                for nick in nicks:
                    ws = await join(stack, f"{server.ws_url}/ws/{room}?nick={nick}", nick)
                    clients[nick] = (room, ws)

            async def talk(nick: str) -> list[tuple[str, str]]:
                """Send our messages while reading the room's; returns (nick, text) pairs."""
                room, ws = clients[nick]
                expected = len(ROOMS[room]) * PER_CLIENT
                received: list[tuple[str, str]] = []

                async def send() -> None:
                    for i in range(PER_CLIENT):
                        await ws.send(json.dumps({"text": f"{room}/{nick}/{i}"}))

                sending = asyncio.create_task(send())
                while len(received) < expected:
                    event = await next_event(ws, "message", "error")
                    assert event["type"] == "message", event
                    received.append((event["nick"], event["text"]))
                await sending
                return received

            results = await asyncio.gather(*(talk(nick) for nick in clients))

            # Everything published; one last marker per room, and nothing else may come first.
            for room, nicks in ROOMS.items():
                _, first = clients[nicks[0]]
                await first.send(json.dumps({"text": f"{room}/end"}))
            for nick, (room, ws) in clients.items():
                event = await next_event(ws, "message", "error")
                assert event["text"] == f"{room}/end", (nick, event)

            for nick, received in zip(clients, results, strict=True):
                room = clients[nick][0]
                for sender, text in received:
                    assert sender in ROOMS[room], (nick, sender, text)
                    assert text.startswith(f"{room}/{sender}/"), (nick, sender, text)
                for sender in ROOMS[room]:
                    theirs = [text for who, text in received if who == sender]
                    assert theirs == [f"{room}/{sender}/{i}" for i in range(PER_CLIENT)], nick

            # Leaving is announced to the room.
            _, ada = clients.pop("ada")
            await ada.close()
            for nick in ("ann", "al"):
                _, ws = clients[nick]
                assert await next_event(ws) == {"type": "leave", "nick": "ada"}

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_bad_input_through_the_server(server: ChatServer) -> None:
    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as denied:
            async with connect(f"{server.ws_url}/ws/alpha?nick=%00", open_timeout=TIMEOUT):
                pass
        assert denied.value.response.status_code == 403
        assert b"invalid nickname" in denied.value.response.body
        with pytest.raises(InvalidStatus) as denied:
            async with connect(f"{server.ws_url}/ws/no!room?nick=x", open_timeout=TIMEOUT):
                pass
        assert denied.value.response.status_code == 403

        async with AsyncExitStack() as stack:
            ws = await join(stack, f"{server.ws_url}/ws/gamma?nick=eve", "eve")
            await ws.send("not json")
            assert (await next_event(ws))["reason"] == "invalid"
            await ws.send(json.dumps({"text": "x" * 2001}))
            assert "longer than 2000" in (await next_event(ws))["text"]
            await ws.send(json.dumps({"text": "<script>alert(1)</script>"}))
            event = await next_event(ws)
            assert (event["type"], event["text"]) == ("message", "<script>alert(1)</script>")

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_a_client_that_vanishes_without_a_close_frame(server: ChatServer) -> None:
    """The TCP connection just drops (no close frame): the room hears the leave, and the
    server stays well."""

    async def scenario() -> None:
        url = f"{server.ws_url}/ws/vanish"
        async with AsyncExitStack() as stack:
            stay = await join(stack, url + "?nick=stay", "stay")
            gone = await stack.enter_async_context(
                connect(url + "?nick=gone", open_timeout=TIMEOUT, close_timeout=1)
            )
            assert await next_event(gone) == {"type": "join", "nick": "gone"}
            assert await next_event(stay, "join") == {"type": "join", "nick": "gone"}
            gone.transport.abort()  # reset the connection, no closing handshake
            assert await next_event(stay, "leave") == {"type": "leave", "nick": "gone"}
            await stay.send(json.dumps({"text": "still here"}))
            event = await next_event(stay, "message")
            assert (event["nick"], event["text"]) == ("stay", "still here")

    asyncio.run(scenario())
    assert server.process is not None and server.process.poll() is None
    assert "Traceback" not in server.output()


def test_join_redirect_ignores_the_host_header(server: ChatServer) -> None:
    """uvicorn passes any Host header through: the redirect must not be built from it,
    and a host the chat does not serve is refused before it reaches a route."""
    with httpx.Client(base_url=server.http_url, timeout=TIMEOUT) as client:
        params = {"room": "lobby", "nick": "ann"}
        response = client.get("/join", params=params, headers={"host": "localhost:1"})
        assert response.status_code == 303
        assert response.headers["location"] == "/rooms/lobby?nick=ann"
        response = client.get("/join", params=params, headers={"host": "evil.example"})
        assert response.status_code == 400


def test_a_deeply_nested_frame_gets_an_error_event(server: ChatServer) -> None:
    """Before: json.loads hit its recursion limit, the handler died and the connection
    closed with 1011, with a traceback in the log."""

    async def scenario() -> None:
        async with AsyncExitStack() as stack:
            ws = await join(stack, f"{server.ws_url}/ws/nest?nick=deep", "deep")
            await ws.send("[" * 10_000)
            event = await next_event(ws)
            assert (event["type"], event["reason"]) == ("error", "invalid")
            await ws.send(json.dumps({"text": "still here"}))
            assert (await next_event(ws, "message"))["text"] == "still here"

    asyncio.run(asyncio.wait_for(scenario(), 20))
    assert "Traceback" not in server.output()


FLOOD = 10_000


def test_a_flooding_client_is_closed_and_the_others_are_heard(server: ChatServer) -> None:
    """One client sends 10,000 messages as fast as it can while another sends 10: the
    reader gets all 10 (before: 0 to 9 of them, as the flood pushed them out of its
    queue), and the flooder gets rate_limited errors, then a close with 1008."""

    async def scenario() -> None:
        url = f"{server.ws_url}/ws/flood"
        async with AsyncExitStack() as stack:
            reader = await join(stack, url + "?nick=reader", "reader")
            good = await join(stack, url + "?nick=good", "good")
            flood = await join(stack, url + "?nick=flood", "flood")
            half_sent = asyncio.Event()

            async def flooding() -> int:
                for i in range(FLOOD):
                    try:
                        await flood.send(json.dumps({"text": f"flood {i}"}))
                    except websockets.ConnectionClosed:
                        return i
                    if i == 50:
                        half_sent.set()
                return FLOOD

            async def behaving() -> None:
                await half_sent.wait()
                for i in range(10):
                    await good.send(json.dumps({"text": f"good {i}"}))
                    await asyncio.sleep(0.01)

            async def flood_events() -> tuple[list[str], int | None]:
                reasons = []
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for raw in flood:
                        for event in events_of(raw):
                            if event["type"] == "error":
                                reasons.append(event["reason"])
                return reasons, flood.close_code

            watching = asyncio.create_task(flood_events())
            await asyncio.gather(flooding(), behaving())
            goods: list[str] = []
            floods = 0
            while len(goods) < 10:
                event = await next_event(reader, "message")
                if event["nick"] == "good":
                    goods.append(event["text"])
                else:
                    floods += 1
            assert goods == [f"good {i}" for i in range(10)]
            assert floods <= 15  # its burst (10) and what refilled meanwhile
            reasons, code = await asyncio.wait_for(watching, TIMEOUT)
            assert set(reasons) == {"rate_limited"}
            assert code == 1008

    asyncio.run(asyncio.wait_for(scenario(), 60))
