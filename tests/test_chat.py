"""The chat example (examples/chat) through the test client, on asyncio and trio."""

from __future__ import annotations

import html
import json
import re
import time
import weakref
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import urlencode

import anyio
import anyio.abc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from examples.chat import app
from examples.chat.app import (
    STATIC,
    Outbox,
    RateLimit,
    TokenBucket,
    client_event,
    client_text,
    forward_events,
    nesting_depth,
    parse_message,
)
from microasgi import WebSocket, WebSocketDisconnect
from microasgi.broadcast import Broadcast, BroadcastError, Event
from microasgi.testclient import TestClient, WebSocketDenied, WebSocketSession
from microasgi.websockets import WebSocketState
from tests.helpers import MakeClient

TIMEOUT = 5.0


@pytest.fixture(autouse=True)
def memory_broadcast(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests run on memory://, whatever the environment says."""
    monkeypatch.delenv("MICROASGI_BROADCAST_URL", raising=False)


@pytest.fixture
def client(make_client: MakeClient) -> Iterator[TestClient]:
    with make_client(app) as client:
        yield client


# Events a session received in a batch and the test has not read yet.
_unread: weakref.WeakKeyDictionary[WebSocketSession, list[dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def receive_event(ws: WebSocketSession) -> dict[str, Any]:
    """The next event, batches taken apart."""
    unread = _unread.setdefault(ws, [])
    if not unread:
        event: dict[str, Any] = ws.receive_json(timeout=TIMEOUT)
        unread += event["events"] if event["type"] == "batch" else [event]
    return unread.pop(0)


def next_event(ws: WebSocketSession, *types: str) -> dict[str, Any]:
    """The next event of one of `types` (all types if none), skipping the others."""
    while True:
        event = receive_event(ws)
        if not types or event["type"] in types:
            return event


def joined(client: TestClient, room: str, nick: str) -> WebSocketSession:
    """A connected session that has seen its own join: it is subscribed from then on."""
    ws = client.websocket_connect(f"/ws/{room}?nick={nick}")
    assert next_event(ws) == {"type": "join", "nick": nick}
    return ws


def say(ws: WebSocketSession, text: str) -> None:
    ws.send_text(json.dumps({"text": text}))


# -- pages ------------------------------------------------------------------------------


def test_landing_page(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert '<form id="join" action="join" method="get">' in response.text
    assert 'value="lobby"' in response.text
    assert 'src="static/chat.js"' in response.text


def test_landing_page_prefills_only_valid_rooms(client: TestClient) -> None:
    assert 'value="dev-2"' in client.get("/", params={"room": "dev-2"}).text
    page = client.get("/", params={"room": '"><script>alert(1)</script>'}).text
    assert "<script>alert" not in page
    assert 'value="lobby"' in page


def test_room_page(client: TestClient) -> None:
    response = client.get("/rooms/general_1")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "content-security-policy" in response.headers
    assert 'data-room="general_1"' in response.text
    assert "<title>#general_1 · microasgi chat</title>" in response.text
    assert 'src="../static/chat.js"' in response.text
    assert 'id="messages"' in response.text


@pytest.mark.parametrize(
    "path", ["/rooms/bad!room", "/rooms/" + "a" * 65, "/rooms/a%20b", "/rooms/%C3%A9t%C3%A9"]
)
def test_invalid_room_page_is_404(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_longest_room_name(client: TestClient) -> None:
    assert client.get("/rooms/" + "a" * 64).status_code == 200


def test_join_form_redirects_to_the_room(client: TestClient) -> None:
    response = client.get(
        "/join", params={"room": "lobby", "nick": "  Zoë 🙂 "}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/rooms/lobby?nick=Zo%C3%AB+%F0%9F%99%82"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8000", "[::1]:9000", "testserver"])
def test_join_redirect_ignores_the_host_header(client: TestClient, host: str) -> None:
    """Before: Host: evil.example gave Location: http://evil.example/rooms/..."""
    response = client.get(
        "/join",
        params={"room": "lobby", "nick": "ann"},
        headers={"host": host},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/rooms/lobby?nick=ann"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "a b", ""])
def test_unknown_hosts_are_refused(client: TestClient, host: str) -> None:
    response = client.get("/join", params={"room": "lobby", "nick": "ann"}, headers={"host": host})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser
        ("http://testserver", True),
        ("https://testserver", True),
        ("http://evil.example", False),
        ("http://testserver.evil.example", False),
        ("null", False),
    ],
)
def test_cross_origin_websockets_are_refused(
    client: TestClient, origin: str | None, allowed: bool
) -> None:
    headers = {"origin": origin} if origin is not None else {}
    if allowed:
        with client.websocket_connect("/ws/lobby?nick=ann", headers=headers) as session:
            assert session.receive_json()["type"] == "join"
    else:
        with pytest.raises(WebSocketDenied) as info:
            client.websocket_connect("/ws/lobby?nick=ann", headers=headers)
        assert info.value.status_code == 403


def test_join_redirect_keeps_the_root_path(make_client: MakeClient) -> None:
    with make_client(app, root_path="/chat") as client:
        response = client.get(
            "/chat/join", params={"room": "dev", "nick": "ann"}, follow_redirects=False
        )
    assert response.headers["location"] == "/chat/rooms/dev?nick=ann"


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"room": "no way", "nick": "ann"}, "Room names are 1 to 64"),
        ({"room": '"><b>x', "nick": '"><i>ann'}, "Room names are 1 to 64"),
        ({"room": "", "nick": "ann"}, "Room names are 1 to 64"),
        ({"room": "lobby", "nick": " "}, "Invalid nickname: the nickname is empty"),
        ({"room": "lobby", "nick": "x" * 33}, "longer than 32 characters"),
        ({"room": "lobby", "nick": "a\u202eb"}, "control or invisible characters"),
    ],
)
def test_join_form_errors(client: TestClient, params: dict[str, str], error: str) -> None:
    response = client.get("/join", params=params, follow_redirects=False)
    assert response.status_code == 400
    assert error in response.text
    assert '<p class="error" role="alert">' in response.text
    # What was typed is kept for a retry, escaped.
    assert f'value="{html.escape(params["room"])}"' in response.text
    assert f'value="{html.escape(params["nick"])}"' in response.text
    assert "<b>" not in response.text and "<i>" not in response.text


def test_static_files(client: TestClient) -> None:
    js = client.get("/static/chat.js")
    assert js.status_code == 200
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    css = client.get("/static/chat.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert client.get("/static/app.py").status_code == 404
    assert client.get("/static/..%2Fapp.py").status_code == 404


def test_client_escapes_user_data_and_needs_no_network(client: TestClient) -> None:
    js = STATIC["chat.js"][0].decode()
    code = re.sub(r"//[^\n]*", "", js)  # the comments may talk about innerHTML
    assert "innerHTML" not in code and "outerHTML" not in code
    assert "insertAdjacentHTML" not in code and "document.write" not in code
    assert "textContent" in code
    for text in (client.get("/").text, client.get("/rooms/x").text, js, STATIC["chat.css"][0]):
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", str(text)), text
        assert "@import" not in str(text)


# -- WebSocket: fan-out -----------------------------------------------------------------


def test_messages_reach_the_room_and_only_the_room(client: TestClient) -> None:
    with (
        joined(client, "a", "ann") as ann,
        joined(client, "a", "al") as al,
        joined(client, "b", "bob") as bob,
    ):
        assert next_event(ann) == {"type": "join", "nick": "al"}
        say(ann, "hello room a")
        for ws in (ann, al):
            event = next_event(ws)
            assert event["type"] == "message"
            assert (event["nick"], event["text"]) == ("ann", "hello room a")
            assert isinstance(event["id"], str) and event["id"]
            assert isinstance(event["time"], int)
        # bob's next event is his own message, not room a's.
        say(bob, "hello room b")
        event = next_event(bob)
        assert (event["type"], event["nick"], event["text"]) == ("message", "bob", "hello room b")


def test_messages_keep_their_order(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROASGI_CHAT_BURST", "30")  # all 30 at once
    with (
        make_client(app) as client,
        joined(client, "order", "ann") as ann,
        joined(client, "order", "bob") as bob,
    ):
        for i in range(30):
            say(ann, f"message {i}")
        texts = [next_event(bob, "message")["text"] for _ in range(30)]
        assert texts == [f"message {i}" for i in range(30)]


def test_join_and_leave_notices(client: TestClient) -> None:
    with joined(client, "lobby", "ann") as ann:
        with joined(client, "lobby", "bob"):
            assert next_event(ann) == {"type": "join", "nick": "bob"}
        assert next_event(ann) == {"type": "leave", "nick": "bob"}


def test_leaving_ends_the_subscription(client: TestClient) -> None:
    broadcast: Broadcast = client.app_state["broadcast"]
    with joined(client, "empty", "ann"):
        assert broadcast.subscriber_count("chat:room:empty") == 1
    assert broadcast.subscriber_count("chat:room:empty") == 0


@pytest.mark.parametrize(
    ("raw", "nick"),
    [("%20ann%20", "ann"), ("Zo%C3%AB%20%F0%9F%99%82", "Zoë 🙂"), ("n" * 32, "n" * 32)],
)
def test_nicknames_are_stripped(client: TestClient, raw: str, nick: str) -> None:
    with client.websocket_connect(f"/ws/lobby?nick={raw}") as ws:
        assert next_event(ws) == {"type": "join", "nick": nick}
        say(ws, "hi")
        assert next_event(ws, "message")["nick"] == nick


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("/ws/lobby", "invalid nickname: choose a nickname"),
        ("/ws/lobby?nick=", "invalid nickname: the nickname is empty"),
        ("/ws/lobby?nick=%20%20%09", "invalid nickname: the nickname is empty"),
        ("/ws/lobby?nick=" + "x" * 33, "invalid nickname: the nickname is longer than 32"),
        ("/ws/lobby?nick=a%07b", "invalid nickname: the nickname contains control"),
        ("/ws/lobby?nick=a%E2%80%8Bb", "invalid nickname: the nickname contains control"),
        ("/ws/bad!room?nick=ann", "invalid room name"),
        ("/ws/" + "r" * 65 + "?nick=ann", "invalid room name"),
    ],
)
def test_bad_handshakes_are_denied(client: TestClient, url: str, reason: str) -> None:
    with pytest.raises(WebSocketDenied) as denied:
        client.websocket_connect(url)
    assert denied.value.status_code == 403
    assert denied.value.body.decode().startswith(reason)


# -- WebSocket: bad messages ------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("hello", 'messages are JSON like {"text": "hello"}'),
        ("[1, 2]", 'messages are JSON like {"text": "hello"}'),
        ('{"text": 5}', 'messages are JSON like {"text": "hello"}'),
        ('{"msg": "hi"}', 'messages are JSON like {"text": "hello"}'),
        ('{"text": " \\n "}', "the message is empty"),
        (json.dumps({"text": "x" * 2001}), "the message is longer than 2000 characters"),
        (json.dumps({"text": "x" * 20_000}), "the message is longer than 2000 characters"),
    ],
)
def test_bad_messages_answer_the_sender_only(client: TestClient, frame: str, error: str) -> None:
    with joined(client, "r", "ann") as ann, joined(client, "r", "bob") as bob:
        ann.send_text(frame)
        assert next_event(ann, "error", "message") == {
            "type": "error",
            "reason": "invalid",
            "text": error,
        }
        # The connection stays open, and bob saw nothing of it.
        say(ann, "still here")
        assert next_event(ann, "message")["text"] == "still here"
        assert next_event(bob, "error", "message")["text"] == "still here"


NESTED = "the message nests more than 8 levels deep"


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("[" * 10_000, NESTED),  # before: RecursionError in json.loads, closed with 1011
        ("{" * 5000, NESTED),
        ('{"text": ' + "[" * 3000 + "]" * 3000 + "}", NESTED),
        ('{"a":' * 2000 + "1" + "}" * 2000, NESTED),  # valid JSON, 2,000 levels
        ("[" * 9 + "]" * 9, NESTED),
        ("[" * 8 + "]" * 8, 'messages are JSON like {"text": "hello"}'),  # deep enough
        ('{"text": "' + "[" * 2000 + '"}', None),  # brackets in a string are text
        ('{"text": "\\"' + "{" * 50 + '"}', None),  # after an escaped quote, still text
        ("1" * 5000, 'messages are JSON like {"text": "hello"}'),  # int over 4,300 digits
        ('{"text": "hi", "extra": "' + "x" * 12_000 + '"}', None),  # extra fields ignored
    ],
)
def test_hostile_frames_get_an_error_and_the_connection_stays_open(
    client: TestClient, frame: str, error: str | None
) -> None:
    with joined(client, "r", "ann") as ann:
        ann.send_text(frame)
        event = next_event(ann, "error", "message")
        if error is None:
            assert event["type"] == "message"
        else:
            assert event == {"type": "error", "reason": "invalid", "text": error}
        say(ann, "still here")
        assert next_event(ann, "message")["text"] == "still here"


# -- parsing, for any input -------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=40,
)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    return 0


@given(JSON, st.booleans())
def test_nesting_depth_is_the_depth_of_any_json(value: Any, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only)
    assert nesting_depth(raw, stop=10_000) == depth_of(value)
    assert nesting_depth(raw, stop=2) == min(depth_of(value), 3)  # stops past `stop`


@given(st.text(alphabet=st.sampled_from('[]{}"\\ax:,'), max_size=300) | st.text())
def test_parse_message_takes_any_text(raw: str) -> None:
    """Whatever the frame: a text, or a ValueError saying what is wrong. Never another
    exception, which would close the connection with 1011."""
    try:
        text = parse_message(raw)
    except ValueError as exc:
        assert str(exc)
    else:
        assert 0 < len(text) <= 2000


MESSAGES = st.fixed_dictionaries({"text": st.text()}, optional={"x": JSON}) | JSON


@given(MESSAGES)
def test_parse_message_takes_any_json(value: Any) -> None:
    raw = json.dumps(value)
    try:
        text: str | None = parse_message(raw)
    except ValueError:
        text = None
    assert text == what_parse_message_should_make_of(value, raw)


def what_parse_message_should_make_of(value: Any, raw: str) -> str | None:
    """The rules of docs/chat.md, written out plainly; None for "refused"."""
    if len(raw) > 16_384 or depth_of(value) > 8:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return None
    if len(value["text"]) > 2000:
        return None
    text = value["text"].replace("\r\n", "\n")
    kept = "".join(c for c in text if c in "\t\n" or not unwanted(c)).strip()
    return kept or None


def unwanted(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF


@pytest.mark.parametrize(
    "unit",
    ['"\\"', "[", "{", '"a",', "\\", '"\\\\', "[1,"],
    ids=["escaped-quotes", "brackets", "braces", "strings", "backslashes", "quote-pairs", "list"],
)
def test_nesting_depth_is_linear(unit: str) -> None:
    """Eight times the input costs about eight times the work (a quadratic scan, 64 times).
    The worst shapes: an unterminated string full of escaped quotes is where a regular
    expression for JSON strings backtracks from every quote."""

    def cost(n: int) -> float:
        raw = '"' + unit * n if unit.startswith('"\\') else unit * n
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            nesting_depth(raw, stop=10**9)
            best = min(best, time.perf_counter() - start)
        return best

    assert cost(16_000) < 20 * cost(2_000)


def test_binary_frames_are_refused(client: TestClient) -> None:
    with joined(client, "r", "ann") as ann:
        ann.send_bytes(b'{"text": "hi"}')
        event = next_event(ann)
        assert (event["type"], event["reason"]) == ("error", "invalid")
        assert "text frames" in event["text"]
        say(ann, "text works")
        assert next_event(ann)["text"] == "text works"


def test_longest_message(client: TestClient) -> None:
    with joined(client, "r", "ann") as ann:
        say(ann, "é" * 2000)
        assert next_event(ann)["text"] == "é" * 2000


def test_message_text_is_cleaned(client: TestClient) -> None:
    with joined(client, "r", "ann") as ann:
        # Control characters and a lone surrogate (not encodable) go; tabs and newlines stay.
        ann.send_text('{"text": "  a\\u0000b\\u001bc\\r\\nd\\te\\ud800f  "}')
        assert next_event(ann)["text"] == "abc\nd\tef"
        say(ann, "<b>not bold</b>")  # passed on as data: the page shows it as text
        assert next_event(ann)["text"] == "<b>not bold</b>"


# -- WebSocket: rate limits ------------------------------------------------------------


@pytest.fixture
def slow_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three messages at once, then one every 1,000 s: no refill during a test."""
    monkeypatch.setenv("MICROASGI_CHAT_RATE", "0.001")
    monkeypatch.setenv("MICROASGI_CHAT_BURST", "3")


@pytest.mark.usefixtures("slow_rate")
def test_a_client_over_its_rate_is_refused_then_closed_with_1008(make_client: MakeClient) -> None:
    with (
        make_client(app) as client,
        joined(client, "r", "ann") as ann,
        joined(client, "r", "bob") as bob,
    ):
        assert next_event(ann) == {"type": "join", "nick": "bob"}
        for i in range(3):
            say(ann, f"m{i}")
            assert next_event(ann)["text"] == f"m{i}"
        for i in range(3, 6):  # over the rate: refused, told, three times (the burst)
            say(ann, f"m{i}")
            assert next_event(ann) == {
                "type": "error",
                "reason": "rate_limited",
                "text": "You are sending too fast (at most 0.001 messages a second): "
                "this one was not delivered.",
                "message": f"m{i}",
            }
        ann.send_bytes(b"and on")  # every frame counts, valid or not
        with pytest.raises(WebSocketDisconnect) as closed:
            next_event(ann)
        assert (closed.value.code, closed.value.reason) == (1008, "sending too fast")
        assert [next_event(bob)["text"] for _ in range(3)] == ["m0", "m1", "m2"]
        assert next_event(bob) == {"type": "leave", "nick": "ann"}


@pytest.mark.usefixtures("slow_rate")
def test_invalid_frames_count_against_the_rate(make_client: MakeClient) -> None:
    with make_client(app) as client, joined(client, "r", "ann") as ann:
        for _ in range(3):
            ann.send_text("not json")
            assert next_event(ann)["reason"] == "invalid"
        ann.send_text("not json")
        event = next_event(ann)
        assert event["reason"] == "rate_limited"
        assert "message" not in event  # nothing to give back


def test_the_bucket_refills_at_the_rate() -> None:
    start = 100.0
    bucket = TokenBucket(rate=2, burst=3, now=start)
    assert [bucket.take(start) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(start + 0.4) is False  # 0.8 of a token
    assert bucket.take(start + 0.5) is True  # 1.0
    assert bucket.take(start + 100) is True
    assert bucket.tokens == 2  # refilled to the burst, not beyond, then one taken


def test_rate_limit_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RateLimit.from_environment() == RateLimit(5.0, 10)
    monkeypatch.setenv("MICROASGI_CHAT_RATE", "0.5")
    monkeypatch.setenv("MICROASGI_CHAT_BURST", "2")
    assert RateLimit.from_environment() == RateLimit(0.5, 2)
    for rate, burst in (("0", "2"), ("-1", "2"), ("fast", "2"), ("1", "0"), ("1", "2.5")):
        monkeypatch.setenv("MICROASGI_CHAT_RATE", rate)
        monkeypatch.setenv("MICROASGI_CHAT_BURST", burst)
        with pytest.raises(ValueError, match="MICROASGI_CHAT_RATE="):
            RateLimit.from_environment()


def test_invalid_settings_fail_the_startup(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROASGI_CHAT_RATE", "lots")
    with pytest.raises(Exception, match="MICROASGI_CHAT_RATE='lots'"), make_client(app):
        pass


def test_a_flood_does_not_crowd_out_the_others(client: TestClient) -> None:
    """One client sends 3,000 frames at once, the reader's queue holds 1,000: before, the
    flood pushed most of a well-behaved client's messages out of it. Now the flooder is
    closed after its burst and a few refusals, and every message reaches the reader."""
    with (
        joined(client, "f", "reader") as reader,
        joined(client, "f", "good") as good,
        joined(client, "f", "flood") as flood,
    ):
        for i in range(3000):
            say(flood, f"flood {i}")
            if i % 300 == 150:
                say(good, f"good {i // 300}")
        texts = []
        while len([t for t in texts if t.startswith("good")]) < 10:
            event = next_event(reader, "message")
            texts.append(event["text"])
        assert [t for t in texts if t.startswith("good")] == [f"good {i}" for i in range(10)]
        assert len(texts) - 10 <= 12  # the flood's burst, and what refilled meanwhile


# -- WebSocket: the backend fails ---------------------------------------------------------


def test_undelivered_message_is_reported(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = False
    publish = Broadcast.publish

    async def flaky_publish(
        self: Broadcast, channel: str, message: str, *, keep: bool = True
    ) -> str | None:
        if down:
            raise BroadcastError("Redis is unreachable, the message was not published")
        return await publish(self, channel, message, keep=keep)

    monkeypatch.setattr(Broadcast, "publish", flaky_publish)
    with joined(client, "r", "ann") as ann, joined(client, "r", "bob") as bob:
        down = True
        say(ann, "lost?")
        event = next_event(ann, "error", "message")
        assert event["type"] == "error"
        assert event["reason"] == "not_delivered"
        assert event["message"] == "lost?"
        assert "not delivered" in event["text"]
        down = False
        say(ann, "back")
        assert next_event(bob, "message", "error")["text"] == "back"
        assert next_event(ann, "message", "error")["text"] == "back"


def test_join_while_the_backend_is_down(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_publish(
        self: Broadcast, channel: str, message: str, *, keep: bool = True
    ) -> str | None:
        raise BroadcastError("Redis is unreachable")

    monkeypatch.setattr(Broadcast, "publish", failing_publish)
    with client.websocket_connect("/ws/r?nick=ann") as ann:
        event = next_event(ann)
        assert (event["type"], event["reason"]) == ("error", "not_delivered")
        assert "others may not see that you joined" in event["text"]


POSITION = "0123456789abcdef-7"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (Event("c", '{"type": "join", "nick": "x"}'), {"type": "join", "nick": "x"}),
        (
            Event("c", '{"type": "message", "text": "hi"}', position=POSITION),
            {"type": "message", "text": "hi", "position": POSITION},
        ),
        (
            Event("c", None, "gap", 3, POSITION),
            {
                "type": "notice",
                "reason": "gap",
                "text": "3 messages could not be delivered.",
                "missed": 3,
                "position": POSITION,
            },
        ),
        (
            Event("c", None, "gap", 1, POSITION),
            {
                "type": "notice",
                "reason": "gap",
                "text": "1 message could not be delivered.",
                "missed": 1,
                "position": POSITION,
            },
        ),
        (
            Event("c", None, "reset", None, "0123456789abcdef-0"),
            {
                "type": "notice",
                "reason": "reset",
                "text": "The chat's history was reset: messages sent before this point "
                "may be missing.",
                "position": "0123456789abcdef-0",
            },
        ),
        (Event("c", "not json"), None),
        (Event("c", '{"type": "admin", "text": "x"}'), None),
        (Event("c", "[1]"), None),
    ],
)
def test_broadcast_events_become_client_events(
    event: Event, expected: dict[str, Any] | None
) -> None:
    assert client_event(event) == expected
    text = client_text(event)
    assert (json.loads(text) if text is not None else None) == expected


class FakeWebSocket:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.application_state = WebSocketState.CONNECTED

    async def send_text(self, data: str) -> None:
        if self.application_state is not WebSocketState.CONNECTED:
            raise RuntimeError("send after close")  # as a real one does
        self.sent.append(json.loads(data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.application_state = WebSocketState.CLOSED
        self.sent.append(("close", code, reason))


@pytest.mark.anyio
async def test_closing_the_broadcast_closes_the_sockets() -> None:
    """Where a server shuts the lifespan down before the connections: 1012, try again."""
    ws = FakeWebSocket()
    broadcast = Broadcast("memory://")
    shutdown = anyio.Event()

    async def lifespan(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with broadcast:  # connected and closed in a task of its own, as by the app
            task_status.started()
            await shutdown.wait()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await tg.start(lifespan)
            async with broadcast.subscribe("c") as subscriber:
                outbox = Outbox(cast(WebSocket, ws))
                tg.start_soon(forward_events, subscriber, outbox, tg.cancel_scope)
                await broadcast.publish("c", '{"type": "join", "nick": "ann"}', keep=False)
                await anyio.wait_all_tasks_blocked()
                shutdown.set()
                await anyio.sleep_forever()  # until forward_events cancels the group
    assert ws.sent == [{"type": "join", "nick": "ann"}, ("close", 1012, "the server is restarting")]
    # What the other loop still has to say (an error notice, say) is dropped, not an error.
    await outbox.error("too late", "invalid")
    assert len(ws.sent) == 2


@pytest.mark.anyio
async def test_waiting_events_go_in_one_frame() -> None:
    ws = FakeWebSocket()
    with anyio.fail_after(TIMEOUT):
        async with (
            Broadcast("memory://") as broadcast,
            broadcast.subscribe("c") as subscriber,
            anyio.create_task_group() as tg,
        ):
            for nick in ("ann", "bob", "cy"):
                await broadcast.publish("c", json.dumps({"type": "join", "nick": nick}))
            await broadcast.publish("c", "not ours: left out")
            tg.start_soon(forward_events, subscriber, Outbox(cast(WebSocket, ws)), tg.cancel_scope)
            await anyio.wait_all_tasks_blocked()
            await broadcast.publish("c", json.dumps({"type": "leave", "nick": "ann"}), keep=False)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    batch, alone = ws.sent
    assert [event["nick"] for event in batch["events"]] == ["ann", "bob", "cy"]
    assert batch["type"] == "batch"
    assert all(event["position"] for event in batch["events"])
    assert alone == {"type": "leave", "nick": "ann"}


@pytest.mark.anyio
async def test_sending_to_a_client_that_left_is_not_an_error() -> None:
    """The server's send raises an OSError (the client is gone); the WebSocket makes it
    a WebSocketDisconnect(1006), which the Outbox lets pass quietly."""

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            raise ConnectionResetError("the client is gone")  # what servers raise

    ws = WebSocket({"type": "websocket", "path": "/ws/a", "headers": []}, receive, send)
    await ws.accept()
    await Outbox(ws).send({"type": "join", "nick": "ann"})


# -- history and resuming -----------------------------------------------------------------


def test_a_newcomer_sees_the_last_50_messages_then_its_join(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROASGI_CHAT_BURST", "100")
    with make_client(app) as client, joined(client, "h", "ann") as ann:
        for i in range(60):
            say(ann, f"m{i}")
        last = [next_event(ann, "message") for _ in range(60)][-1]
        with client.websocket_connect("/ws/h?nick=bob") as bob:
            frame = bob.receive_json(timeout=TIMEOUT)  # the history comes in one frame
            assert frame["type"] == "batch"
            _unread[bob] = events = frame["events"]
            assert len(events) >= 50
            history = [next_event(bob) for _ in range(50)]
            assert [e["text"] for e in history] == [f"m{i}" for i in range(10, 60)]
            assert history[-1]["position"] == last["position"]
            assert next_event(bob) == {"type": "join", "nick": "bob"}  # not kept, no position
        assert next_event(ann) == {"type": "join", "nick": "bob"}
        assert next_event(ann) == {"type": "leave", "nick": "bob"}


def test_a_returning_client_gets_what_it_missed_once_in_order(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROASGI_CHAT_BURST", "100")
    with make_client(app) as client, joined(client, "back", "ann") as ann:
        with joined(client, "back", "bob") as bob:
            say(ann, "seen")
            position = next_event(bob, "message")["position"]
        for i in range(5):
            say(ann, f"missed {i}")
        with client.websocket_connect(f"/ws/back?nick=bob&since={position}") as bob:
            events = [next_event(bob) for _ in range(6)]
            assert [e.get("text") for e in events[:5]] == [f"missed {i}" for i in range(5)]
            assert events[5] == {"type": "join", "nick": "bob"}
            say(ann, "live")
            assert next_event(bob)["text"] == "live"  # nothing twice in between


@pytest.mark.parametrize(
    "since", ["", "yesterday", "0123456789ABCDEF-1", "0123456789abcdef-01", "x" * 5000]
)
def test_an_invalid_since_is_answered_and_ignored(client: TestClient, since: str) -> None:
    with joined(client, "s", "ann") as ann:
        say(ann, "before")
        next_event(ann, "message")
        query = urlencode({"nick": "bob", "since": since})
        with client.websocket_connect(f"/ws/s?{query}") as bob:
            error = next_event(bob)
            assert (error["type"], error["reason"]) == ("error", "invalid_since")
            assert next_event(bob)["text"] == "before"  # the recent messages instead
            assert next_event(bob) == {"type": "join", "nick": "bob"}


def test_a_position_from_another_history_is_a_reset(client: TestClient) -> None:
    with joined(client, "r", "ann") as ann:
        say(ann, "kept")
        next_event(ann, "message")
        with client.websocket_connect("/ws/r?nick=bob&since=0123456789abcdef-3") as bob:
            reset = next_event(bob)
            assert (reset["type"], reset["reason"]) == ("notice", "reset")
            assert next_event(bob)["text"] == "kept"  # this history, from its start
            assert next_event(bob) == {"type": "join", "nick": "bob"}
