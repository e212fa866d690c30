"""Broadcast on memory://, on asyncio and trio: fan-out, slow subscribers, positions,
resuming from a position, history. redis:// is in test_broadcast_redis.py."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microasgi.broadcast import Broadcast, Event, Subscriber, is_position

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
        # The gap's position is the last one dropped: resuming from it repeats nothing.
        async with broadcast.subscribe("a", since=gap.position) as again:
            assert [(await next_event(again)).message for _ in range(3)] == ["2", "3", "4"]


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
        # What UTF-8 cannot encode is refused on every backend (over Redis, a channel
        # name like that broke the listener's connection each time it was sent).
        with pytest.raises(ValueError, match="channel name must be text UTF-8 can encode"):
            await broadcast.publish("room \udc00", "x")
        with pytest.raises(ValueError, match="message must be text UTF-8 can encode"):
            await broadcast.publish("room", "half a pair: \ud83d")
        with pytest.raises(ValueError, match="channel name"):
            broadcast.subscribe("room \udc00")
        with pytest.raises(TypeError, match="channel name is a str"):
            broadcast.subscribe(b"room")  # type: ignore[arg-type]
        assert await broadcast.publish("salle \u00e9t\u00e9", "d\u00e9j\u00e0") is not None
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


# -- positions and resuming ----------------------------------------------------------------


async def messages(subscriber: Subscriber, count: int) -> list[Event]:
    return [await next_event(subscriber) for _ in range(count)]


def numbers(events: list[Event]) -> list[int]:
    return [int(e.position.rsplit("-", 1)[1]) for e in events if e.position is not None]


async def test_every_message_has_a_position_in_its_channel() -> None:
    async with Broadcast() as broadcast, broadcast.subscribe("a") as sub:
        returned = [await broadcast.publish("a", f"m{i}") for i in range(3)]
        events = await messages(sub, 3)
        assert [e.position for e in events] == returned
        assert all(is_position(p) for p in returned)
        epochs = {p.split("-")[0] for p in returned if p}
        assert len(epochs) == 1
        assert numbers(events) == [1, 2, 3]
        other = await broadcast.publish("b", "x")
        assert other is not None and other.split("-")[0] not in epochs  # per channel
        assert await broadcast.publish("a", "not kept", keep=False) is None
        unkept = await next_event(sub)
        assert (unkept.message, unkept.position) == ("not kept", None)


async def test_resuming_gives_every_message_after_the_position_once_in_order() -> None:
    async with Broadcast() as broadcast:
        positions = [await broadcast.publish("a", f"m{i}") for i in range(10)]
        async with broadcast.subscribe("a", since=positions[3]) as sub:
            await broadcast.publish("a", "live")
            events = await messages(sub, 7)
            assert [e.message for e in events] == [*(f"m{i}" for i in range(4, 10)), "live"]
            assert numbers(events) == list(range(5, 12))
            with anyio.move_on_after(0.05) as quiet:
                await sub.get()
            assert quiet.cancelled_caught  # nothing twice
        async with broadcast.subscribe("a", since=positions[-1]) as sub:
            await broadcast.publish("a", "next")
            assert [e.message for e in await messages(sub, 2)] == ["live", "next"]


async def test_resuming_past_what_is_kept_is_an_exact_gap() -> None:
    async with Broadcast(history=5) as broadcast:
        first = await broadcast.publish("a", "m0")
        for i in range(1, 10):
            await broadcast.publish("a", f"m{i}")
        async with broadcast.subscribe("a", since=first) as sub:
            gap = await next_event(sub)
            assert (gap.kind, gap.missed) == ("gap", 4)  # m1 to m4 are no longer kept
            rest = await messages(sub, 5)
            assert [e.message for e in rest] == [f"m{i}" for i in range(5, 10)]
            assert numbers([gap, *rest]) == [5, 6, 7, 8, 9, 10]


async def test_a_position_from_another_history_is_a_reset_then_this_history() -> None:
    async with Broadcast() as broadcast:
        await broadcast.publish("a", "m0")
        await broadcast.publish("a", "m1")
        for since in ("0123456789abcdef-1", "0123456789abcdef-0"):
            async with broadcast.subscribe("a", since=since) as sub:
                reset = await next_event(sub)
                assert (reset.kind, reset.message, reset.missed) == ("reset", None, None)
                assert reset.position is not None and reset.position.endswith("-0")
                assert [e.message for e in await messages(sub, 2)] == ["m0", "m1"]
        # A number beyond the channel's last one cannot be continued either.
        last = await broadcast.publish("a", "m2")
        assert last is not None
        beyond = last.rsplit("-", 1)[0] + "-99"
        async with broadcast.subscribe("a", since=beyond) as sub:
            assert (await next_event(sub)).kind == "reset"
            assert [e.message for e in await messages(sub, 3)] == ["m0", "m1", "m2"]


async def test_history_shows_the_newest_kept_messages_first() -> None:
    async with Broadcast() as broadcast:
        for i in range(10):
            await broadcast.publish("a", f"m{i}")
        await broadcast.publish("a", "not kept", keep=False)
        async with broadcast.subscribe("a", history=3) as sub:
            await broadcast.publish("a", "live")
            events = await messages(sub, 4)
            assert [e.message for e in events] == ["m7", "m8", "m9", "live"]
        async with broadcast.subscribe("new", history=3) as sub:  # nothing kept yet
            await broadcast.publish("new", "first")
            assert (await next_event(sub)).message == "first"


async def test_an_idle_channel_is_forgotten_and_starts_a_new_history() -> None:
    async with Broadcast(history_ttl=0.05) as broadcast:
        old = await broadcast.publish("a", "old")
        await anyio.sleep(0.1)
        new = await broadcast.publish("a", "new")
        assert old is not None and new is not None
        assert old.split("-")[0] != new.split("-")[0] and new.endswith("-1")
        async with broadcast.subscribe("a", since=old) as sub:
            assert (await next_event(sub)).kind == "reset"
            assert (await next_event(sub)).message == "new"


async def test_history_zero_keeps_nothing_but_still_counts() -> None:
    async with Broadcast(history=0) as broadcast:
        first = await broadcast.publish("a", "m0")
        for i in range(1, 4):
            await broadcast.publish("a", f"m{i}")
        async with broadcast.subscribe("a", since=first, history=10) as sub:
            gap = await next_event(sub)
            assert (gap.kind, gap.missed) == ("gap", 3)


async def test_resumers_and_publishers_at_once_get_everything_once() -> None:
    """Many subscribers resume from different positions while messages keep coming:
    each gets an unbroken run of numbers from its position to the end."""
    async with Broadcast() as broadcast, anyio.create_task_group() as tg:
        positions = [await broadcast.publish("a", "start")]
        runs: dict[int, list[int]] = {}
        done = anyio.Event()

        async def publisher() -> None:
            for i in range(300):
                positions.append(await broadcast.publish("a", f"m{i}"))
                if i % 7 == 0:
                    await anyio.lowlevel.checkpoint()
            done.set()

        async def resumer(index: int) -> None:
            await anyio.sleep(0.0005 * index)
            since = positions[len(positions) // 2]
            got = runs[index] = [int(since.rsplit("-", 1)[1])]  # type: ignore[union-attr]
            async with broadcast.subscribe("a", since=since) as sub:
                while got[-1] < 301:
                    got.append(numbers([await next_event(sub)])[0])

        tg.start_soon(publisher)
        for index in range(20):
            tg.start_soon(resumer, index)
    for got in runs.values():
        assert got == list(range(got[0], 302))


async def test_untrusted_positions() -> None:
    async with Broadcast() as broadcast:
        for bad in ("", "7", "0123456789abcdef", "0123456789ABCDEF-1", "0123456789abcdef-01"):
            assert not is_position(bad)
            with pytest.raises(ValueError, match="not a position"):
                async with broadcast.subscribe("a", since=bad):
                    pass
        with pytest.raises(TypeError, match="position string"):
            async with broadcast.subscribe("a", since=3):  # type: ignore[arg-type]
                pass
        with pytest.raises(ValueError, match="history"):
            async with broadcast.subscribe("a", history=-1):
                pass
        assert broadcast.subscriber_count("a") == 0
    assert not is_position(None) and not is_position(b"0123456789abcdef-1")
    assert is_position("0123456789abcdef-0") and is_position("0123456789abcdef-18")


@given(st.text())
def test_is_position_answers_any_text(text: str) -> None:
    assert is_position(text) == (
        len(text) > 17
        and text[16] == "-"
        and all(c in "0123456789abcdef" for c in text[:16])
        and text[17:].isascii()
        and text[17:].isdigit()
        and (text[17:] == "0" or not text.startswith("0", 17))
        and len(text) <= 35
    )


async def test_broadcast_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="history"):
        Broadcast(history=-1)
    with pytest.raises(ValueError, match="history_ttl"):
        Broadcast(history_ttl=0)


# -- the subscriber's queue --------------------------------------------------------------


async def test_a_dropped_reset_is_still_told_first() -> None:
    sub = Subscriber("c", max_queue=2)
    sub.put(Event("c", "old", position="0123456789abcdef-5"))
    sub.put(Event("c", None, "reset", None, "fedcba9876543210-0"))
    sub.put(Event("c", "a", position="fedcba9876543210-1"))
    sub.put(Event("c", "b", position="fedcba9876543210-2"))  # drops "old", then the reset
    sub.put(Event("c", "c", position="fedcba9876543210-3"))  # drops "a"
    got = [await next_event(sub) for _ in range(4)]
    assert [(e.kind, e.missed, e.position) for e in got] == [
        ("reset", None, "fedcba9876543210-0"),
        ("gap", 1, "fedcba9876543210-1"),
        ("message", None, "fedcba9876543210-2"),
        ("message", None, "fedcba9876543210-3"),
    ]
    assert sub.dropped == 2


async def test_a_dropped_gap_adds_to_the_next_one() -> None:
    sub = Subscriber("c", max_queue=1)
    sub.put(Event("c", None, "gap", 4, "0123456789abcdef-4"))
    sub.put(Event("c", "m5", position="0123456789abcdef-5"))  # drops the gap
    sub.put(Event("c", "m6", position="0123456789abcdef-6"))  # drops m5
    gap = await next_event(sub)
    assert (gap.kind, gap.missed, gap.position) == ("gap", 5, "0123456789abcdef-5")
    assert (await next_event(sub)).message == "m6"


async def test_get_batch_takes_what_is_waiting() -> None:
    async with Broadcast(max_queue=3) as broadcast, broadcast.subscribe("a") as sub:
        for i in range(5):
            await broadcast.publish("a", f"m{i}")
        batch = await sub.get_batch(10)
        assert [(e.kind, e.message) for e in batch] == [
            ("gap", None),
            ("message", "m2"),
            ("message", "m3"),
            ("message", "m4"),
        ]
        await broadcast.publish("a", "m5")
        await broadcast.publish("a", "m6")
        assert [e.message for e in await sub.get_batch(1)] == ["m5"]
        sub.close()
        assert [e.message for e in await sub.get_batch()] == ["m6"]
        with pytest.raises(StopAsyncIteration):
            await sub.get_batch()
