"""WebSocket basics: routing, iteration, closing codes, errors and the state machine."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest

from microasgi import App, HTTPException, Router, WebSocket, WebSocketDisconnect, WebSocketException
from microasgi.testclient import WebSocketDenied


def test_path_params(make_client: Any) -> None:
    app = App()

    @app.websocket("/rooms/{room}/users/{uid:int}")
    async def room(ws: WebSocket, room: str, uid: int) -> None:
        await ws.accept()
        await ws.send_json({"room": room, "uid": uid, "params": ws.path_params})

    with make_client(app).websocket_connect("/rooms/lobby/users/42") as session:
        assert session.receive_json(timeout=5) == {
            "room": "lobby",
            "uid": 42,
            "params": {"room": "lobby", "uid": 42},
        }


def test_websocket_in_mounted_router(make_client: Any) -> None:
    app = App()
    api = Router()

    @api.websocket("/ws/{name}")
    async def ws(websocket: WebSocket, name: str) -> None:
        await websocket.accept()
        await websocket.send_text(f"{websocket.scope['root_path']}|{websocket.url.path}|{name}")

    app.mount("/api", api)
    with make_client(app).websocket_connect("/api/ws/bob") as s:
        assert s.receive_text(timeout=5) == "/api|/api/ws/bob|bob"


def test_headers_query_params_and_cookies(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(
            {
                "header": websocket.headers.get("x-custom"),
                "q": websocket.query_params.getlist("q"),
                "cookie": websocket.cookies.get("sid"),
                "client": list(websocket.client or ()),
            }
        )

    client = make_client(app)
    with client.websocket_connect(
        "/ws?q=1&q=2", headers={"X-Custom": "v", "Cookie": "sid=xyz"}
    ) as s:
        assert s.receive_json(timeout=5) == {
            "header": "v",
            "q": ["1", "2"],
            "cookie": "xyz",
            "client": ["testclient", 50000],
        }


# -- iteration -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "bytes", "json"])
def test_iterators_end_on_client_disconnect(make_client: Any, kind: str) -> None:
    app = App()
    received: list[Any] = []
    ended: list[str] = []

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        iterator = {
            "text": websocket.iter_text,
            "bytes": websocket.iter_bytes,
            "json": websocket.iter_json,
        }[kind]()
        async for message in iterator:
            received.append(message)
            await websocket.send_text("ack")
        ended.append("loop ended")

    values: list[Any] = {
        "text": ["a", "b"],
        "bytes": [b"\x00", b"\xff"],
        "json": [{"x": 1}, [1, 2]],
    }[kind]
    session = make_client(app).websocket_connect("/ws")
    for value in values:
        if kind == "text":
            session.send_text(value)
        elif kind == "bytes":
            session.send_bytes(value)
        else:
            session.send_json(value)
        assert session.receive_text(timeout=5) == "ack"
    session.close()
    assert received == values
    assert ended == ["loop ended"]


def test_handler_sees_disconnect_with_code(make_client: Any) -> None:
    app = App()
    seen: list[tuple[int, str]] = []

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.receive_text()
        except WebSocketDisconnect as exc:
            seen.append((exc.code, exc.reason))
            raise

    session = make_client(app).websocket_connect("/ws")
    session.close(code=4002, reason="client leaving")
    assert seen == [(4002, "client leaving")]


@pytest.mark.parametrize("also", [None, ValueError("a real failure")])
def test_a_disconnect_seen_inside_a_task_group_is_not_an_error(
    make_client: Any, caplog: pytest.LogCaptureFixture, also: Exception | None
) -> None:
    """A handler that sends from one task while another receives sees the client leave
    as an ExceptionGroup of WebSocketDisconnect: that is a client leaving, not an error
    to log; a group that holds anything else still is one."""
    app = App()
    gone = anyio.Event()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()

        async def receive() -> None:
            try:
                await websocket.receive_text()  # raises WebSocketDisconnect(1001)
            finally:
                gone.set()

        async def fail() -> None:
            with anyio.CancelScope(shield=True):  # fails too, not cancelled
                await gone.wait()
            assert also is not None
            raise also

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(receive)
            if also is not None:
                tasks.start_soon(fail)

    caplog.set_level(logging.ERROR, logger="microasgi")
    session = make_client(app).websocket_connect("/ws")
    session.close(code=1001)
    if also is None:
        assert "Exception in WebSocket" not in caplog.text
    else:
        assert "a real failure" in caplog.text


# -- how connections end ------------------------------------------------------------------


def test_clean_return_closes_with_1000(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("only message")

    with make_client(app).websocket_connect("/ws") as session:
        assert session.receive_text(timeout=5) == "only message"
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text(timeout=5)
        assert info.value.code == 1000


def test_clean_return_without_accept_denies(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        return None

    with pytest.raises(WebSocketDenied) as info:
        make_client(app).websocket_connect("/ws")
    assert info.value.status_code == 403


def test_explicit_close_code_and_reason(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(code=4100, reason="done here")
        await websocket.close()  # closing twice does nothing

    with make_client(app).websocket_connect("/ws") as session:
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text(timeout=5)
        assert (info.value.code, info.value.reason) == (4100, "done here")


def test_handler_raising_after_accept_closes_1011(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("about to fail")
        raise RuntimeError("handler exploded")

    caplog.set_level(logging.ERROR, logger="microasgi")
    with make_client(app).websocket_connect("/ws") as session:
        assert session.receive_text(timeout=5) == "about to fail"
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text(timeout=5)
        assert info.value.code == 1011
        assert "handler exploded" not in info.value.reason
    assert "handler exploded" in caplog.text


def test_handler_raising_before_accept_is_denied(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        raise RuntimeError("failed before accept")

    caplog.set_level(logging.ERROR, logger="microasgi")
    with pytest.raises(WebSocketDenied):
        make_client(app).websocket_connect("/ws")
    assert "failed before accept" in caplog.text


def test_websocket_exception_after_accept_closes_with_its_code(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        raise WebSocketException(4403, "not allowed here")

    with make_client(app).websocket_connect("/ws") as session:
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text(timeout=5)
        assert (info.value.code, info.value.reason) == (4403, "not allowed here")


def test_websocket_exception_before_accept_denies(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        raise WebSocketException(1008, "policy")

    with pytest.raises(WebSocketDenied) as info:
        make_client(app).websocket_connect("/ws")
    assert info.value.status_code == 403


def test_http_exception_in_websocket_before_accept_denies(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        raise HTTPException(401)

    with pytest.raises(WebSocketDenied):
        make_client(app).websocket_connect("/ws")


def test_websocket_exception_handler(make_client: Any) -> None:
    app = App()

    class Kicked(Exception):
        pass

    @app.exception_handler(Kicked)
    async def on_kicked(websocket: WebSocket, exc: Kicked) -> None:
        await websocket.send_text("you were kicked")
        await websocket.close(code=4009)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        raise Kicked()

    with make_client(app).websocket_connect("/ws") as session:
        assert session.receive_text(timeout=5) == "you were kicked"
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text(timeout=5)
        assert info.value.code == 4009


# -- the state machine ---------------------------------------------------------------------


def test_send_before_accept_is_runtime_error(make_client: Any) -> None:
    app = App()
    errors: list[str] = []

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        for attempt in (websocket.send_text("x"), websocket.send_bytes(b"x")):
            try:
                await attempt
            except RuntimeError as exc:
                errors.append(str(exc))
        await websocket.accept()
        await websocket.send_text(str(len(errors)))

    with make_client(app).websocket_connect("/ws") as session:
        assert session.receive_text(timeout=5) == "2"
    assert all("accept" in e for e in errors)


def test_receive_before_accept_is_runtime_error(make_client: Any) -> None:
    app = App()
    errors: list[str] = []

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        for attempt in (websocket.receive_text(), websocket.receive_bytes()):
            try:
                await attempt
            except RuntimeError as exc:
                errors.append(str(exc))
        await websocket.accept()
        await websocket.send_text(str(len(errors)))

    with make_client(app).websocket_connect("/ws") as session:
        assert session.receive_text(timeout=5) == "2"


def test_send_after_close_is_runtime_error(make_client: Any) -> None:
    app = App()
    errors: list[str] = []

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()
        try:
            await websocket.send_text("too late")
        except RuntimeError as exc:
            errors.append(str(exc))

    with (
        make_client(app).websocket_connect("/ws") as session,
        pytest.raises(WebSocketDisconnect),
    ):
        session.receive_text(timeout=5)
    assert len(errors) == 1


def test_double_accept_is_runtime_error(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.accept()
        except RuntimeError:
            await websocket.send_text("second accept refused")

    with make_client(app).websocket_connect("/ws") as session:
        assert session.receive_text(timeout=5) == "second accept refused"


def test_receive_json_invalid_raises_value_error(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            try:
                data = await websocket.receive_json()
            except ValueError as exc:
                await websocket.send_json({"error": type(exc).__name__})
                continue
            except WebSocketDisconnect:
                return
            await websocket.send_json({"ok": data})

    with make_client(app).websocket_connect("/ws") as session:
        session.send_text("{not json")
        assert session.receive_json(timeout=5) == {"error": "InvalidJSON"}
        session.send_text(json.dumps({"fine": True}))
        assert session.receive_json(timeout=5) == {"ok": {"fine": True}}


def test_receive_json_binary_mode(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        data = await websocket.receive_json(mode="binary")
        await websocket.send_json({"echo": data}, mode="binary")

    with make_client(app).websocket_connect("/ws") as session:
        session.send_json({"a": 1}, mode="binary")
        assert session.receive_json(timeout=5, mode="binary") == {"echo": {"a": 1}}


def test_receive_text_on_binary_message_is_type_error(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.receive_text()
        except TypeError:
            await websocket.send_text("type error")

    with make_client(app).websocket_connect("/ws") as session:
        session.send_bytes(b"binary")
        assert session.receive_text(timeout=5) == "type error"


# -- routing -----------------------------------------------------------------------------------


def test_websocket_to_unknown_path_is_denied(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()

    with pytest.raises(WebSocketDenied) as info:
        make_client(app).websocket_connect("/nowhere")
    assert info.value.status_code == 403


def test_receive_after_client_disconnect_is_runtime_error(make_client: Any) -> None:
    app = App()
    outcome: list[str] = []

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.receive_text()
        except WebSocketDisconnect:
            outcome.append("disconnect")
        try:
            await websocket.receive_text()
        except RuntimeError:
            outcome.append("runtime error")

    session = make_client(app).websocket_connect("/ws")
    session.close()
    assert outcome == ["disconnect", "runtime error"]


# -- message size limit (close 1009) ----------------------------------------------------


def _size_app(**app_options: Any) -> tuple[App, list[int]]:
    app = App(**app_options)
    codes: list[int] = []

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            async for message in websocket.iter_bytes():
                await websocket.send_bytes(message)
        finally:
            codes.append(websocket.client_state.value)

    @app.websocket("/small", max_message_size=10)
    async def small(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect as exc:
            codes.append(exc.code)
            raise

    return app, codes


def test_message_over_the_app_limit_closes_1009(make_client: Any) -> None:
    app, _ = _size_app(max_message_size=1000)
    with make_client(app).websocket_connect("/ws") as session:
        session.send_bytes(b"x" * 1000)
        assert session.receive_bytes() == b"x" * 1000
        session.send_bytes(b"x" * 1001)
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_bytes()
        assert info.value.code == 1009


def test_route_limit_overrides_and_counts_utf8_bytes(make_client: Any) -> None:
    app, codes = _size_app()
    client = make_client(app)
    with client.websocket_connect("/small") as session:
        session.send_text("é" * 5)  # 10 bytes: at the limit
        assert session.receive_text() == "é" * 5
        session.send_text("é" * 6)  # 6 characters but 12 bytes
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text()
        assert info.value.code == 1009
    assert codes == [1009]  # the handler saw the disconnect too


def test_default_limit_is_one_mebibyte_and_none_means_no_limit(make_client: Any) -> None:
    app, _ = _size_app()
    with make_client(app).websocket_connect("/ws") as session:
        session.send_bytes(b"x" * (1024 * 1024))
        assert len(session.receive_bytes()) == 1024 * 1024
        session.send_bytes(b"x" * (1024 * 1024 + 1))
        with pytest.raises(WebSocketDisconnect):
            session.receive_bytes()
    app, _ = _size_app(max_message_size=None)
    with make_client(app).websocket_connect("/ws") as session:
        session.send_bytes(b"x" * (3 * 1024 * 1024))
        assert len(session.receive_bytes()) == 3 * 1024 * 1024


# -- denying the handshake --------------------------------------------------------------


def test_close_before_accept_denies_with_403_and_the_reason(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.close(4003, "members only")

    with pytest.raises(WebSocketDenied) as info:
        make_client(app).websocket_connect("/ws")
    assert info.value.status_code == 403
    assert info.value.body == b"members only"


def test_http_exception_before_accept_becomes_the_denial_response(make_client: Any) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        raise HTTPException(401, "log in first", headers={"WWW-Authenticate": "Bearer"})

    with pytest.raises(WebSocketDenied) as info:
        make_client(app).websocket_connect("/ws")
    assert info.value.status_code == 401
    assert info.value.headers["www-authenticate"] == "Bearer"
    assert info.value.body == b"log in first"


def test_unexpected_error_before_accept_is_a_500_denial(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        raise KeyError("boom")

    with caplog.at_level(logging.ERROR, logger="microasgi"), pytest.raises(WebSocketDenied) as info:
        make_client(app).websocket_connect("/ws")
    assert info.value.status_code == 500
    assert b"boom" not in info.value.body
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


def test_send_denial_response_after_accept_is_an_error(make_client: Any) -> None:
    from microasgi import PlainTextResponse

    app = App()
    errors: list[str] = []

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.send_denial_response(PlainTextResponse("no", 403))
        except RuntimeError as exc:
            errors.append(str(exc))
        await websocket.close()

    with make_client(app).websocket_connect("/ws") as session, pytest.raises(WebSocketDisconnect):
        session.receive_text()
    assert errors == ["a denial response can only be sent before accept()"]


@pytest.mark.anyio
async def test_without_the_extension_a_denial_is_a_close() -> None:
    """A server without websocket.http.response gets websocket.close (and answers 403)."""
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        raise HTTPException(401)

    sent: list[dict[str, Any]] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/ws",
        "root_path": "",
        "headers": [],
        "query_string": b"",
    }
    await app(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "Unauthorized"}]


def test_close_twice_is_a_no_op_and_receive_after_close_is_an_error(make_client: Any) -> None:
    app = App()
    outcome: list[str] = []

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(4000, "bye")
        await websocket.close()
        try:
            await websocket.receive_text()
        except RuntimeError as exc:
            outcome.append(str(exc))

    with make_client(app).websocket_connect("/ws") as session:
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text()
        assert (info.value.code, info.value.reason) == (4000, "bye")
    assert outcome == ["cannot receive: the application has closed the connection"]


def test_a_plain_def_websocket_endpoint_is_refused_at_registration() -> None:
    app = App()
    with pytest.raises(TypeError, match="must be an async def"):

        @app.websocket("/ws")
        def ws(websocket: WebSocket) -> None:
            pass


@pytest.mark.anyio
async def test_no_close_is_sent_after_the_client_has_gone() -> None:
    app = App()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        async for _ in websocket.iter_text():
            pass  # ends when the client disconnects; then the handler returns

    sent: list[dict[str, Any]] = []
    incoming = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
        {"type": "websocket.disconnect", "code": 1001},
    ]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "websocket", "path": "/ws", "root_path": "", "headers": []}, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept"]


def test_iteration_ends_quietly_when_a_message_is_too_big(make_client: Any) -> None:
    app = App(max_message_size=4)
    ended: list[str] = []

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text)
        ended.append("loop ended")

    with make_client(app).websocket_connect("/ws") as session:
        session.send_text("ok")
        assert session.receive_text() == "ok"
        session.send_text("too long")
        with pytest.raises(WebSocketDisconnect) as info:
            session.receive_text()
        assert info.value.code == 1009
    assert ended == ["loop ended"]


class AppendAcceptHeader:
    """A Starlette-style pure ASGI middleware that appends to the accept message's headers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def add_header(message: Any) -> None:
            if message["type"] == "websocket.accept":
                message["headers"].append((b"x-added", b"by-middleware"))
            await send(message)

        await self.app(scope, receive, add_header)


def test_accept_always_sends_a_headers_list_a_middleware_can_append_to(make_client: Any) -> None:
    from microasgi.middleware import Middleware

    app = App(middleware=[Middleware(AppendAcceptHeader)])

    @app.websocket("/plain")
    async def plain(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("ok")

    @app.websocket("/with-headers")
    async def with_headers(ws: WebSocket) -> None:
        await ws.accept(headers={"X-Own": "1"})
        await ws.send_text("ok")

    client = make_client(app)
    with client.websocket_connect("/plain") as session:
        assert session.receive_text() == "ok"
        assert session.extra_headers == [(b"x-added", b"by-middleware")]
    with client.websocket_connect("/with-headers") as session:
        assert session.receive_text() == "ok"
        assert session.extra_headers == [(b"x-own", b"1"), (b"x-added", b"by-middleware")]
