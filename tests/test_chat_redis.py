"""The chat across processes: two servers sharing a redis-server (started by the test on a
free port), one client on each; then Redis restarts, or goes away for a while."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

import pytest

from tests.services import RedisServer, free_port, require
from tests.test_chat_integration import TIMEOUT, ChatServer, chat_server, events_of

pytest.importorskip("redis")
websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

pytestmark = pytest.mark.integration

Event = dict[str, Any]


class Peer:
    """One chat client; a task reads everything it is sent into `events`."""

    def __init__(self, ws: ClientConnection, nick: str) -> None:
        self.ws = ws
        self.nick = nick
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    async def read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                self.events += events_of(raw)
                self._changed.set()

    async def wait_for(self, match: Callable[[Event], bool], timeout: float = TIMEOUT) -> Event:
        """The first event so far (or to come) that matches."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if match(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

    async def say(self, text: str) -> None:
        await self.ws.send(json.dumps({"text": text}))

    def notices(self) -> list[str]:
        return [e["text"] for e in self.events if e["type"] == "notice"]


@contextlib.asynccontextmanager
async def peer(
    server: ChatServer, room: str, nick: str, *, own_join: bool = True
) -> AsyncIterator[Peer]:
    """A connected client; with `own_join`, once it has seen its own join (subscribed)."""
    async with connect(
        f"{server.ws_url}/ws/{room}?nick={nick}", open_timeout=TIMEOUT, close_timeout=2
    ) as ws:
        client = Peer(ws, nick)
        reader = asyncio.create_task(client.read())
        try:
            if own_join:
                await client.wait_for(lambda e: e == {"type": "join", "nick": nick})
            yield client
        finally:
            reader.cancel()


def message(text: str) -> Callable[[Event], bool]:
    return lambda e: e["type"] == "message" and e["text"] == text


def echo_or_refusal(text: str) -> Callable[[Event], bool]:
    """The sender's own message coming back (published), or the error saying it was not."""
    return lambda e: message(text)(e) or (e["type"] == "error" and e.get("message") == text)


async def cross(sender: Peer, receiver: Peer, label: str) -> int:
    """Send until a message crosses from sender to receiver; returns the undelivered count.

    While Redis is coming back, a message may be refused (the sender is told), or be
    published but miss a server that has not resubscribed yet (the sender's own, for
    its echo, or the receiver's): that server reports a gap later. Either way, try again.
    """
    undelivered = 0
    for attempt in range(20):
        text = f"{label} #{attempt}"
        await sender.say(text)
        try:
            reply = await sender.wait_for(echo_or_refusal(text), timeout=2.0)
        except TimeoutError:
            continue  # published, but the echo was lost on its way back
        if reply["type"] == "error":
            assert reply["reason"] == "not_delivered", reply
            undelivered += 1
            await asyncio.sleep(0.2)
            continue
        with contextlib.suppress(TimeoutError):
            await receiver.wait_for(message(text), timeout=1.0)
            return undelivered
    raise AssertionError(f"no message crossed: {sender.events=} {receiver.events=}")


def run(scenario: Coroutine[Any, Any, None], timeout: float = 30) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout))


def texts(client: Peer, prefix: str) -> list[str]:
    """The texts of the messages `client` received that start with `prefix`, in order."""
    return [
        e["text"] for e in client.events if e["type"] == "message" and e["text"].startswith(prefix)
    ]


def test_messages_cross_processes_and_survive_a_redis_restart(redis_server: RedisServer) -> None:
    """Redis restarts (keeping its data) while ann keeps talking: every message she was
    not told was undelivered reaches both clients once, in order, including those the
    servers' listeners missed while they reconnected (read back from the history)."""
    fast = {"MICROASGI_CHAT_RATE": "100", "MICROASGI_CHAT_BURST": "100"}
    with (
        chat_server(redis_server.url, env=fast) as one,
        chat_server(redis_server.url, env=fast) as two,
    ):

        async def scenario() -> None:
            async with peer(one, "lobby", "ann") as ann, peer(two, "lobby", "bob") as bob:
                await ann.wait_for(lambda e: e == {"type": "join", "nick": "bob"})
                for i in range(3):
                    await ann.say(f"ann {i}")
                    await bob.say(f"bob {i}")
                for client in (ann, bob):  # everything, their own messages too, in order
                    await client.wait_for(message("ann 2"))
                    await client.wait_for(message("bob 2"))
                    assert texts(client, "ann") == ["ann 0", "ann 1", "ann 2"]
                    assert texts(client, "bob") == ["bob 0", "bob 1", "bob 2"]

                restart = asyncio.create_task(asyncio.to_thread(redis_server.restart))
                sent = []
                while not restart.done() or len(sent) < 10:
                    sent.append(f"during {len(sent)}")
                    await ann.say(sent[-1])
                    await asyncio.sleep(0.05)
                await restart
                refused = set()
                for text in sent:  # each one was published (echoed) or refused
                    reply = await ann.wait_for(echo_or_refusal(text), timeout=15)
                    if reply["type"] == "error":
                        assert reply["reason"] == "not_delivered", reply
                        refused.add(text)
                published = [t for t in sent if t not in refused]
                await cross(ann, bob, "after")
                assert len(published) >= 5, (sent, refused)
                for client in (ann, bob):
                    assert texts(client, "during") == published, client.events
                    assert not [e for e in client.events if e["type"] == "notice"]

        run(scenario(), timeout=60)


def test_a_message_sent_while_redis_is_down_is_reported(redis_server: RedisServer) -> None:
    with chat_server(redis_server.url) as one, chat_server(redis_server.url) as two:

        async def scenario() -> None:
            async with peer(one, "lobby", "ann") as ann, peer(two, "lobby", "bob") as bob:
                await ann.wait_for(lambda e: e == {"type": "join", "nick": "bob"})
                await asyncio.to_thread(redis_server.stop)
                try:
                    await ann.say("into the void")
                    error = await ann.wait_for(lambda e: e["type"] == "error", timeout=10)
                    assert error["reason"] == "not_delivered"
                    assert error["message"] == "into the void"
                    assert "not delivered" in error["text"]
                finally:
                    await asyncio.to_thread(redis_server.start)
                await cross(ann, bob, "ann is back")
                await cross(bob, ann, "bob is back")
                assert not [e for e in bob.events if e.get("text") == "into the void"]

        run(scenario())


def test_joining_while_redis_is_down_closes_with_try_again_later(
    redis_server: RedisServer,
) -> None:
    from websockets.exceptions import ConnectionClosed

    with chat_server(redis_server.url) as server:

        async def scenario() -> None:
            await asyncio.to_thread(redis_server.stop)
            try:
                async with connect(
                    f"{server.ws_url}/ws/elsewhere?nick=late", open_timeout=TIMEOUT
                ) as ws:
                    with pytest.raises(ConnectionClosed) as info:
                        while True:
                            await asyncio.wait_for(ws.recv(), 20)
                    assert info.value.rcvd is not None and info.value.rcvd.code == 1013
            finally:
                await asyncio.to_thread(redis_server.start)
            async with peer(server, "elsewhere", "later") as later:
                await later.say("back again")
                await later.wait_for(lambda e: e.get("text") == "back again")

        run(scenario(), timeout=45)


def worker_pids(port: int) -> set[str]:
    """The processes holding the accepted connections to `port` (Linux, with ss)."""
    command = ["ss", "-tnpH", "state", "established", f"sport = :{port}"]
    output = subprocess.run(command, capture_output=True, text=True, timeout=5).stdout
    return set(re.findall(r"pid=(\d+)", output))


def test_workers_share_the_chat(redis_server: RedisServer) -> None:
    """`--workers 2` with redis://: clients on different workers chat with each other."""
    require(shutil.which("ss") is not None, "ss", "install iproute2 (apt-get install iproute2)")
    with chat_server(redis_server.url, workers=2) as server:

        async def scenario() -> None:
            async with AsyncExitStack() as stack:
                # Connections made one after the other tend to land on the same worker:
                # connect a few at once until both workers have some.
                peers: list[Peer] = []
                for batch in range(20):
                    peers += await asyncio.gather(
                        *(
                            stack.enter_async_context(
                                peer(server, "w", f"u{batch}-{i}", own_join=False)
                            )
                            for i in range(4)
                        )
                    )
                    if len(worker_pids(server.port)) == 2:
                        break
                else:
                    raise AssertionError("80 connections all landed on the same worker")

                # Joining at the same moment, a client may miss its own join (see
                # `peer`): wait until a probe reaches everyone, then they are all in.
                for attempt in range(6):
                    await peers[0].say(f"probe {attempt}")
                    try:
                        for p in peers:
                            await p.wait_for(message(f"probe {attempt}"), timeout=1)
                        break
                    except TimeoutError:
                        assert attempt < 5, "the workers never all heard the probe"

                for p in peers:
                    await p.say(f"hello from {p.nick}")
                for p in peers:
                    for other in peers:
                        await p.wait_for(message(f"hello from {other.nick}"))

        run(scenario())


def test_redis_unreachable_at_startup_stops_the_server_with_the_reason() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    server = ChatServer(free_port(), url)
    try:
        with pytest.raises(RuntimeError, match="exited early") as info:
            server.start(timeout=20)
        assert "cannot reach Redis at redis://127.0.0.1" in str(info.value)
    finally:
        server.close()
