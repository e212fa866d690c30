"""Server-sent events: the wire format, field injection, pings, disconnects, middleware."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from itertools import pairwise
from typing import Any

import anyio
import anyio.to_thread
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from microasgi import App, BackgroundTask, EventSourceResponse, Request, ServerSentEvent
from microasgi.middleware import CompressionMiddleware, CORSMiddleware, Middleware
from microasgi.responses._sse import encode_event
from microasgi.types import Message
from tests.eventstream import parse
from tests.helpers import AddHeader, Exchange, MakeClient, http_scope

# -- the wire format ----------------------------------------------------------------------------


def test_data_lines_split_on_cr_lf_and_crlf_only() -> None:
    assert ServerSentEvent("a\r\nb\rc\nd").encode() == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    for char in ("\x1e", "\x1c", "\x1d", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"):
        text = f"one{char}line"
        assert ServerSentEvent(text).encode() == f"data: {text}\n\n".encode()
        assert parse([ServerSentEvent(text).encode()]).events[0].data == text


def test_empty_data_is_one_data_line_and_is_dispatched() -> None:
    assert ServerSentEvent("").encode() == b"data: \n\n"
    events = parse([ServerSentEvent("").encode()]).events
    assert [(e.type, e.data) for e in events] == [("message", "")]


def test_all_fields() -> None:
    event = ServerSentEvent("hi", event="greeting", id="7", retry=2500, comment="note")
    assert event.encode() == b": note\nevent: greeting\nid: 7\nretry: 2500\ndata: hi\n\n"
    parser = parse([event.encode()])
    assert [(e.type, e.data, e.last_event_id) for e in parser.events] == [("greeting", "hi", "7")]
    assert parser.retry == 2500 and parser.comments == ["note"]


def test_fields_without_data() -> None:
    assert ServerSentEvent(id=5).encode() == b"id: 5\n\n"
    assert ServerSentEvent(comment="").encode() == b":\n\n"
    assert ServerSentEvent(retry=0).encode() == b"retry: 0\n\n"


def test_data_that_is_not_a_str_is_json() -> None:
    assert (
        ServerSentEvent({"a": [1, 2], "é": None}).encode()
        == b'data: {"a":[1,2],"\xc3\xa9":null}\n\n'
    )
    assert ServerSentEvent(42).encode() == b"data: 42\n\n"
    assert ServerSentEvent(["x\ny"]).encode() == b'data: ["x\\ny"]\n\n'
    with pytest.raises(TypeError, match="bytes"):
        ServerSentEvent(b"raw")
    with pytest.raises(ValueError):
        ServerSentEvent(float("nan"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event": "a\nb"},
        {"event": "a\rb"},
        {"id": "1\r\nevent: forged"},
        {"id": "1\n"},
        {"id": "a\0b"},
        {"comment": "hi\ndata: forged"},
        {"comment": "\r"},
        {"retry": -1},
        {"retry": 1.5},
        {"retry": True},
        {"retry": "100"},
    ],
)
def test_injection_and_bad_fields_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        ServerSentEvent("x", **kwargs)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event", "x\ndata: forged"),
        ("id", "1\r"),
        ("id", "\0"),
        ("comment", "\n"),
        ("retry", "1\ndata: forged"),  # retry is digits only, on the wire as in the spec
        ("retry", -5),
        ("retry", 2.5),
        ("retry", True),
    ],
)
def test_fields_changed_after_creation_are_checked_again(field: str, value: str) -> None:
    event = ServerSentEvent("x", event="e", id="1", comment="c")
    setattr(event, field, value)
    with pytest.raises(ValueError):
        event.encode()


@settings(max_examples=300, deadline=None)
@example(data="\ufeffstarts with a BOM", event=None, id=None)
@given(
    data=st.text(max_size=40),
    event=st.none() | st.text(max_size=10).filter(lambda s: "\r" not in s and "\n" not in s),
    id=st.none()
    | st.text(max_size=10).filter(lambda s: "\r" not in s and "\n" not in s and "\0" not in s),
)
def test_a_browser_reads_back_what_was_sent(data: str, event: str | None, id: str | None) -> None:
    encoded = ServerSentEvent(data, event=event, id=id).encode()
    # Arbitrary split points: the parser sees the bytes as a network might deliver them.
    parser = parse([encoded[: len(encoded) // 2], encoded[len(encoded) // 2 :]])
    assert len(parser.events) == 1
    got = parser.events[0]
    # Data that starts with a BOM comes back whole: the stream starts with a field
    # name, so the one BOM a parser drops (at the start of the stream) is never the data's.
    normalised = data.replace("\r\n", "\n").replace("\r", "\n")
    assert got.data == normalised
    assert got.type == (event or "message")
    assert got.last_event_id == (id or "")


def test_encode_event_items() -> None:
    assert encode_event("plain") == b"data: plain\n\n"
    assert encode_event({"data": "x", "event": "e", "id": 3}) == b"event: e\nid: 3\ndata: x\n\n"
    assert encode_event({"data": {"k": 1}}) == b'data: {"k":1}\n\n'
    with pytest.raises(TypeError, match="ServerSentEvent\\(data=your_dict\\)"):
        encode_event({"temperature": 21})
    with pytest.raises(TypeError, match="not int"):
        encode_event(5)
    with pytest.raises(TypeError):
        encode_event(b"bytes")


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError):
        EventSourceResponse([], ping=-1)
    with pytest.raises(ValueError):
        EventSourceResponse([], ping=float("inf"))
    with pytest.raises(ValueError):
        EventSourceResponse([], send_timeout=0)


# -- the response ------------------------------------------------------------------------------


def scope(method: str = "GET") -> dict[str, Any]:
    return http_scope(method, "/events")


def body_of(ex: Exchange) -> bytes:
    return ex.body


@pytest.mark.anyio
async def test_headers_go_out_before_the_first_event() -> None:
    release = anyio.Event()

    async def events() -> AsyncIterator[str]:
        await release.wait()
        yield "late"

    started = anyio.Event()

    class SeesStart(Exchange):
        async def send(self, message: Message) -> None:
            await super().send(message)
            started.set()

    ex = SeesStart()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ex.run, EventSourceResponse(events()), scope())
        with anyio.fail_after(2):
            await started.wait()
        assert ex.header(b"content-type") == b"text/event-stream; charset=utf-8"
        assert ex.header(b"cache-control") == b"no-store"
        assert ex.header(b"x-accel-buffering") == b"no"
        assert ex.header(b"content-length") is None
        release.set()
    assert ex.body == b"data: late\n\n"
    last = ex.sent[-1]
    assert (last["type"], last["body"], last.get("more_body", False)) == (
        "http.response.body",
        b"",
        False,
    )


@pytest.mark.anyio
async def test_user_headers_win() -> None:
    response = EventSourceResponse([], headers={"Cache-Control": "no-cache", "X-Mine": "1"})
    ex = await Exchange().run(response, scope())
    assert ex.header(b"cache-control") == b"no-cache"
    assert ex.header(b"x-mine") == b"1"


@pytest.mark.anyio
async def test_each_event_is_one_message_sent_as_produced() -> None:
    async def events() -> AsyncIterator[Any]:
        yield "one"
        yield ServerSentEvent("two", id="2")
        yield {"event": "three", "data": ""}

    ex = await Exchange().run(EventSourceResponse(events()), scope())
    bodies = [m["body"] for m in ex.sent[1:]]
    assert bodies == [b"data: one\n\n", b"id: 2\ndata: two\n\n", b"event: three\ndata: \n\n", b""]


@pytest.mark.anyio
async def test_sync_iterable() -> None:
    ex = await Exchange().run(EventSourceResponse(["a", "b"]), scope())
    assert ex.body == b"data: a\n\ndata: b\n\n"


@pytest.mark.anyio
async def test_head_sends_headers_and_closes_the_iterator() -> None:
    closed = []

    async def events() -> AsyncIterator[str]:
        try:
            yield "never"
        finally:
            closed.append(True)

    iterator = events()
    await iterator.__anext__()  # started, so that closing it runs its finally block
    ex = await Exchange().run(EventSourceResponse(iterator), scope("HEAD"))
    assert (ex.status, ex.body) == (200, b"")
    assert closed == [True]


class Timed(Exchange):
    """Records when each message was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def send(self, message: Message) -> None:
        self.times.append(anyio.current_time())
        await super().send(message)


async def _run_for(response: EventSourceResponse, seconds: float) -> Timed:
    """Serve `response` to a client that leaves after `seconds`."""
    ex = Timed()

    async def leave() -> None:
        await anyio.sleep(seconds)
        ex.done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(leave)
        await ex.run(response, scope(), timeout=seconds + 5)
    return ex


def _pings(ex: Exchange) -> int:
    return sum(1 for m in ex.sent if m.get("body") == b": ping\n\n")


@pytest.mark.anyio
async def test_pings_while_silent() -> None:
    async def silent() -> AsyncIterator[str]:
        await anyio.sleep_forever()
        yield "never"

    ex = await _run_for(EventSourceResponse(silent(), ping=0.05), 0.53)
    # About ten (fewer if the machine stalls the loop); a busy loop would send thousands.
    assert 2 <= _pings(ex) <= 10
    gaps = [later - earlier for earlier, later in pairwise(ex.times)]
    assert min(gaps) >= 0.049


@pytest.mark.anyio
async def test_no_pings_while_events_flow() -> None:
    async def busy() -> AsyncIterator[str]:
        while True:
            await anyio.sleep(0.01)
            yield "tick"

    ex = await _run_for(EventSourceResponse(busy(), ping=0.1), 0.5)
    assert sum(1 for m in ex.sent if m.get("body") == b"data: tick\n\n") >= 10
    # A ping only ever follows 0.1 s of silence (on a loaded machine the event loop
    # may stall that long; then a ping is right). Events flowing: no pings.
    silences = 0
    for i in range(1, len(ex.sent)):
        gap = ex.times[i] - ex.times[i - 1]
        if ex.sent[i].get("body") == b": ping\n\n":
            assert gap >= 0.095, gap
        silences += gap >= 0.1
    assert _pings(ex) <= silences


@pytest.mark.anyio
@pytest.mark.parametrize("ping", [0, None])
async def test_pings_can_be_turned_off(ping: float | None) -> None:
    async def silent() -> AsyncIterator[str]:
        await anyio.sleep_forever()
        yield "never"

    ex = await _run_for(EventSourceResponse(silent(), ping=ping), 0.2)
    assert len(ex.sent) == 1  # the start, nothing else


class Tracked:
    """An async iterator that records where it was when it was closed."""

    def __init__(self, first_events: int, then: str) -> None:
        self.first_events = first_events
        self.then = then  # "wait": no event is due; "produce": in the middle of producing one
        self.closed = anyio.Event()
        self.state = ""

    def __aiter__(self) -> Tracked:
        return self

    async def __anext__(self) -> str:
        if self.first_events:
            self.first_events -= 1
            return "early"
        self.state = "producing" if self.then == "produce" else "waiting"
        await anyio.sleep(30)
        return "too late"

    async def aclose(self) -> None:
        self.closed.set()


@pytest.mark.anyio
@pytest.mark.parametrize("then", ["wait", "produce"])
async def test_disconnect_stops_and_closes_the_iterator(then: str) -> None:
    source = Tracked(2, then)
    ran = []
    response = EventSourceResponse(source, background=BackgroundTask(ran.append, 1))
    with anyio.fail_after(3):
        ex = await _run_for(response, 0.1)
    assert source.closed.is_set()
    assert source.state in ("waiting", "producing")
    assert ex.body == b"data: early\n\ndata: early\n\n"
    assert ran == []  # background tasks are for streams that ended by themselves


@pytest.mark.anyio
async def test_disconnect_runs_the_generators_finally_block() -> None:
    cleaned = anyio.Event()

    async def events() -> AsyncIterator[str]:
        try:
            yield "hello"
            await anyio.sleep_forever()
            yield "never"
        finally:
            cleaned.set()

    with anyio.fail_after(3):
        await _run_for(EventSourceResponse(events()), 0.05)
    assert cleaned.is_set()


@pytest.mark.anyio
async def test_sync_generator_closed_on_disconnect() -> None:
    closed = threading.Event()

    def events() -> Iterator[str]:
        try:
            yield "one"
            threading.Event().wait(0.3)  # a blocking producer, in its worker thread
            yield "two"
        finally:
            closed.set()

    with anyio.fail_after(5):
        await _run_for(EventSourceResponse(events()), 0.05)
    assert closed.wait(2)


@pytest.mark.anyio
async def test_background_after_a_complete_stream() -> None:
    ran = []
    ex = await Exchange().run(
        EventSourceResponse(["x"], background=BackgroundTask(ran.append, "done")), scope()
    )
    assert ran == ["done"] and ex.body == b"data: x\n\n"


@pytest.mark.anyio
async def test_send_raising_oserror_ends_quietly_and_closes() -> None:
    source = Tracked(100, "wait")

    class Gone(Exchange):
        async def send(self, message: Message) -> None:
            if message["type"] == "http.response.body":
                raise OSError("client gone")
            await super().send(message)

    await Gone().run(EventSourceResponse(source), scope())
    assert source.closed.is_set()


@pytest.mark.anyio
async def test_send_timeout_ends_a_stuck_stream() -> None:
    source = Tracked(100, "wait")

    class Stuck(Exchange):
        async def send(self, message: Message) -> None:
            await super().send(message)
            if len(self.sent) > 2:
                await anyio.sleep_forever()  # the client stopped reading

    with anyio.fail_after(3):
        await Stuck().run(EventSourceResponse(source, send_timeout=0.1), scope())
    assert source.closed.is_set()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "error",
    [
        LookupError("producer failed"),
        # OSErrors too: only send() speaks for the client, so a producer's
        # ConnectionError is raised, not taken for a client that left.
        ConnectionRefusedError("the database is down"),
        TimeoutError("upstream timed out"),
    ],
)
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_an_error_in_the_iterator_is_raised_as_itself(error: Exception, kind: str) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "ok"
        raise error

    def broken_sync() -> Iterator[str]:
        yield "ok"
        raise error

    source = broken() if kind == "async" else broken_sync()
    with pytest.raises(type(error), match=str(error)):
        await Exchange().run(EventSourceResponse(source), scope())


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_client_gone_before_the_headers_still_closes_the_iterator(method: str) -> None:
    source = Tracked(1, "wait")

    class GoneAtOnce(Exchange):
        async def send(self, message: Message) -> None:
            raise OSError("client gone")

    await GoneAtOnce().run(EventSourceResponse(source), scope(method))
    assert source.closed.is_set()


@pytest.mark.anyio
async def test_bad_item_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        await Exchange().run(EventSourceResponse([object()]), scope())


# -- in an app -----------------------------------------------------------------------------------


def _streaming_app(middleware: list[Middleware] | None = None) -> tuple[App, threading.Event]:
    released = threading.Event()
    app = App(middleware=middleware)

    @app.get("/events")
    async def events(request: Request) -> EventSourceResponse:
        async def gen() -> AsyncIterator[ServerSentEvent]:
            yield ServerSentEvent("first", id="1")
            got = await anyio.to_thread.run_sync(released.wait, 5)
            yield ServerSentEvent("second" if got else "buffered", id="2")

        return EventSourceResponse(gen())

    @app.get("/last")
    async def last(request: Request) -> dict[str, str | None]:
        return {"last_event_id": request.last_event_id}

    return app, released


@pytest.mark.parametrize(
    ("middleware", "encoding"),
    [
        (None, None),
        ([Middleware(AddHeader)], None),
        ([Middleware(AddHeader), Middleware(AddHeader, name="x-two")], None),
        # CompressionMiddleware leaves event streams alone...
        ([Middleware(CompressionMiddleware), Middleware(AddHeader)], None),
        # ... and told to compress them too, it flushes each event, never holds one back.
        (
            [Middleware(CompressionMiddleware, exclude_content_types=()), Middleware(AddHeader)],
            "gzip",
        ),
        ([Middleware(CORSMiddleware, allow_origins=["*"]), Middleware(AddHeader)], None),
    ],
)
def test_events_are_not_buffered_by_middleware(
    make_client: MakeClient, middleware: list[Middleware] | None, encoding: str | None
) -> None:
    app, released = _streaming_app(middleware)
    client = make_client(app)
    headers = {"accept-encoding": "gzip", "origin": "https://example.org"}
    with client.stream("GET", "/events", headers=headers) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers.get("content-encoding") == encoding
        if middleware:
            assert response.headers["x-mw"] == "yes"
        lines = response.iter_lines()
        assert next(lines) == "id: 1"
        assert next(lines) == "data: first"
        released.set()  # only now is the second event produced
        assert [next(lines) for _ in range(3)] == ["", "id: 2", "data: second"]


def test_last_event_id(make_client: MakeClient) -> None:
    app, _ = _streaming_app()
    client = make_client(app)
    assert client.get("/last").json() == {"last_event_id": None}
    assert client.get("/last", headers={"Last-Event-ID": "41"}).json() == {"last_event_id": "41"}
    # EventSource sends the id encoded as UTF-8 (HTML standard, 9.2.3): read back as sent.
    resumed = client.get("/last", headers={"Last-Event-ID": "é-7".encode()})
    assert resumed.json() == {"last_event_id": "é-7"}
    # Not UTF-8 at all: client input, replaced where it is not text, never an error.
    garbled = client.get("/last", headers={"Last-Event-ID": b"\xff7"})
    assert garbled.json() == {"last_event_id": "\ufffd7"}
