"""The compiled route lookup against a plain walk of the same trie (the reference).

`reference_lookup` is the loop microasgi used before lookups were compiled to
Python source: it reads the trie as data. Every test here builds a trie,
looks paths up both ways and wants the same answer: the same route object,
the same parameters (values of the same types), the same mount prefix, and
for a miss the same allowed methods.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microasgi import App
from microasgi._paths import PathTemplate
from microasgi._trie import _MIXED, _ONE, SegmentTrie, _Node
from microasgi.convertors import Convertor, register_convertor
from microasgi.testclient import TestClient


class EvenConvertor(Convertor):
    """A convertor of the user's own: even numbers only (the generated code calls it)."""

    def convert(self, value: str) -> int:
        if value.isascii() and value.isdigit() and int(value) % 2 == 0:
            return int(value)
        raise ValueError(value)


register_convertor("trie_even", EvenConvertor())


class Target:
    """A route or a mount, as the trie sees it."""

    def __init__(self, path: str, methods: frozenset[str], mount: bool = False) -> None:
        self.path = path
        self.methods = methods
        self.mount = mount
        self.template = PathTemplate(path, prefix=mount)
        self.param_names = self.template.param_names

    def __repr__(self) -> str:
        kind = "Mount" if self.mount else "Route"
        return f"{kind}({self.path!r}, {sorted(self.methods)})"


# -- the reference: the trie walked as data ----------------------------------------------


def reference_lookup(trie: SegmentTrie[Any], path: str, method: str) -> Any:
    static = trie._static.get(path)
    if static is not None and (hit := static.get(method)) is not None:
        return hit
    if path[:1] != "/":
        return None, frozenset(), ""
    segments = path[1:].split("/")
    n = len(segments)
    values: list[Any] = []
    allowed: list[frozenset[str]] = []
    found = _search(trie.root, segments, 0, n, values, method, allowed)
    if found is None:
        return None, frozenset().union(*allowed), ""
    value, consumed = found
    params = dict(zip(value.param_names, values, strict=True))
    return value, params, "/" + "/".join(segments[:consumed]) if 0 < consumed < n else ""


def _first(node: _Node[Any], method: str) -> Any:
    """The first route registered at `node` for `method`."""
    return next((leaf for leaf in node.leaves if method in leaf.methods), None)


def _search(
    node: _Node[Any],
    segments: list[str],
    i: int,
    n: int,
    values: list[Any],
    method: str,
    allowed: list[frozenset[str]],
) -> tuple[Any, int] | None:
    segment = segments[i]
    last = i + 1 == n
    child = node.static.get(segment)
    if child is not None:
        if last:
            if (value := _first(child, method)) is not None:
                return value, n
            allowed.extend(leaf.methods for leaf in child.leaves)
        elif found := _search(child, segments, i + 1, n, values, method, allowed):
            return found
    for kind, _, matcher, target in node.params:
        if kind == _ONE:
            if not segment:
                continue
            try:
                values.append(matcher.convert(segment))
            except ValueError:
                continue
        elif kind == _MIXED:
            converted = matcher.match(segment)
            if converted is None:
                continue
            values.extend(converted)
        else:  # a {name:path} tail
            if method not in target.methods:
                allowed.append(target.methods)
                continue
            try:
                values.append(matcher.convert("/".join(segments[i:])))
            except ValueError:
                continue
            return target, n
        taken = 1 if kind == _ONE else len(converted)
        if last:
            if (value := _first(target, method)) is not None:
                return value, n
            allowed.extend(leaf.methods for leaf in target.leaves)
        elif (found := _search(target, segments, i + 1, n, values, method, allowed)) is not None:
            return found
        del values[len(values) - taken :]
    if node.mounts:
        return node.mounts[0], i
    return None


# -- building tries ----------------------------------------------------------------------

# Static segments: more than the compiled code tests one by one (so some nodes
# use a dict of functions), one that is a number, one full of quotes.
STATIC = ["a", "b", "c", "d", "e", "ab", "1", "x'\"\\y", ""]
PARAMS = ["{p}", "{p:int}", "{p:float}", "{p:trie_even}", "{p}.{q}", "v{p:int}", "{p:uuid}"]
PATH_SEGMENTS = [*STATIC, "2", "12", "2.5", "x.y", "a.b.c", "v3", "vx", "-1", "٣"]
PATH_SEGMENTS.append("12345678-1234-1234-1234-123456789abc")
METHODS = ["GET", "POST", "WEBSOCKET"]


@st.composite
def templates(draw: st.DrawFn, mount: bool) -> str:
    count = draw(st.integers(0 if mount else 1, 4))
    segments = []
    for index in range(count):
        segment = draw(st.sampled_from(STATIC + PARAMS))
        # Parameter names must differ within a template: number them by position.
        segments.append(segment.replace("{p", f"{{p{index}").replace("{q", f"{{q{index}"))
    if not mount and draw(st.booleans()) and draw(st.booleans()):
        segments.append(f"{{rest{count}:path}}")
    return "/" + "/".join(segments) if segments else ""


@st.composite
def tries(draw: st.DrawFn) -> tuple[SegmentTrie[Target], list[Target]]:
    trie: SegmentTrie[Target] = SegmentTrie()
    trie.max_inline_depth = draw(st.sampled_from([1, 2, 12]))
    targets = []
    for _ in range(draw(st.integers(1, 12))):
        mount = draw(st.integers(0, 4)) == 0
        path = draw(templates(mount))
        if not mount and not path:
            path = "/"
        methods = frozenset(draw(st.sets(st.sampled_from(METHODS), min_size=1)))
        target = Target(path, methods, mount)
        trie.insert(target.template, target, prefix=mount)
        targets.append(target)
    return trie, targets


paths = st.one_of(
    st.lists(st.sampled_from(PATH_SEGMENTS), max_size=6).map(lambda s: "/" + "/".join(s)),
    st.sampled_from(["", "a", "//", "/a//b"]),
)


def same(found: Any, expected: Any) -> bool:
    """The same answer: the route itself, parameters equal with their types, the prefix."""
    if found[0] is not expected[0] or found[2] != expected[2]:
        return False
    if found[0] is None:
        return bool(found[1] == expected[1])
    return {k: (type(v), v) for k, v in found[1].items()} == {
        k: (type(v), v) for k, v in expected[1].items()
    }


@st.composite
def near(draw: st.DrawFn, template: str) -> str:
    """A path shaped like `template`: its static segments mostly kept, each
    parameter replaced by a segment that may or may not convert."""
    segments = template[1:].split("/") if template else []
    for index, segment in enumerate(segments):
        if "{" in segment or draw(st.integers(0, 5)) == 0:
            segments[index] = draw(st.sampled_from(PATH_SEGMENTS))
    if draw(st.integers(0, 3)) == 0:
        segments += draw(st.lists(st.sampled_from(PATH_SEGMENTS), max_size=2))
    return "/" + "/".join(segments)


@settings(max_examples=500, deadline=None)
@given(tries(), st.data(), st.sampled_from(METHODS))
def test_compiled_lookup_matches_the_reference(
    built: tuple[SegmentTrie[Target], list[Target]], data: st.DataObject, method: str
) -> None:
    trie, targets = built
    requested = data.draw(st.lists(paths, max_size=4))
    for target in targets:
        requested.append(data.draw(near(target.path)))
    for path in requested:
        expected = reference_lookup(trie, path, method)
        found = trie.lookup(path, method)
        assert same(found, expected), (path, method, found, expected, trie.source())


def test_int_parameters_take_ascii_digits_only_as_intconvertor_does() -> None:
    trie: SegmentTrie[Target] = SegmentTrie()
    route = Target("/n/{x:int}", frozenset({"GET"}))
    trie.insert(route.template, route)
    assert trie.lookup("/n/0", "GET") == (route, {"x": 0}, "")
    assert "int(s1)" in trie.source()  # the int convertor is written in, not called
    for segment, value in [("0", 0), ("007", 7), ("12345678901234567890", 12345678901234567890)]:
        assert trie.lookup(f"/n/{segment}", "GET") == (route, {"x": value}, "")
    for segment in ["", "-1", "+1", "1_000", " 1", "1 ", "٣", "1.0", "0x1"]:
        assert trie.lookup(f"/n/{segment}", "GET")[0] is None, segment
    # More digits than int() converts (sys.get_int_max_str_digits): not a match, as
    # IntConvertor says, so the next candidate is tried.
    assert 0 < sys.get_int_max_str_digits() < 5000  # Python's default is 4,300
    too_long = "1" * 5000
    assert trie.lookup(f"/n/{too_long}", "GET") == (None, frozenset(), "")
    fallback = Target("/n/{name}", frozenset({"GET"}))
    trie.insert(fallback.template, fallback)
    assert trie.lookup(f"/n/{too_long}", "GET") == (fallback, {"name": too_long}, "")


def test_route_paths_reach_the_source_only_as_string_literals() -> None:
    trie: SegmentTrie[Target] = SegmentTrie()
    hostile = "x'); import os; os._exit(1); ('"
    route = Target(f"/{hostile}/{{a}}", frozenset({"GET"}))
    trie.insert(route.template, route)
    assert trie.lookup(f"/{hostile}/1", "GET") == (route, {"a": "1"}, "")
    assert trie.lookup("/x/1", "GET")[0] is None
    assert repr(hostile) in trie.source()


def test_routes_added_after_a_lookup_are_found() -> None:
    trie: SegmentTrie[Target] = SegmentTrie()
    first = Target("/a/{x:int}", frozenset({"GET"}))
    trie.insert(first.template, first)
    assert trie.lookup("/a/b", "GET")[0] is None
    second = Target("/a/{x}", frozenset({"GET"}))
    trie.insert(second.template, second)
    assert trie.lookup("/a/b", "GET") == (second, {"x": "b"}, "")
    assert trie.lookup("/a/1", "GET") == (first, {"x": 1}, "")


@pytest.mark.parametrize("max_inline_depth", [1, 12])
def test_deep_and_wide_tries_compile(max_inline_depth: int) -> None:
    """Nesting goes on in functions of their own before Python's parser would
    refuse it; wide nodes go through a dict."""
    trie: SegmentTrie[Target] = SegmentTrie()
    trie.max_inline_depth = max_inline_depth
    deep = Target("/" + "/".join(f"{{p{i}:int}}" for i in range(200)), frozenset({"GET"}))
    trie.insert(deep.template, deep)
    wide = [Target(f"/w{i}/{{x}}", frozenset({"GET"})) for i in range(1000)]
    for route in wide:
        trie.insert(route.template, route)
    expected = {f"p{i}": i for i in range(200)}
    assert trie.lookup("/" + "/".join(map(str, range(200))), "GET") == (deep, expected, "")
    assert trie.lookup("/w999/z", "GET") == (wide[999], {"x": "z"}, "")
    assert trie.lookup("/w1000/z", "GET") == (None, frozenset(), "")


def test_routes_as_deep_as_the_longest_path_compile_and_match() -> None:
    """The generator writes one function after another rather than recursing per
    trie level (a route 4,096 segments deep was a RecursionError), and the code
    it writes nests one call per `max_inline_depth` levels, so a path of
    DEFAULT_MAX_PATH_LENGTH characters is well inside the recursion limit."""
    from microasgi.routing import DEFAULT_MAX_PATH_LENGTH

    depth = DEFAULT_MAX_PATH_LENGTH // 2
    trie: SegmentTrie[Target] = SegmentTrie()
    static = Target("/a" * (depth - 1) + "/{x}", frozenset({"GET"}))
    params = Target("/b" + "".join(f"/{{p{i}}}" for i in range(depth - 1)), frozenset({"GET"}))
    short = Target("/u/{x:int}", frozenset({"GET"}))
    for route in (static, params, short):
        trie.insert(route.template, route)
    assert depth > sys.getrecursionlimit()
    path = "/a" * (depth - 1) + "/z"
    assert len(path) == DEFAULT_MAX_PATH_LENGTH
    assert trie.lookup(path, "GET") == (static, {"x": "z"}, "")
    found = trie.lookup("/b" + "/q" * (depth - 1), "GET")
    assert found[0] is params and len(found[1]) == depth - 1
    assert trie.lookup("/u/5", "GET") == (short, {"x": 5}, "")


def test_an_app_serves_through_the_compiled_lookup() -> None:
    app = App()

    @app.get("/items/{item_id:int}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    with TestClient(app) as client:
        assert client.get("/items/42").json() == {"item_id": 42}
        assert client.get("/items/x").status_code == 404
        assert client.post("/items/42").status_code == 405
    assert "int(s1)" in app.router._trie.source()


def test_the_lifespan_startup_compiles_the_lookup_of_every_router() -> None:
    """Compiling takes about 90 ms per 1,000 routes: the startup pays it, not the
    first request. Routes added later are compiled at the next lookup."""
    inner = App()

    @inner.get("/leaf/{x:int}")
    async def leaf(x: int) -> str:
        return str(x)

    app = App()
    app.mount("/inner", inner)
    tries = [app.router._trie, inner.router._trie]
    assert all(trie._find is None for trie in tries)
    with TestClient(app) as client:
        assert all(trie._find is not None for trie in tries)

        @app.get("/late")
        async def late() -> str:
            return "late"

        assert app.router._trie._find is None
        assert client.get("/late").text == "late"
        assert client.get("/inner/leaf/3").text == "3"


def test_a_route_added_by_another_thread_during_a_compile_is_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trie is locked while it is compiled: a route added meanwhile waits,
    then marks the compiled lookup stale, and the next lookup finds it."""
    from microasgi import _trie

    trie: SegmentTrie[Target] = SegmentTrie()
    first = Target("/a/{x:int}", frozenset({"GET"}))
    second = Target("/b/{x:int}", frozenset({"GET"}))
    trie.insert(first.template, first)
    adding: list[threading.Thread] = []
    compile_source = _trie._Compiler.compile

    def compile_while_adding(self: Any, root: Any) -> str:
        source = compile_source(self, root)
        if not adding:  # between writing the code and storing the lookup
            adding.append(threading.Thread(target=trie.insert, args=(second.template, second)))
            adding[0].start()
            adding[0].join(0.2)  # without the lock, the route is added right now
        return source

    monkeypatch.setattr(_trie._Compiler, "compile", compile_while_adding)
    assert trie.lookup("/a/1", "GET") == (first, {"x": 1}, "")
    adding[0].join(5)
    assert trie.lookup("/b/1", "GET") == (second, {"x": 1}, "")
