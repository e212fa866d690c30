"""The SSE example behind a real uvicorn (`python -m microasgi run examples.sse:app`),
read with httpx streaming: headers at once, resumption with Last-Event-ID, cleanup when
the client goes away, streams that end and long polling."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from examples.sse.app import create_app
from tests.eventstream import EventStreamParser
from tests.services import ServerProcess, free_port
from tests.test_integration_uvicorn import run_server

pytestmark = pytest.mark.integration
pytest.importorskip("uvicorn")

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess("examples.sse:app", free_port(), ready_path="/stats") as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=TIMEOUT) as client:
        yield client


def post(client: httpx.Client, text: str) -> int:
    response = client.post("/messages", json={"text": text})
    assert response.status_code == 200, response.text
    message_id: int = response.json()["id"]
    return message_id


class Reader:
    """Reads an event stream as it arrives, the way a browser parses it."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.parser = EventStreamParser()
        self.chunks = response.iter_text()

    def until(self, predicate: Any, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.parser):
            assert time.monotonic() < deadline, self.parser.events
            self.parser.feed(next(self.chunks))

    def messages(self) -> list[tuple[str, str]]:
        return [(e.last_event_id, e.data) for e in self.parser.events if e.type == "message"]


def wait_for(predicate: Any, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_headers_and_first_event_arrive_at_once(client: httpx.Client) -> None:
    started = time.monotonic()
    with client.stream("GET", "/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-length" not in response.headers
        reader = Reader(response)
        reader.until(lambda p: any(e.type == "tick" for e in p.events))
        assert time.monotonic() - started < 2  # not held back until something fills a buffer
        assert reader.parser.retry == 1000
        assert reader.parser.comments[0] == "connected"


def test_resumes_after_last_event_id(client: httpx.Client) -> None:
    first = post(client, "one")
    second = post(client, "two")
    third = post(client, "three")
    with client.stream("GET", "/events", headers={"last-event-id": str(first)}) as response:
        reader = Reader(response)
        reader.until(lambda p: len([e for e in p.events if e.type == "message"]) >= 2)
        assert reader.messages() == [(str(second), "two"), (str(third), "three")]
        fourth = post(client, "four\nwith two lines")
        reader.until(lambda p: len([e for e in p.events if e.type == "message"]) >= 3)
        assert reader.messages()[-1] == (str(fourth), "four\nwith two lines")
    assert str(first) in client.get("/stats").json()["resumed_from"]


def test_a_new_client_gets_the_recent_messages(client: httpx.Client) -> None:
    last = post(client, "recent")
    with client.stream("GET", "/events") as response:
        reader = Reader(response)
        reader.until(lambda p: any(e.last_event_id == str(last) for e in p.events))
        assert reader.messages()[-1] == (str(last), "recent")


@pytest.mark.parametrize("leave_after", ["connected", "tick"])
def test_leaving_between_events_ends_the_stream(client: httpx.Client, leave_after: str) -> None:
    wait_for(lambda: client.get("/stats").json()["open_streams"] == 0)
    with client.stream("GET", "/events") as response:
        reader = Reader(response)
        if leave_after == "tick":
            reader.until(lambda p: any(e.type == "tick" for e in p.events))
        else:
            reader.until(lambda p: p.comments)
        assert client.get("/stats").json()["open_streams"] == 1
    # Closed between two ticks: the generator's finally block runs. (With a tick a
    # second a failed send would end it too; the next test rules that out.)
    started = time.monotonic()
    wait_for(lambda: client.get("/stats").json()["open_streams"] == 0, timeout=3)
    assert time.monotonic() - started < 3


def test_leaving_when_nothing_is_due_for_an_hour_ends_the_stream() -> None:
    # Above, a tick a second would end a stream whose client left anyway (the send
    # fails). Here nothing is sent for an hour, so only the disconnect can end it.
    app = create_app(tick_seconds=3600, ping=3600)
    port = free_port()
    with (
        run_server(app, port, lifespan="off"),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client,
    ):
        with client.stream("GET", "/events") as response:
            reader = Reader(response)
            reader.until(lambda p: any(e.type == "tick" for e in p.events))
            assert client.get("/stats").json()["open_streams"] == 1
        wait_for(lambda: client.get("/stats").json()["open_streams"] == 0, timeout=5)


def test_stream_that_ends_and_a_client_that_comes_back() -> None:
    env = {"MICROASGI_SSE_STREAM_SECONDS": "1"}
    with (
        ServerProcess("examples.sse:app", free_port(), env=env, ready_path="/stats") as server,
        httpx.Client(base_url=server.http_url, timeout=TIMEOUT) as client,
    ):
        before = post(client, "before")
        started = time.monotonic()
        with client.stream("GET", "/events", headers={"last-event-id": "0"}) as response:
            reader = Reader(response)
            for chunk in response.iter_text():
                reader.parser.feed(chunk)
        assert 0.9 < time.monotonic() - started < 5  # it ended by itself, cleanly
        assert reader.messages() == [(str(before), "before")]
        missed = post(client, "while away")
        last = reader.parser.last_event_id
        with client.stream("GET", "/events", headers={"last-event-id": last}) as response:
            again = Reader(response)
            again.until(lambda p: any(e.type == "message" for e in p.events))
            assert again.messages() == [(str(missed), "while away")]


def test_long_poll(client: httpx.Client, server: ServerProcess) -> None:
    last = client.get("/poll", params={"after": 10**9, "timeout": 0}).json()
    assert last == {"messages": [], "last_id": 10**9}
    current = client.get("/stats").json()["last_id"]
    result: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        with httpx.Client(base_url=server.http_url, timeout=TIMEOUT) as other:
            result["body"] = other.get("/poll", params={"after": current, "timeout": 8}).json()
        result["waited"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)  # the poll is waiting
    new = post(client, "for the poller")
    thread.join(TIMEOUT)
    assert result["body"] == {"messages": [{"id": new, "text": "for the poller"}], "last_id": new}
    assert 0.25 < result["waited"] < 5
    started = time.monotonic()
    assert client.get("/poll", params={"after": new, "timeout": 0.5}).json()["messages"] == []
    assert time.monotonic() - started >= 0.45
    assert client.get("/poll", params={"after": "x"}).status_code == 400
    assert client.get("/poll", params={"timeout": "soon"}).status_code == 400


def test_bad_messages(client: httpx.Client) -> None:
    assert client.post("/messages", json={"text": " "}).status_code == 400
    assert client.post("/messages", json=["text"]).status_code == 400
    assert client.post("/messages", content=b"{not json").status_code == 400
    assert client.post("/messages", json={"text": "x" * 501}).status_code == 413
