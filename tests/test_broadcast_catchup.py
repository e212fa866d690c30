"""The catch-up algorithm (subscribe live, hold, read the history, let the held through)
under every interleaving hypothesis finds.

A scripted backend stands in for Redis: each history read waits until the test lets it
take its snapshot, then again until the test lets the answer arrive; a message can be
"lost in transit" (kept in the history, never delivered live), as one published while a
listener reconnects is; the history can be lost, and start over in a new epoch, as when
Redis restarts without its data. Whatever the order, each
subscriber must see, epoch by epoch, an unbroken run of numbers: every message exactly
once, in order, a gap only where the history no longer keeps what it missed (counting
exactly what it skips), and a reset where its epoch ended.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microasgi.broadcast import Broadcast, Event, Subscriber
from microasgi.broadcast._base import Replay, format_position, parse_position

CHANNEL = "c"


class ScriptedBackend:
    """One channel's history in memory; reads wait for `release()`."""

    def __init__(self, broadcast: Broadcast, history: int) -> None:
        self.broadcast = broadcast
        self.history = history
        self.epochs = 0
        self.epoch = ""
        self.log: list[str] = []  # message number n of the current epoch is log[n - 1]
        self.texts: dict[tuple[str, int], str] = {}  # every message of every epoch
        self.gates: list[anyio.Event] = []  # reads waiting to take their snapshot
        self.answers: list[anyio.Event] = []  # reads waiting to answer

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass

    async def subscribe(self, channel: str) -> None:
        pass

    async def unsubscribe(self, channel: str) -> None:
        pass

    def restart(self) -> None:
        """The history is lost: the next message starts a new epoch."""
        self.epoch, self.log = "", []

    def add(self, message: str) -> int:
        if not self.epoch:
            self.epochs += 1
            self.epoch = f"{self.epochs:016x}"
        self.log.append(message)
        self.texts[self.epoch, len(self.log)] = message
        return len(self.log)

    async def publish(self, channel: str, message: str, keep: bool) -> str | None:
        seq = self.add(message)
        self.broadcast._deliver(CHANNEL, self.epoch, seq, str(seq), message)
        return format_position(self.epoch, seq)

    def lose(self, message: str) -> None:
        """Published and kept, but never delivered live."""
        self.add(message)

    async def read(
        self, channel: str, epoch: str, after: int, limit: int, check: tuple[int, str] | None
    ) -> Replay:
        gate = anyio.Event()
        self.gates.append(gate)
        await gate.wait()
        replay = self.snapshot(epoch, after, limit)
        answer = anyio.Event()
        self.answers.append(answer)
        await answer.wait()
        return replay

    def snapshot(self, epoch: str, after: int, limit: int) -> Replay:
        last = len(self.log)
        if not self.epoch:
            return Replay(None, 0)
        if epoch != self.epoch or after > last:
            after = 0
        first_kept = max(1, last - self.history + 1)
        start = max(after + 1, last - limit + 1, first_kept)
        return Replay(self.epoch, last, [(n, self.log[n - 1]) for n in range(start, last + 1)])

    async def fence(self, channel: str, epoch: str) -> None:
        raise AssertionError("numbers are never given out twice here")

    def snap(self) -> None:
        gates, self.gates = self.gates, []
        for gate in gates:
            gate.set()

    def answer(self) -> None:
        answers, self.answers = self.answers, []
        for answer in answers:
            answer.set()


OPERATION = st.one_of(
    st.just(("publish",)),
    st.just(("lose",)),
    st.just(("snap",)),
    st.just(("answer",)),
    st.just(("reconnect",)),
    st.just(("restart",)),
    st.tuples(st.just("subscribe"), st.one_of(st.none(), st.integers(0, 40))),
    st.tuples(st.just("history"), st.integers(1, 5)),
)


def place_of(event: Event) -> tuple[str, int]:
    assert event.position is not None, event
    position = parse_position(event.position)
    assert position is not None
    return position


def check_run(
    events: list[Event], start: tuple[str, int] | None, backend: ScriptedBackend, gaps: bool
) -> None:
    """Epoch by epoch, an unbroken run of numbers from `start` to the channel's end."""
    if start is None:  # no position: from wherever the first read found the channel
        if not events:
            return
        first = events[0]
        epoch, seq = place_of(first)
        if first.kind == "reset":
            start = "", 0  # it began in an epoch that ended before a message came
        else:
            start = epoch, seq - ((first.missed or 0) if first.kind == "gap" else 1)
    epoch, place = start
    for event in events:
        event_epoch, seq = place_of(event)
        if event.kind == "reset":
            assert (event_epoch, seq) != (epoch, 0) and seq == 0, (event, epoch)
            epoch, place = event_epoch, 0
            continue
        assert event_epoch == epoch, f"{event} in epoch {epoch} without a reset"
        if event.kind == "gap":
            assert gaps, f"a gap although everything is kept: {event}"
            assert event.missed == seq - place and seq > place, (event, place)
        else:
            assert seq == place + 1, f"expected {place + 1}, got {event}"
            assert event.message == backend.texts[epoch, seq]
        place = seq
    assert (epoch, place) == (backend.epoch, len(backend.log)), (epoch, place)


async def scenario(operations: list[tuple[Any, ...]], history: int) -> None:
    async with Broadcast("memory://", max_queue=10_000) as broadcast:
        backend = ScriptedBackend(broadcast, history)
        broadcast._backend = backend  # the Broadcast's own logic, a scripted history
        positions: list[tuple[str, int]] = []
        readers: list[tuple[Subscriber, list[Event], tuple[str, int] | None]] = []
        counter = started = 0
        in_transit = False  # a message was lost since the last reconnection

        async def follow(since: tuple[str, int] | None, how_many: int, *, task_status: Any) -> None:
            position = None if since is None else format_position(*since)
            events: list[Event] = []
            async with broadcast.subscribe(CHANNEL, position, history=how_many) as sub:
                readers.append((sub, events, since))
                task_status.started()
                async for event in sub:
                    events.append(event)

        async def settle() -> None:
            with anyio.fail_after(5):
                while (
                    len(readers) < started
                    or backend.gates
                    or backend.answers
                    or any(sub._held is not None for sub, _, _ in readers)
                ):
                    backend.snap()
                    backend.answer()
                    await anyio.wait_all_tasks_blocked()

        async with anyio.create_task_group() as tasks:
            for operation in operations:
                kind = operation[0]
                if kind in ("publish", "lose"):
                    counter += 1
                    if kind == "publish":
                        await broadcast.publish(CHANNEL, f"m{counter}")
                    else:
                        backend.lose(f"m{counter}")
                        in_transit = True
                    positions.append((backend.epoch, len(backend.log)))
                elif kind == "snap":
                    backend.snap()
                elif kind == "answer":
                    backend.answer()
                elif kind == "reconnect":
                    broadcast._live_again(CHANNEL)
                    in_transit = False
                elif kind == "restart":
                    backend.restart()
                else:
                    since = None
                    if kind == "subscribe" and operation[1] is not None and positions:
                        since = positions[min(operation[1], len(positions) - 1)]
                    how_many = operation[1] if kind == "history" else 0

                    async def start(since: Any = since, how_many: int = how_many) -> None:
                        await tasks.start(follow, since, how_many)

                    tasks.start_soon(start)
                    started += 1
                await anyio.wait_all_tasks_blocked()
            await settle()
            # Gaps only where the history no longer has what was missed: trimmed, or lost.
            gaps = history < 1000 or ("restart",) in operations
            if not in_transit and backend.epoch:
                # A reconnection alone refills: nothing is left to come from a later message.
                for _, events, since in readers:
                    check_run(events, since, backend, gaps)
            # A last message, which shows any hole left and which every subscriber gets.
            counter += 1
            await broadcast.publish(CHANNEL, f"m{counter}")
            await settle()
            for sub, _, _ in readers:
                sub.close()
        for sub, events, since in readers:
            assert sub.dropped == 0
            check_run(events, since, backend, gaps)


# On trio: its wait_all_tasks_blocked() returns as soon as every task waits (asyncio's
# polls every 0.1 s), so that hundreds of interleavings take a second or two.
@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("history", [1000, 3])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=st.lists(OPERATION, max_size=40))
def test_every_interleaving_gives_an_unbroken_run(
    operations: list[tuple[Any, ...]], history: int, anyio_backend: str
) -> None:
    anyio.run(scenario, operations, history, backend=anyio_backend)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize(
    "operations",
    [
        # m2 never arrives live; m3 shows the hole.
        [("subscribe", None), ("snap",), ("answer",), ("publish",), ("lose",), ("publish",)],
        # m2 is lost after a read took its snapshot: the reconnection refills it.
        [("publish",), ("subscribe", 0), ("snap",), ("lose",), ("reconnect",), ("answer",)],
        # A subscriber live at m1 (resumed from there) is restarted by a reconnection
        # while another's read of the same place is out, its snapshot taken before m2
        # (lost in transit): that answer cannot refill it; a read of its own does,
        # without waiting for m3.
        [
            *[("publish",), ("subscribe", 0), ("snap",), ("answer",)],
            *[("subscribe", 0), ("snap",), ("lose",), ("reconnect",), ("answer",)],
        ],
        # m5 comes while a read is out and leaves a hole (m4) the read cannot fill: another
        # read does, not a gap.
        [
            *[("subscribe", None), ("snap",), ("answer",), ("publish",)],
            *[("lose",), ("publish",), ("snap",), ("lose",), ("publish",), ("answer",)],
        ],
    ],
)
def test_a_message_lost_in_transit_is_read_back(
    operations: list[tuple[Any, ...]], anyio_backend: str
) -> None:
    anyio.run(scenario, operations, 1000, backend=anyio_backend)


@pytest.mark.anyio
async def test_a_hole_the_lost_history_cannot_fill_is_a_gap() -> None:
    """m2 is lost in transit, then the history with it: m3 (delivered) comes after a gap."""
    events: list[Event] = []
    with anyio.fail_after(5):
        async with Broadcast("memory://") as broadcast, anyio.create_task_group() as tasks:
            backend = ScriptedBackend(broadcast, 1000)
            broadcast._backend = backend
            await broadcast.publish(CHANNEL, "m1")

            async def follow() -> None:
                async with broadcast.subscribe(CHANNEL) as sub:
                    while len(events) < 2:
                        events.append(await sub.get())

            tasks.start_soon(follow)
            await anyio.wait_all_tasks_blocked()
            backend.snap()
            await anyio.wait_all_tasks_blocked()
            backend.answer()  # subscribed, after m1
            await anyio.wait_all_tasks_blocked()
            backend.lose("m2")
            await broadcast.publish(CHANNEL, "m3")  # held: a catch-up begins
            await anyio.wait_all_tasks_blocked()
            backend.restart()
            backend.snap()
            await anyio.wait_all_tasks_blocked()
            backend.answer()
    epoch = f"{1:016x}"
    assert [(e.kind, e.missed, e.position) for e in events] == [
        ("gap", 1, f"{epoch}-2"),
        ("message", None, f"{epoch}-3"),
    ]


def test_held_events_dropped_during_a_read_do_not_turn_a_hole_into_a_gap() -> None:
    """More live events than `max_queue` arrive while a read is out, so the oldest held
    ones make room: what is left must still count as having come after the read. Here
    m4 (held before the read) made room, and m6 shows a hole (m5, lost in transit after
    the read was made): the history has m5, so another read follows, not a gap."""
    subscriber = Subscriber(CHANNEL, max_queue=3)
    subscriber._start(("e", 2), 0)  # resuming after m2: a catch-up is due

    def live(seq: int) -> tuple[Event, str, int]:
        return Event(CHANNEL, f"m{seq}", "message", None, format_position("e", seq)), "e", seq

    subscriber._offer(*live(4))
    assert subscriber._reading() == ("e", 2, 3)  # made while m4 alone is held
    for seq in (6, 7, 8):  # m5 never comes live; m8 makes room: m4 goes
        subscriber._offer(*live(seq))
    # The read's answer, from before m5 was published: m3 and m4.
    assert not subscriber._catch_up(Replay("e", 4, [(3, "m3"), (4, "m4")]))
    assert [e.message for e in subscriber._queue or ()] == ["m3", "m4"]  # no gap
    assert subscriber._read_key() == ("e", 4, 3)  # read again, from m4 on
