"""Broadcast on redis:// against a real redis-server (started by the test on a free port):
the listener's connection, the command pool, positions and resuming across instances,
and what subscribers get when Redis restarts, keeping its data, losing it, or going back
to an older snapshot."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from microasgi.broadcast import Broadcast, BroadcastError, Event, Subscriber
from tests.services import RedisServer, free_port

pytest.importorskip("redis")
import redis.asyncio as aioredis

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """redis-py is asyncio only."""
    return "asyncio"


async def next_event(subscriber: Subscriber, timeout: float = 5.0) -> Event:
    with anyio.fail_after(timeout):
        return await subscriber.get()


async def texts(subscriber: Subscriber, count: int, timeout: float = 5.0) -> list[str | None]:
    return [(await next_event(subscriber, timeout)).message for _ in range(count)]


async def quiet(subscriber: Subscriber, seconds: float = 0.2) -> bool:
    """True if nothing arrives for `seconds`."""
    with anyio.move_on_after(seconds) as scope:
        await subscriber.get()
    return scope.cancelled_caught


async def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll `condition` (the backend exposes no event for these states)."""
    with anyio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.02)


@asynccontextmanager
async def redis_client(server: RedisServer) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()


async def connections(server: RedisServer) -> int:
    """How many clients are connected to Redis, not counting the one asking."""
    async with redis_client(server) as client:
        return len(await client.client_list()) - 1


def connected(broadcast: Broadcast) -> bool:
    return bool(broadcast._backend.connected)  # type: ignore[attr-defined]


# -- connecting ---------------------------------------------------------------------------


async def test_redis_unreachable_at_startup_is_a_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with pytest.raises(BroadcastError, match=r"cannot reach Redis at redis://127\.0\.0\.1"):
        async with Broadcast(url):
            pass
    assert time.monotonic() - started < 10


def test_redis_on_trio_says_it_needs_asyncio() -> None:
    async def connect() -> None:
        async with Broadcast("redis://127.0.0.1:1/0"):
            pass

    with pytest.raises(BroadcastError, match="needs asyncio"):
        anyio.run(connect, backend="trio")


async def test_redis_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        Broadcast("redis://127.0.0.1/0", max_connections=0)
    with pytest.raises(ValueError, match="timeouts"):
        Broadcast("redis://127.0.0.1/0", pool_timeout=0)
    with pytest.raises(TypeError):
        Broadcast("redis://127.0.0.1/0", no_such_option=1)


# -- fan-out across instances -------------------------------------------------------------


async def test_messages_cross_between_instances(redis_server: RedisServer) -> None:
    """Two Broadcasts stand for two processes sharing one Redis."""
    async with (
        Broadcast(redis_server.url) as one,
        Broadcast(redis_server.url) as two,
        one.subscribe("room") as on_one,
        two.subscribe("room") as on_two,
    ):
        positions = [await (one if n % 2 else two).publish("room", f"m{n}") for n in range(20)]
        for subscriber in (on_one, on_two):
            events = [await next_event(subscriber) for _ in range(20)]
            assert [e.message for e in events] == [f"m{n}" for n in range(20)]
            assert [e.position for e in events] == positions
        assert len({p.split("-")[0] for p in positions if p}) == 1  # one epoch, shared


async def test_messages_from_other_publishers_pass_as_they_are(redis_server: RedisServer) -> None:
    async with Broadcast(redis_server.url) as broadcast, broadcast.subscribe("room") as sub:
        async with redis_client(redis_server) as client:
            await client.publish("room", "12:30 lunch")
        event = await next_event(sub)
        assert (event.kind, event.message, event.position) == ("message", "12:30 lunch", None)


async def test_unkept_messages_are_live_only(redis_server: RedisServer) -> None:
    async with Broadcast(redis_server.url) as broadcast:
        first = await broadcast.publish("room", "kept")
        async with broadcast.subscribe("room", since=first) as sub:
            assert await broadcast.publish("room", "now only", keep=False) is None
            event = await next_event(sub)
            assert (event.message, event.position) == ("now only", None)
        async with broadcast.subscribe("room", history=10) as sub:
            assert await texts(sub, 1) == ["kept"]  # the unkept one is not in the history
            assert await quiet(sub)


# -- defect: concurrent first subscribes broke each other ------------------------------------


async def test_concurrent_first_subscribes_do_not_break_each_other(
    redis_server: RedisServer,
) -> None:
    """Before: while nothing was subscribed, every first subscribe() disconnected the
    listener's pool, closing the others' connection: of 20 at once, 17 failed after 5 s,
    and 19 of 60 messages published after a subscribe() returned never arrived. Now the
    listener's one owner task sends the subscriptions, and each round of 20 (new channels
    and old, with everyone leaving in between) delivers everything."""
    async with Broadcast(redis_server.url) as broadcast:
        for round_ in range(5):
            delivered: list[int] = []

            async def one(channel: str, delivered: list[int] = delivered) -> None:
                async with broadcast.subscribe(channel) as sub:
                    for n in range(10):
                        await broadcast.publish(channel, str(n))
                    assert await texts(sub, 10) == [str(n) for n in range(10)]
                    delivered.append(10)

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tasks:
                    for index in range(20):
                        tasks.start_soon(one, f"c{index % (10 + round_ * 5)}-{index}")
            assert sum(delivered) == 200


async def test_subscribing_and_leaving_the_same_channel_over_and_over(
    redis_server: RedisServer,
) -> None:
    """Each subscription gets every message published after it began, while others on
    the same channel come and go (SUBSCRIBE and UNSUBSCRIBE crossing on the connection)."""
    async with Broadcast(redis_server.url) as broadcast, broadcast.subscribe("churn") as steady:

        async def come_and_go(name: str) -> None:
            for n in range(15):
                async with broadcast.subscribe("churn") as sub:
                    await broadcast.publish("churn", f"{name}{n}")
                    with anyio.fail_after(5):
                        while (await sub.get()).message != f"{name}{n}":
                            pass

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tasks:
                for name in "abcd":
                    tasks.start_soon(come_and_go, name)
        got = [e.message for e in [await next_event(steady) for _ in range(60)]]
        for name in "abcd":
            assert [t for t in got if t and t[0] == name] == [f"{name}{n}" for n in range(15)]


async def test_a_message_published_right_after_subscribe_arrives(redis_server: RedisServer) -> None:
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


# -- defect: more than 100 concurrent publishes failed -----------------------------------------


async def test_a_thousand_concurrent_publishes(redis_server: RedisServer) -> None:
    """Before: redis-py's pool refused the 101st connection ("Too many connections"),
    reported as "Redis is unreachable": 900 of 1,000 failed. Now they wait their turn."""
    async with Broadcast(redis_server.url, max_connections=20) as broadcast:
        async with broadcast.subscribe("busy") as sub:
            errors: list[BaseException] = []

            async def publish(n: int) -> None:
                try:
                    await broadcast.publish("busy", str(n))
                except BroadcastError as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tasks:
                for n in range(1000):
                    tasks.start_soon(publish, n)
            assert errors == []
            events = [await next_event(sub) for _ in range(1000)]
            assert sorted(int(e.message or "") for e in events) == list(range(1000))
            assert [int((e.position or "").rsplit("-")[1]) for e in events] == list(range(1, 1001))
        assert await connections(redis_server) <= 20 + 1  # the pool, and the listener


async def test_a_command_waits_for_a_connection_then_says_the_pool_is_busy(
    redis_server: RedisServer,
) -> None:
    async with Broadcast(redis_server.url, max_connections=1, pool_timeout=0.3) as broadcast:
        redis_server.pause()  # the one connection's publish hangs, holding it
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(broadcast.publish, "room", "first")
                await anyio.sleep(0.05)
                started = time.monotonic()
                with pytest.raises(BroadcastError, match="all 1 connections to Redis stayed busy"):
                    await broadcast.publish("room", "second")
                assert time.monotonic() - started >= 0.3
                redis_server.resume()
        finally:
            redis_server.resume()
        assert await broadcast.publish("room", "third")


@pytest.mark.parametrize("keep", [True, False])
async def test_a_command_still_waiting_when_the_broadcast_closes(
    redis_server: RedisServer, keep: bool
) -> None:
    """It fails with the RuntimeError of a closed Broadcast (not an AttributeError from
    inside), and opens no connection to Redis after the close."""
    broadcast = Broadcast(redis_server.url, max_connections=1)
    outcomes: list[BaseException | str | None] = []

    async def publish(text: str) -> None:
        try:
            outcomes.append(await broadcast.publish("room", text, keep=keep))
        except (BroadcastError, RuntimeError) as exc:
            outcomes.append(exc)

    # Nested: the Broadcast closes while the group's tasks go on.
    async with redis_client(redis_server) as client, anyio.create_task_group() as tasks:  # noqa: SIM117
        async with broadcast:
            # For a second, Redis holds every write: the one connection's publish waits.
            await client.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
            tasks.start_soon(publish, "in flight")
            await anyio.sleep(0.05)
            tasks.start_soon(publish, "waiting")  # for the pool
            await anyio.sleep(0.05)
        # Closed, with both still waiting.
    assert len(outcomes) == 2 and isinstance(outcomes[1], RuntimeError), outcomes
    assert "the Broadcast is closed" in str(outcomes[1])
    assert await connections(redis_server) == 0


async def test_connections_a_burst_opened_are_closed_when_it_is_over(
    redis_server: RedisServer,
) -> None:
    async with Broadcast(redis_server.url, pool_idle_timeout=0.2) as broadcast:
        await wait_until(lambda: connected(broadcast))
        async with anyio.create_task_group() as tasks:
            for n in range(200):
                tasks.start_soon(broadcast.publish, "burst", str(n))
        assert await connections(redis_server) > 5
        await wait_until_async(lambda: connections(redis_server), 1)  # the listener's
        assert await broadcast.publish("burst", "and again")  # a fresh connection


# -- positions and resuming across instances ----------------------------------------------------


async def test_resuming_on_another_instance(redis_server: RedisServer) -> None:
    async with Broadcast(redis_server.url) as one, Broadcast(redis_server.url) as two:
        positions = [await one.publish("room", f"m{n}") for n in range(10)]
        async with two.subscribe("room", since=positions[3]) as sub:
            await one.publish("room", "live")
            assert await texts(sub, 7) == [*(f"m{n}" for n in range(4, 10)), "live"]
            assert await quiet(sub)


async def test_resuming_while_messages_keep_coming(redis_server: RedisServer) -> None:
    """Subscribed live first, then the history read, then the held messages: every one
    once, in order, for resumers that start while another instance publishes."""
    async with Broadcast(redis_server.url) as one, Broadcast(redis_server.url) as two:
        positions = [await one.publish("room", "start")]
        runs: list[list[int]] = []

        async def publisher() -> None:
            for n in range(200):
                positions.append(await one.publish("room", f"m{n}"))

        async def resumer(index: int) -> None:
            await anyio.sleep(0.002 * index)
            since = positions[-1]
            assert since is not None
            run = [int(since.rsplit("-", 1)[1])]
            runs.append(run)
            async with two.subscribe("room", since=since) as sub:
                while run[-1] < 201:
                    event = await next_event(sub)
                    run.append(int((event.position or "").rsplit("-", 1)[1]))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(publisher)
                for index in range(30):
                    tasks.start_soon(resumer, index)
        for run in runs:
            assert run == list(range(run[0], 202))


async def test_history_trimmed_to_about_its_length_gives_an_exact_gap(
    redis_server: RedisServer,
) -> None:
    async with Broadcast(redis_server.url, history=5) as broadcast:
        first = await broadcast.publish("room", "m0")
        for n in range(1, 300):
            await broadcast.publish("room", f"m{n}")
        async with redis_client(redis_server) as client:
            kept = await client.xlen("microasgi:broadcast:stream:room")
        assert 5 <= kept < 299  # MAXLEN ~ trims whole stream nodes
        async with broadcast.subscribe("room", since=first) as sub:
            gap = await next_event(sub)
            assert (gap.kind, gap.missed) == ("gap", 299 - kept)
            rest = [await next_event(sub) for _ in range(kept)]
            assert [e.message for e in rest] == [f"m{n}" for n in range(300 - kept, 300)]


async def test_an_idle_channel_expires_and_starts_a_new_history(redis_server: RedisServer) -> None:
    async with Broadcast(redis_server.url, history_ttl=1) as broadcast:
        old = await broadcast.publish("room", "old")
        async with redis_client(redis_server) as client:
            assert 0 < await client.ttl("microasgi:broadcast:channel:room") <= 1
            await wait_until_async(lambda: client.exists("microasgi:broadcast:channel:room"), 0)
        new = await broadcast.publish("room", "new")
        assert old and new and old.split("-")[0] != new.split("-")[0] and new.endswith("-1")
        async with broadcast.subscribe("room", since=old) as sub:
            assert (await next_event(sub)).kind == "reset"
            assert await texts(sub, 1) == ["new"]


async def wait_until_async(count: Callable[[], Any], target: int, timeout: float = 10.0) -> None:
    """Poll the awaitable `count()` until it is down to `target`."""
    with anyio.fail_after(timeout):
        while await count() > target:  # noqa: ASYNC110 (Redis has no event for this)
            await anyio.sleep(0.1)


# -- Redis going away -------------------------------------------------------------------------


async def test_publish_while_redis_is_down_fails_fast(redis_server: RedisServer) -> None:
    async with Broadcast(redis_server.url) as broadcast:
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(BroadcastError, match="not published"):
            await broadcast.publish("room", "into the void")
        assert time.monotonic() - started < 10
        redis_server.start()
        async with broadcast.subscribe("room") as sub:
            await broadcast.publish("room", "back")
            assert await texts(sub, 1) == ["back"]


async def test_subscribing_while_redis_is_down_is_a_clear_error(redis_server: RedisServer) -> None:
    """...and leaves nothing behind: channel names come from clients (chat rooms)."""
    async with Broadcast(redis_server.url, socket_timeout=1.0) as broadcast:
        redis_server.stop()
        await wait_until(lambda: not connected(broadcast))
        with pytest.raises(
            BroadcastError, match="Redis is unreachable within 1 s, cannot subscribe"
        ):
            async with broadcast.subscribe("room"):
                pass

        async def try_room(number: int) -> None:
            with pytest.raises(BroadcastError):
                async with broadcast.subscribe(f"room {number}"):
                    pass

        async with anyio.create_task_group() as tasks:
            for number in range(50):
                tasks.start_soon(try_room, number)
        listener = broadcast._backend._listener  # type: ignore[attr-defined]
        assert (listener._wanted, listener._waiters, broadcast._channels) == (set(), {}, {})
        redis_server.start()
        await wait_until(lambda: connected(broadcast))
        async with broadcast.subscribe("room") as sub:
            await broadcast.publish("room", "back")
            assert await texts(sub, 1) == ["back"]


async def test_a_restart_that_keeps_the_data_refills_the_subscribers(
    redis_server: RedisServer,
) -> None:
    """What was published while the listener reconnected comes from the history, in
    order, with nothing said about it (before: a gap event with a count)."""
    async with (
        Broadcast(redis_server.url, reconnect_delay=(1.0, 1.0)) as away,
        away.subscribe("room") as sub,
        away.subscribe("quiet") as other,
    ):
        await away.publish("room", "before")
        assert await texts(sub, 1) == ["before"]
        redis_server.restart()  # saves on the way out, loads when it starts
        async with Broadcast(redis_server.url) as elsewhere:
            await elsewhere.publish("room", "while away 1")
            await elsewhere.publish("room", "while away 2")
        events = [await next_event(sub, timeout=15) for _ in range(2)]
        assert [(e.kind, e.message) for e in events] == [
            ("message", "while away 1"),
            ("message", "while away 2"),
        ]
        await wait_until(lambda: connected(away))
        await away.publish("room", "after")
        assert await texts(sub, 1) == ["after"]
        assert await quiet(other)  # nothing happened there: nothing to say


async def test_a_restart_that_lost_the_data_is_a_reset(redis_server: RedisServer) -> None:
    async with (
        Broadcast(redis_server.url, reconnect_delay=(1.0, 1.0)) as away,
        away.subscribe("room") as sub,
    ):
        before = await away.publish("room", "before")
        assert await texts(sub, 1) == ["before"]
        redis_server.kill()
        for dump in redis_server.directory.glob("*.rdb"):
            dump.unlink()
        redis_server.start()
        async with Broadcast(redis_server.url) as elsewhere:
            for n in range(3):
                await elsewhere.publish("room", f"new {n}")
        reset = await next_event(sub, timeout=15)
        assert reset.kind == "reset" and reset.position is not None
        assert before is not None and reset.position.split("-")[0] != before.split("-")[0]
        assert await texts(sub, 3) == ["new 0", "new 1", "new 2"]  # the new history, whole


@pytest.mark.parametrize("first_read_fails", [False, True], ids=["", "first-check-fails"])
async def test_a_restart_from_an_older_snapshot_is_a_reset_not_a_silent_skip(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, first_read_fails: bool
) -> None:
    """Redis comes back from a snapshot older than what was delivered, and gives out the
    same numbers again, for new messages: taking those for messages already seen would
    lose them without a word. The listener notices, a new epoch begins, and subscribers
    get a reset. Also when the first read after the reconnection fails (Redis still
    loading its data, say): the check is made again, not forgotten."""
    async with (
        Broadcast(redis_server.url, reconnect_delay=(1.0, 1.0)) as away,
        away.subscribe("room") as sub,
    ):
        for n in range(3):
            await away.publish("room", f"saved {n}")
        async with redis_client(redis_server) as client:
            await client.save()
        for n in range(3):
            await away.publish("room", f"unsaved {n}")
        assert len(await texts(sub, 6)) == 6
        redis_server.kill()  # back to the snapshot: numbers 4 to 6 will be given out again
        redis_server.start()
        if first_read_fails:
            read, calls = away._backend.read, []

            async def fails_once(*args: Any) -> Any:
                calls.append(args)
                if len(calls) == 1:
                    raise BroadcastError("Redis is loading its data (injected)")
                return await read(*args)

            monkeypatch.setattr(away._backend, "read", fails_once)
        async with Broadcast(redis_server.url) as elsewhere:
            for n in range(5):
                await elsewhere.publish("room", f"reused {n}")
        reset = await next_event(sub, timeout=15)  # never one of "reused", taken for seen
        assert reset.kind == "reset", reset
        await away.publish("room", "after")
        events = [await next_event(sub)]
        while events[-1].message != "after":
            events.append(await next_event(sub))
        # The reused numbers were given out before the new epoch began: delivered after
        # the reset if the listener was back in time to start it, else told by the reset.
        assert [e.message for e in events[:-1]] in ([], [f"reused {n}" for n in range(5)])


async def test_a_hung_redis_is_noticed_and_left(redis_server: RedisServer) -> None:
    """Redis stops answering without closing the connection: the listener's PING goes
    unanswered, it reconnects once Redis answers again, and messages flow."""
    async with (
        Broadcast(redis_server.url, socket_timeout=0.5) as broadcast,
        broadcast.subscribe("room") as sub,
    ):
        redis_server.pause()
        try:
            await wait_until(lambda: not connected(broadcast), timeout=5)
        finally:
            redis_server.resume()
        await wait_until(lambda: connected(broadcast))
        await broadcast.publish("room", "still here")
        assert await texts(sub, 1) == ["still here"]
