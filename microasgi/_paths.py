"""Path templates (`/users/{id:int}`) and the segment trie that matches them.

A lookup walks one trie node per path segment, so its cost depends on the
depth of the path, not on how many routes there are. At each node a static
child is tried first, then parameter children (and `{name:path}` tails) in
registration order, then mounts; a dead end backtracks to the next candidate.
Parameter branches are shared by convertor, whatever the parameters' names:
the values are collected by position and named by the route that matched.
"""

from __future__ import annotations

import re
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from microasgi.convertors import CONVERTORS, Convertor

__all__ = ["NoMatchFound", "PathTemplate", "SegmentTrie", "search"]

T = TypeVar("T")

_PARAM = re.compile(r"{([^{}:]*)(?::([^{}]*))?}")


class NoMatchFound(LookupError):
    """`url_path_for` found no route with that name and those parameters."""

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        names = ", ".join(sorted(params))
        super().__init__(f'No route named "{name}" with parameters [{names}]')


class _Pattern:
    """A segment mixing text and parameters, e.g. `{name}.{ext}`."""

    __slots__ = ("convertors", "key", "regex")

    def __init__(self, segment: str) -> None:
        parts: list[str] = []
        self.convertors: list[Convertor] = []
        end = 0
        for m in _PARAM.finditer(segment):
            convertor = CONVERTORS[m.group(2) or "str"]
            parts.append(re.escape(segment[end : m.start()]))
            parts.append(f"({convertor.regex})")
            self.convertors.append(convertor)
            end = m.end()
        parts.append(re.escape(segment[end:]))
        self.regex = re.compile("".join(parts))
        # Two segments that differ only in their parameters' names match alike.
        self.key = (self.regex.pattern, tuple(map(id, self.convertors)))

    def match(self, segment: str) -> list[Any] | None:
        """The converted values in order, or None."""
        m = self.regex.fullmatch(segment)
        if m is None:
            return None
        try:
            return [
                conv.convert(text) for conv, text in zip(self.convertors, m.groups(), strict=True)
            ]
        except ValueError:
            return None


class PathTemplate:
    """A parsed route path: its segments, parameters and how to fill it back in."""

    def __init__(self, path: str, *, prefix: bool = False) -> None:
        if not path.startswith("/") and not (prefix and path == ""):
            raise ValueError(f"route path {path!r} must start with '/'")
        self.path = path
        # Each segment is a str (static), a (name, Convertor) or a _Pattern.
        self.segments: list[str | tuple[str, Convertor] | _Pattern] = []
        self.param_convertors: dict[str, Convertor] = {}
        raw_segments = path[1:].split("/") if path else []
        for index, segment in enumerate(raw_segments):
            found = list(_PARAM.finditer(segment))
            for m in found:
                name, kind = m.group(1), m.group(2) or "str"
                if not name.isidentifier():
                    raise ValueError(f"invalid parameter name {name!r} in {path!r}")
                if kind not in CONVERTORS:
                    raise ValueError(f"unknown convertor {kind!r} in {path!r}")
                if name in self.param_convertors:
                    raise ValueError(f"duplicate parameter {name!r} in {path!r}")
                convertor = CONVERTORS[kind]
                if convertor.matches_rest and (
                    index != len(raw_segments) - 1
                    or len(found) != 1
                    or m.group(0) != segment
                    or prefix
                ):
                    raise ValueError(
                        f"a {{{name}:{kind}}} parameter must be the whole last segment "
                        "of a route path"
                    )
                self.param_convertors[name] = convertor
            if not found:
                if "{" in segment or "}" in segment:
                    raise ValueError(f"unbalanced braces in {path!r}")
                self.segments.append(segment)
            elif len(found) == 1 and found[0].group(0) == segment:
                self.segments.append((found[0].group(1), self.param_convertors[found[0].group(1)]))
            else:
                self.segments.append(_Pattern(segment))

    @property
    def is_static(self) -> bool:
        return not self.param_convertors

    @property
    def param_names(self) -> tuple[str, ...]:
        """The parameter names in the order they appear in the path."""
        return tuple(self.param_convertors)

    def format(self, params: dict[str, Any]) -> str:
        """Fill in the parameters, percent-encoded; `params` must name exactly
        this template's parameters."""

        def replace(m: re.Match[str]) -> str:
            convertor = self.param_convertors[m.group(1)]
            text = convertor.to_string(params[m.group(1)])
            return quote(text, safe="/" if convertor.matches_rest else "")

        return _PARAM.sub(replace, self.path)


_ONE, _MIXED, _REST = 0, 1, 2


class _Node(Generic[T]):
    __slots__ = ("by_method", "forks", "leaves", "mounts", "params", "static")

    def __init__(self) -> None:
        self.static: dict[str, _Node[T]] = {}
        # The first route ending here for each method: one dict lookup at the leaf.
        self.by_method: dict[str, T] = {}
        # Parameter children in registration order, as (kind, key, matcher, target):
        # _ONE: `{name:conv}`, matcher the convertor's bound convert, target a node;
        # _MIXED: a segment like `{name}.{ext}`, matcher a _Pattern, target a node;
        # _REST: `{name:path}`, matcher the bound convert, target the route itself.
        self.params: list[tuple[int, Any, Any, Any]] = []
        self.leaves: list[T] = []
        self.mounts: list[T] = []
        # Whether anything but a static child could match below this node; if not,
        # the search walks through it in a loop, with nothing to come back to.
        self.forks = False


class SegmentTrie(Generic[T]):
    """Maps path templates to values (routes), matched one segment at a time."""

    def __init__(self) -> None:
        self.root: _Node[T] = _Node()

    def insert(self, template: PathTemplate, value: T, *, prefix: bool = False) -> None:
        node = self.root
        segments = template.segments
        last = len(segments) - 1
        for index, segment in enumerate(segments):
            if isinstance(segment, str):
                node = node.static.setdefault(segment, _Node())
                continue
            node.forks = True
            if isinstance(segment, tuple) and segment[1].matches_rest and index == last:
                node.params.append((_REST, None, segment[1].convert, value))
                return
            key: Any
            matcher: Any
            if isinstance(segment, tuple):
                # Keyed by the convertor alone: `{id}` and `{slug}` share a branch.
                kind, key, matcher = _ONE, id(segment[1]), segment[1].convert
            else:
                kind, key, matcher = _MIXED, segment.key, segment
            for entry in node.params:
                if entry[0] == kind and entry[1] == key:
                    node = entry[3]
                    break
            else:
                child: _Node[T] = _Node()
                node.params.append((kind, key, matcher, child))
                node = child
        if prefix:
            node.mounts.append(value)
            node.forks = True
        else:
            node.leaves.append(value)
            for method in value.methods:  # type: ignore[attr-defined]
                node.by_method.setdefault(method, value)

    def match(
        self, segments: list[str], method: str, allowed: list[frozenset[str]]
    ) -> tuple[T, dict[str, Any], int] | None:
        """The first value whose template matches and whose `methods` include `method`.

        Values are routes (with a `methods` set and a `template`) or mounts
        (taking any method). Returns the value, its parameters and how many
        segments it consumed (fewer than all for a mount). The methods of
        routes whose path matched but whose methods did not are added to
        `allowed` (for a 405).
        """
        values: list[Any] = []
        found = search(self.root, segments, 0, len(segments), values, method, allowed)
        if found is None:
            return None
        value = found[0]
        names: tuple[str, ...] = value.template.param_names
        return value, dict(zip(names, values, strict=False)), found[1]


def search(
    node: _Node[Any],
    segments: list[str],
    i: int,
    n: int,
    values: list[Any],
    method: str,
    allowed: list[frozenset[str]],
) -> tuple[Any, int] | None:
    """Depth-first search from `node` for segments[i:] (i < n).

    Parameter values are pushed on `values` in path order; the caller names
    them after the route found (its template's `param_names`). The last
    segment's leaves are checked here rather than in one more call: one
    Python call per segment is most of what a lookup costs.
    """
    while not node.forks:
        child = node.static.get(segments[i])
        if child is None:
            return None
        i += 1
        if i == n:
            if (value := child.by_method.get(method)) is not None:
                return value, n
            allowed.extend(leaf.methods for leaf in child.leaves)
            return None
        node = child
    segment = segments[i]
    last = i + 1 == n
    child = node.static.get(segment)
    if child is not None:
        if last:
            if (value := child.by_method.get(method)) is not None:
                return value, n
            allowed.extend(leaf.methods for leaf in child.leaves)
        elif (found := search(child, segments, i + 1, n, values, method, allowed)) is not None:
            return found
    for kind, _, matcher, target in node.params:
        if kind == _ONE:
            if not segment:
                continue
            try:
                values.append(matcher(segment))
            except ValueError:
                continue
            if last:
                if (value := target.by_method.get(method)) is not None:
                    return value, n
                allowed.extend(leaf.methods for leaf in target.leaves)
            elif (found := search(target, segments, i + 1, n, values, method, allowed)) is not None:
                return found
            values.pop()
        elif kind == _MIXED:
            converted = matcher.match(segment)
            if converted is None:
                continue
            values.extend(converted)
            if last:
                if (value := target.by_method.get(method)) is not None:
                    return value, n
                allowed.extend(leaf.methods for leaf in target.leaves)
            elif (found := search(target, segments, i + 1, n, values, method, allowed)) is not None:
                return found
            del values[len(values) - len(converted) :]
        else:
            if method not in target.methods:
                allowed.append(target.methods)
                continue
            try:
                values.append(matcher("/".join(segments[i:])))
            except ValueError:
                continue
            return target, n
    if node.mounts:
        return node.mounts[0], i
    return None
