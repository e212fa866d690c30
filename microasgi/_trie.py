"""The segment trie that finds the route for a path, compiled to Python code.

A lookup walks one trie node per path segment, so its cost depends on the
depth of the path, not on how many routes there are. At each node a static
child is tried first, then parameter children (and `{name:path}` tails) in
registration order, then mounts; a dead end backtracks to the next candidate.
Parameter branches are shared by convertor, whatever the parameters' names:
the values are collected by position and named by the route that matched.

The trie is data; what walks it is Python source generated from it when it
is first looked up after a change, and compiled once. A walk written as a
loop over the nodes spends most of its time interpreting the data (which
kind of child, which convertor, is this the last segment); the generated
code has those answers written in, so `/users/{id:int}` becomes two string
tests, one `int()` and the `{"id": ...}` dict the route gets. Route paths
never reach the source as code: static segments appear as `repr()` string
literals, everything else (routes, convertors, method sets) as names bound
in the code's namespace.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from microasgi._paths import PathTemplate
from microasgi.convertors import Convertor, IntConvertor

__all__ = ["Match", "Routable", "SegmentTrie"]


class Routable(Protocol):
    """What the trie stores: a route (HTTP methods, or "WEBSOCKET") or a mount."""

    @property
    def methods(self) -> frozenset[str]: ...

    @property
    def param_names(self) -> tuple[str, ...]: ...


R = TypeVar("R", bound=Routable)

#: What `lookup` finds. A hit: the route, its parameters by name (a new dict,
#: except an empty one, which is shared: copy it before writing), and the path
#: prefix a mount matched ("" for a route, which matches the whole path). A miss:
#: None, the methods of the routes whose path matched (for a 405; empty for a
#: 404), and "".
Match = tuple[R, dict[str, Any], str] | tuple[None, frozenset[str], str]

_ONE, _MIXED, _REST = 0, 1, 2
_NO_PARAMS: dict[str, Any] = {}  # the parameters of a static path (never written to)
#: What the generated code does with a `{name:conv}` segment, by the convertor's `convert`.
_IDENTITY, _DIGITS, _CALL = 0, 1, 2
#: Static children are tested one by one up to this many; more go through a dict.
_INLINE_STATIC = 4


class _Node(Generic[R]):
    __slots__ = ("leaves", "mounts", "params", "static")

    def __init__(self) -> None:
        self.static: dict[str, _Node[R]] = {}
        # Parameter children in registration order, as (kind, key, matcher, target):
        # _ONE: `{name:conv}`, matcher the Convertor, target a node;
        # _MIXED: a segment like `{name}.{ext}`, matcher a _Pattern, target a node;
        # _REST: `{name:path}`, matcher the Convertor, target the route itself.
        self.params: list[tuple[int, Any, Any, Any]] = []
        self.leaves: list[R] = []
        self.mounts: list[R] = []


class SegmentTrie(Generic[R]):
    """Maps path templates to routes and mounts, matched one segment at a time."""

    #: How many trie levels one generated function covers before it goes on in a
    #: function of its own (Python's parser refuses source indented 100 levels
    #: deep, and each level indents two or three times).
    max_inline_depth = 12

    def __init__(self) -> None:
        self.root: _Node[R] = _Node()
        # Fully static paths, answered by one dict lookup: path -> method -> the
        # answer for the first route (built once, returned as is).
        self._static: dict[str, dict[str, Match[R]]] = {}
        # The compiled lookup, None when routes changed since.
        self._find: Callable[[str, str], Match[R]] | None = None
        #: `lookup(path, method)`: the first route whose template matches `path` and
        #: whose methods include `method` (a mount takes any method); see `Match`.
        #: The compiled function itself (no method in between), or until the trie
        #: is compiled, a method that compiles it first.
        self.lookup: Callable[[str, str], Match[R]] = self._compile_and_lookup
        # Held while the trie changes and while it is compiled, so that a route
        # added from another thread during a compile is not lost (lookups take
        # no lock: they use whichever compiled function is there).
        self._lock = threading.Lock()

    def insert(self, template: PathTemplate, value: R, *, prefix: bool = False) -> None:
        """Add a route (or, with `prefix`, a mount) at `template`."""
        with self._lock:
            self._insert(template, value, prefix)
            self._find = None  # compiled again at the next lookup
            self.lookup = self._compile_and_lookup

    def _insert(self, template: PathTemplate, value: R, prefix: bool) -> None:
        if template.is_static and not prefix:
            by_method = self._static.setdefault(template.path, {})
            for method in value.methods:
                by_method.setdefault(method, (value, _NO_PARAMS, ""))
        node = self.root
        segments = template.segments
        last = len(segments) - 1
        for index, segment in enumerate(segments):
            if isinstance(segment, str):
                node = node.static.setdefault(segment, _Node())
                continue
            if isinstance(segment, tuple) and segment[1].matches_rest and index == last:
                node.params.append((_REST, None, segment[1], value))
                return
            key: Any
            matcher: Any
            if isinstance(segment, tuple):
                # Keyed by the convertor alone: `{id}` and `{slug}` share a branch.
                kind, key, matcher = _ONE, id(segment[1]), segment[1]
            else:
                kind, key, matcher = _MIXED, segment.key, segment
            for entry in node.params:
                if entry[0] == kind and entry[1] == key:
                    node = entry[3]
                    break
            else:
                child: _Node[R] = _Node()
                node.params.append((kind, key, matcher, child))
                node = child
        if prefix:
            node.mounts.append(value)
        else:
            node.leaves.append(value)

    def _compile_and_lookup(self, path: str, method: str) -> Match[R]:
        return self._compile()(path, method)

    def prepare(self) -> None:
        """Compile the lookup now if the routes changed since (a lookup would)."""
        if self._find is None:
            self._compile()

    def source(self) -> str:
        """The Python source of the lookup, as generated for the routes now in
        the trie (for reading; what runs is compiled from the same)."""
        with self._lock:
            return _Compiler(self.max_inline_depth, self._static).compile(self.root)

    def _compile(self) -> Callable[[str, str], Match[R]]:
        with self._lock:
            find = self._find
            if find is None:  # (another thread may have compiled it meanwhile)
                compiler = _Compiler(self.max_inline_depth, self._static)
                self._find = self.lookup = find = compiler.load(compiler.compile(self.root))
            return find


def _convert_kind(convertor: Convertor) -> int:
    """How generated code converts a segment for `convertor` (see _IDENTITY...)."""
    convert = getattr(convertor.convert, "__func__", None)
    if convert is Convertor.convert:  # the segment as it is: str, path
        return _IDENTITY
    if convert is IntConvertor.convert:
        return _DIGITS
    return _CALL


class _Compiler:
    """Writes the lookup for a trie as Python source.

    `lookup(path, method)` answers fully static paths from the trie's dict
    (one lookup on the whole path), and otherwise splits the path at "/" into
    `segs`: the path's segment `i` is `segs[i + 1]` (`segs[0]` is the "" before
    the leading slash) and `n` is one more than the number of segments. Code
    that misses appends to `allowed` the methods of the routes whose path
    matched (for a 405). Nodes deeper than `max_inline_depth` levels get
    functions of their own, `below_N(segs, n, method, allowed, vals)`, which
    return a Match or None.

    The code for a node runs with the node's segment index known, so every
    index is a constant; a parameter value is a local (`v3` for segment 3)
    until a route is found, and a failed branch falls through to the next
    candidate, which is how backtracking comes out of plain `if`s.

    Names in the generated code: the arguments `path`, `method`, and `segs`,
    `n`, `allowed` (above) and `vals` (the values found before a function of
    its own took over); locals `s3` (segment 3), `v3` (its value, or a mixed
    segment's list of values), `f` and `r` (a function and its result),
    `static` and `hit` (the static paths' answer); globals `_0`, `_1`...
    (every object the code refers to) and `below_1`, `below_2`... (its
    functions).
    """

    def __init__(self, max_inline_depth: int, static: dict[str, Any]) -> None:
        self.max_inline_depth = max_inline_depth
        self.names: dict[str, Any] = {}  # the generated code's globals
        self.static = self._name(static)
        self.functions: list[str] = []
        # Functions to write: (name, node, segment index, number of values so far).
        self.pending: list[tuple[str, _Node[Any], int, int]] = []
        self.promised = 0
        # Dicts from a segment to the function for it. They are in the namespace
        # (so in the source as names) before the functions exist: they hold the
        # functions' names until `load` swaps in the functions themselves.
        self.tables: list[dict[str, Any]] = []

    def compile(self, root: _Node[Any]) -> str:
        miss = self._name((None, frozenset(), ""))
        body = [
            f"static = {self.static}.get(path)",
            "if static is not None:",
            "    hit = static.get(method)",
            "    if hit is not None:",
            "        return hit",
            'if path[:1] != "/":',
            f"    return {miss}",
            'segs = path.split("/")',
            "n = len(segs)",
            "allowed = []",
            *self._node(root, 0, [], 1),
            f"return None, {self._name(frozenset())}.union(*allowed), ''",
        ]
        self.functions.append(_function("lookup(path, method)", body))
        # The functions `_out_of_line` promised, written one after the other (each
        # may promise more): the generator recurses no deeper than one function's
        # nesting, however deep the routes go.
        while self.pending:
            name, child, i, count = self.pending.pop()
            body = self._below(child, i, [f"vals[{k}]" for k in range(count)], 1)
            self.functions.append(_function(f"{name}(segs, n, method, allowed, vals)", body))
        return "\n".join(self.functions)

    def load(self, source: str) -> Callable[[str, str], Any]:
        """The `lookup` function of `source` (what `compile` wrote)."""
        namespace = dict(self.names)
        exec(compile(source, "<microasgi route trie>", "exec"), namespace)
        for table in self.tables:
            for text, name in table.items():
                table[text] = namespace[name]
        lookup: Callable[[str, str], Any] = namespace["lookup"]
        return lookup

    def _name(self, value: Any) -> str:
        name = f"_{len(self.names)}"
        self.names[name] = value
        return name

    def _node(self, node: _Node[Any], i: int, values: list[str], depth: int) -> list[str]:
        """Lines trying segment `i` against what grows from `node` (there is one).

        `values` are the expressions of the parameter values found so far.
        """
        segment = f"s{i}"
        lines = []
        if node.static or any(entry[0] != _REST for entry in node.params):
            lines.append(f"{segment} = segs[{i + 1}]")
        children = list(node.static.items())
        if len(children) > _INLINE_STATIC:
            # Too many to test one by one: a dict from segment to a function each.
            table = {text: self._out_of_line(child, i, len(values)) for text, child in children}
            self.tables.append(table)
            lines += [
                f"f = {self._name(table)}.get({segment})",
                "if f is not None:",
                f"    r = f(segs, n, method, allowed, {_tuple(values)})",
                "    if r is not None:",
                "        return r",
            ]
            children = []
        for index, (text, child) in enumerate(children):
            lines.append(f"{'if' if index == 0 else 'elif'} {segment} == {text!r}:")
            lines += _indent(self._below(child, i, values, depth + 1))
        for kind, _, matcher, target in node.params:
            value = f"v{i}"
            if kind == _REST:
                methods = self._name(target.methods)
                lines.append(f"if method in {methods}:")
                rest = f'"/".join(segs[{i + 1}:])'
                if _convert_kind(matcher) == _IDENTITY:
                    lines += _indent([self._hit(target, [*values, rest])])
                else:
                    convert = f"{value} = {self._name(matcher.convert)}({rest})"
                    hit = self._hit(target, [*values, value])
                    lines += _indent(_converted(convert) + _indent([hit]))
                lines += ["else:", f"    allowed.append({methods})"]
            elif kind == _MIXED:
                lines += [
                    f"{value} = {self._name(matcher)}.match({segment})",
                    f"if {value} is not None:",
                ]
                found = [f"{value}[{k}]" for k in range(len(matcher.convertors))]
                lines += _indent(self._below(target, i, values + found, depth + 1))
            else:
                how = _convert_kind(matcher)
                if how == _IDENTITY:
                    lines.append(f"if {segment}:")
                    lines += _indent(self._below(target, i, [*values, segment], depth + 1))
                elif how == _DIGITS:
                    # PERF: IntConvertor.convert written in (ASCII digits only, then
                    # int(), which refuses over 4,300 digits with a ValueError, as the
                    # convertor does); test_int_parameters_take_ascii_digits_only...
                    lines.append(f"if {segment}.isdigit() and {segment}.isascii():")
                    below = self._below(target, i, [*values, value], depth + 1)
                    lines += _indent(_converted(f"{value} = int({segment})") + _indent(below))
                else:
                    lines.append(f"if {segment}:")
                    convert = f"{value} = {self._name(matcher.convert)}({segment})"
                    below = self._below(target, i, [*values, value], depth + 1)
                    lines += _indent(_converted(convert) + _indent(below))
        if node.mounts:
            prefix = f'"/".join(segs[:{i + 1}])' if i else "''"
            lines.append(self._hit(node.mounts[0], values, prefix))
        return lines

    def _below(self, child: _Node[Any], i: int, values: list[str], depth: int) -> list[str]:
        """Lines for when segment `i` led to `child`: the routes ending there if it
        was the last segment, else what grows below it."""
        if depth > self.max_inline_depth:
            name = self._out_of_line(child, i, len(values))
            call = f"{name}(segs, n, method, allowed, {_tuple(values)})"
            return [f"r = {call}", "if r is not None:", "    return r"]
        lines: list[str] = []
        if child.leaves:
            # The first route registered for the method wins.
            lines.append(f"if n == {i + 2}:")
            methods: frozenset[str] = frozenset()
            for leaf in child.leaves:
                if not leaf.methods <= methods:
                    lines.append(f"    if method in {self._name(leaf.methods)}:")
                    lines.append(f"        {self._hit(leaf, values)}")
                    methods |= leaf.methods
            lines.append(f"    allowed.append({self._name(methods)})")
        if child.static or child.params or child.mounts:
            lines.append(f"{'elif' if lines else 'if'} n > {i + 2}:")
            lines += _indent(self._node(child, i + 1, values, depth))
        return lines or ["pass"]  # (every node leads somewhere; valid source regardless)

    def _hit(self, target: Any, values: list[str], prefix: str = "''") -> str:
        """The line returning `target`, its parameters named, and `prefix`."""
        pairs = zip(target.param_names, values, strict=True)
        params = "{" + ", ".join(f"{name!r}: {value}" for name, value in pairs) + "}"
        return f"return {self._name(target)}, {params}, {prefix}"

    def _out_of_line(self, child: _Node[Any], i: int, count: int) -> str:
        """The name of a function of its own for `child` reached by segment `i`,
        taking the `count` values found so far as the tuple `vals` (`compile`
        writes it)."""
        self.promised += 1
        name = f"below_{self.promised}"
        self.pending.append((name, child, i, count))
        return name


def _converted(assignment: str) -> list[str]:
    """A convertor call that moves on to the next candidate on ValueError; the
    lines that use its value go after, indented (they run only when it worked)."""
    return ["try:", f"    {assignment}", "except ValueError:", "    pass", "else:"]


def _function(signature: str, body: list[str]) -> str:
    return "\n".join([f"def {signature}:", *_indent(body), ""])  # (None at the end)


def _indent(lines: list[str]) -> list[str]:
    return ["    " + line for line in lines]


def _tuple(values: list[str]) -> str:
    return f"({', '.join(values)},)" if values else "()"
