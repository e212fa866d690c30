"""Broadcast: memory:// on asyncio and trio; redis:// against a real redis-server."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from microasgi.broadcast import Broadcast, BroadcastError, Event
from tests.services import RedisServer, free_port

pytestmark = pytest.mark.anyio


async def next_event(subscriber: Any, timeout: float = 5.0) -> Event:
    with anyio.fail_after(timeout):
        event: Event = await subscriber.get()
        return event


# -- memory:// ----------------------------------------------------------------------


async def test_messages_reach_every_subscriber_of_the_channel_in_order() -> None:
    async with (
        Broadcast() as broadcast,
        broadcast.subscribe("a") as first,
        broadcast.subscribe("a") as second,
        broadcast.subscribe("b") as other,
    ):
        for text in ("one", "two", "three"):
            await broadcast.publish("a", text)
        for subscriber in (first, second):
            got = [(await next_event(subscriber)).message for _ in range(3)]
            assert got == ["one", "two", "three"]
        assert broadcast.subscriber_count("a") == 2
        with anyio.move_on_after(0.05) as scope:
            await other.get()
        assert scope.cancelled_caught  # nothing for channel b


async def test_subscription_ends_with_its_block_and_with_disconnect() -> None:
    received: list[Event] = []
    async with anyio.create_task_group() as tg:
        broadcast = Broadcast("memory://")
        await broadcast.connect()
        async with broadcast.subscribe("a"):
            assert broadcast.subscriber_count("a") == 1
        assert broadcast.subscriber_count("a") == 0
        async with broadcast.subscribe("a") as subscriber:

            async def read() -> None:
                async for event in subscriber:
                    received.append(event)

            tg.start_soon(read)
            await broadcast.publish("a", "last")
            await anyio.wait_all_tasks_blocked()
            await broadcast.disconnect()  # the iteration ends: read() returns
    assert [e.message for e in received] == ["last"]


async def test_a_slow_subscriber_drops_the_oldest_and_is_told_how_many() -> None:
    async with (
        Broadcast(max_queue=3) as broadcast,
        broadcast.subscribe("a") as slow,
        broadcast.subscribe("a") as fast,
    ):
        fast_got: list[str | None] = []
        for number in range(5):
            await broadcast.publish("a", str(number))
            fast_got.append((await next_event(fast)).message)  # keeps up
        assert fast_got == ["0", "1", "2", "3", "4"]
        assert fast.dropped == 0
        gap = await next_event(slow)
        assert (gap.kind, gap.missed, gap.message) == ("gap", 2, None)
        assert [(await next_event(slow)).message for _ in range(3)] == ["2", "3", "4"]
        assert slow.dropped == 2


async def test_fan_out_to_a_thousand_subscribers() -> None:
    async with Broadcast() as broadcast, anyio.create_task_group() as tg:
        got: list[str | None] = []
        ready = anyio.Event()
        subscribed = 0

        async def listen() -> None:
            nonlocal subscribed
            async with broadcast.subscribe("room") as subscriber:
                subscribed += 1
                if subscribed == 1000:
                    ready.set()
                got.append((await next_event(subscriber)).message)

        for _ in range(1000):
            tg.start_soon(listen)
        with anyio.fail_after(5):
            await ready.wait()
        await broadcast.publish("room", "hello")
    assert got == ["hello"] * 1000


async def test_misuse_is_reported_clearly() -> None:
    broadcast = Broadcast()
    with pytest.raises(RuntimeError, match="async with"):
        await broadcast.publish("a", "x")
    async with broadcast:
        with pytest.raises(TypeError, match="encode it first"):
            await broadcast.publish("a", {"not": "a string"})  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="already connected"):
            await broadcast.connect()
    with pytest.raises(ValueError, match="unsupported broadcast URL"):
        Broadcast("kafka://localhost")
    with pytest.raises(TypeError):
        Broadcast("memory://", reconnect_delay=(1, 2))
    with pytest.raises(ValueError, match="max_queue"):
        Broadcast(max_queue=0)


async def test_subscribers_arriving_together_all_receive() -> None:
    async with Broadcast() as broadcast, anyio.create_task_group() as tg:
        got: list[str | None] = []
        ready = anyio.Event()
        count = 0

        async def listen() -> None:
            nonlocal count
            async with broadcast.subscribe("a") as subscriber:
                count += 1
                if count == 3:
                    ready.set()
                got.append((await next_event(subscriber)).message)

        for _ in range(3):
            tg.start_soon(listen)
        with anyio.fail_after(5):
            await ready.wait()
        await broadcast.publish("a", "x")
    assert got == ["x", "x", "x"]


# -- redis:// -----------------------------------------------------------------------

redis_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


@redis_only
async def test_redis_unreachable_at_startup_is_a_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with pytest.raises(BroadcastError, match=r"cannot reach Redis at redis://127\.0\.0\.1"):
        async with Broadcast(url):
            pass
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_redis_on_trio_says_it_needs_asyncio() -> None:
    with pytest.raises(BroadcastError, match="needs asyncio"):
        async with Broadcast("redis://127.0.0.1:1/0"):
            pass


@redis_only
async def test_messages_cross_between_instances(redis_server: RedisServer) -> None:
    """Two Broadcasts stand for two processes sharing one Redis."""
    async with (
        Broadcast(redis_server.url) as one,
        Broadcast(redis_server.url) as two,
        one.subscribe("room") as on_one,
        two.subscribe("room") as on_two,
    ):
        for number in range(20):
            await (one if number % 2 else two).publish("room", f"m{number}")
        expected = [f"m{n}" for n in range(20)]
        assert [(await next_event(on_one)).message for _ in range(20)] == expected
        assert [(await next_event(on_two)).message for _ in range(20)] == expected


async def _wait_until(condition: Any, timeout: float = 10.0) -> None:
    """Poll `condition` (the backend exposes no event for these states)."""
    with anyio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.02)


@redis_only
async def test_restart_with_nothing_missed_says_reconnected(redis_server: RedisServer) -> None:
    async with Broadcast(redis_server.url) as broadcast, broadcast.subscribe("room") as sub:
        await broadcast.publish("room", "before")
        assert (await next_event(sub)).message == "before"
        redis_server.restart()
        event = await next_event(sub, timeout=15)
        assert (event.kind, event.missed) == ("reconnected", None)
        await broadcast.publish("room", "after")
        assert (await next_event(sub)).message == "after"


@redis_only
async def test_restart_with_messages_published_meanwhile_reports_the_gap(
    redis_server: RedisServer,
) -> None:
    # A slow reconnection gives another instance time to publish while we are away.
    async with (
        Broadcast(redis_server.url, reconnect_delay=(1.0, 1.0)) as away,
        away.subscribe("room") as sub,
    ):
        await away.publish("room", "before")
        assert (await next_event(sub)).message == "before"
        redis_server.stop()
        backend: Any = away._backend
        await _wait_until(lambda: not backend.connected)
        redis_server.start()
        async with Broadcast(redis_server.url) as other:
            await other.publish("room", "lost 1")
            await other.publish("room", "lost 2")
        event = await next_event(sub, timeout=15)
        assert (event.kind, event.missed) == ("gap", 2)
        await away.publish("room", "after")
        assert (await next_event(sub)).message == "after"


@redis_only
async def test_a_jump_in_sequence_numbers_is_reported_as_a_gap(redis_server: RedisServer) -> None:
    import redis.asyncio as aioredis

    async with Broadcast(redis_server.url) as broadcast, broadcast.subscribe("room") as sub:
        await broadcast.publish("room", "one")
        assert (await next_event(sub)).message == "one"
        client = aioredis.Redis.from_url(redis_server.url)
        await client.incrby("microasgi:broadcast:seq:room", 3)  # three messages "lost"
        await client.aclose()
        await broadcast.publish("room", "five")
        gap = await next_event(sub)
        assert (gap.kind, gap.missed) == ("gap", 3)
        assert (await next_event(sub)).message == "five"


@redis_only
async def test_publish_while_redis_is_down_fails_fast(redis_server: RedisServer) -> None:
    async with Broadcast(redis_server.url) as broadcast:
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(BroadcastError, match="not published"):
            await broadcast.publish("room", "into the void")
        assert time.monotonic() - started < 10
        redis_server.start()
        await _wait_until(lambda: broadcast._backend.connected)  # type: ignore[attr-defined]
        async with broadcast.subscribe("room") as sub:
            await broadcast.publish("room", "back")
            assert (await next_event(sub)).message == "back"


@redis_only
async def test_redis_losing_its_data_is_a_gap_of_unknown_size(redis_server: RedisServer) -> None:
    """A restart without the saved data: counters start over, so nothing can be counted."""
    async with (
        Broadcast(redis_server.url, reconnect_delay=(1.0, 1.0)) as away,
        away.subscribe("room") as sub,
    ):
        await away.publish("room", "before")
        assert (await next_event(sub)).message == "before"
        redis_server.process.kill()  # type: ignore[union-attr]  # no save on the way out
        redis_server.process.wait()  # type: ignore[union-attr]
        redis_server.process = None
        for dump in redis_server.directory.glob("*.rdb"):
            dump.unlink()
        redis_server.start()
        async with Broadcast(redis_server.url) as other:
            for number in range(5):  # more than before: the counter alone would mislead
                await other.publish("room", f"new {number}")
        event = await next_event(sub, timeout=15)
        assert (event.kind, event.missed) == ("gap", None)
        await away.publish("room", "after")
        assert (await next_event(sub)).message == "after"


@redis_only
async def test_messages_from_other_publishers_pass_as_they_are(redis_server: RedisServer) -> None:
    import redis.asyncio as aioredis

    async with Broadcast(redis_server.url) as broadcast, broadcast.subscribe("room") as sub:
        client = aioredis.Redis.from_url(redis_server.url)
        await client.publish("room", "12:30 lunch")
        await client.aclose()
        event = await next_event(sub)
        assert (event.kind, event.message) == ("message", "12:30 lunch")


@redis_only
async def test_a_message_published_right_after_subscribe_arrives(redis_server: RedisServer) -> None:
    """subscribe() returns only once Redis has confirmed: nothing falls in between,
    also for subscribers arriving together."""
    async with Broadcast(redis_server.url) as broadcast, anyio.create_task_group() as tg:
        got: dict[str, list[str | None]] = {}

        async def own_message(name: str) -> None:
            async with broadcast.subscribe("together") as subscriber:
                await broadcast.publish("together", name)
                seen = got.setdefault(name, [])
                with anyio.fail_after(5):
                    while name not in seen:
                        seen.append((await subscriber.get()).message)

        for round_ in range(5):
            for name in ("a", "b", "c"):
                tg.start_soon(own_message, f"{name}{round_}")
    assert len(got) == 15
