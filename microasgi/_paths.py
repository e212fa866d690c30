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
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

from microasgi.convertors import CONVERTORS, Convertor

__all__ = ["Match", "NoMatchFound", "PathTemplate", "Routable", "SegmentTrie", "below_root"]

_PARAM = re.compile(r"{([^{}:]*)(?::([^{}]*))?}")


def below_root(path: str, root: str) -> str | None:
    """`path` without the prefix `root`, cut only at a segment boundary: "" for `root`
    itself, None when `path` is not below it (``/apple`` is not below ``/app``)."""
    if path.startswith(root):
        rest = path[len(root) :]
        if not rest or rest[0] == "/":
            return rest
    return None


class NoMatchFound(LookupError):
    """`url_path_for` found no route with that name and those parameters."""

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        names = ", ".join(sorted(params))
        super().__init__(f'No route named "{name}" with parameters [{names}]')


class _Pattern:
    """A segment mixing text and parameters, e.g. `{name}.{ext}` or `v{major:int}`.

    Matched without a regular expression, in time linear in the segment: after
    the leading and trailing text, each separator between two parameters is
    looked for from the right, so an earlier parameter takes as much as it can
    (`archive.tar.gz` gives `archive.tar` and `gz`). If the values so cut do not
    all convert, the separators are looked for from the left instead (`12-my-post`
    against `{id:int}-{slug}` gives 12 and `my-post`). Nothing else is tried: a
    backtracking regex here was quadratic or worse in the segment's length.
    """

    __slots__ = ("convertors", "key", "literals")

    def __init__(self, segment: str) -> None:
        self.convertors: list[Convertor] = []
        self.literals: list[str] = []  # the text around the parameters: one more than they
        end = 0
        for m in _PARAM.finditer(segment):
            text = segment[end : m.start()]
            if self.convertors and not text:
                raise ValueError(f"parameters in segment {segment!r} must be separated by text")
            self.literals.append(text)
            self.convertors.append(CONVERTORS[m.group(2) or "str"])
            end = m.end()
        self.literals.append(segment[end:])
        # Two segments that differ only in their parameters' names match alike.
        self.key = (tuple(self.literals), tuple(map(id, self.convertors)))

    def match(self, segment: str) -> list[Any] | None:
        """The converted values in order, or None."""
        first, last = self.literals[0], self.literals[-1]
        if len(segment) < len(first) + len(last) or not (
            segment.startswith(first) and segment.endswith(last)
        ):
            return None
        middle = segment[len(first) : len(segment) - len(last)]
        texts = self._split(middle, from_right=True)
        values = self._convert(texts)
        if values is None and len(self.convertors) > 1:
            values = self._convert(self._split(middle, from_right=False))
        return values

    def _split(self, middle: str, *, from_right: bool) -> list[str] | None:
        separators = self.literals[1:-1]
        texts: list[str] = []
        # Every value must be non-empty: a separator is looked for only where it
        # leaves at least one character on each side.
        if from_right:
            for separator in reversed(separators):
                cut = middle.rfind(separator, 1, len(middle) - 1)
                if cut < 0:
                    return None
                texts.append(middle[cut + len(separator) :])
                middle = middle[:cut]
            texts.append(middle)
            texts.reverse()
        else:
            for separator in separators:
                cut = middle.find(separator, 1, len(middle) - 1)
                if cut < 0:
                    return None
                texts.append(middle[:cut])
                middle = middle[cut + len(separator) :]
            texts.append(middle)
        return texts

    def _convert(self, texts: list[str] | None) -> list[Any] | None:
        if texts is None or not all(texts):
            return None
        try:
            return [conv.convert(text) for conv, text in zip(self.convertors, texts, strict=True)]
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
_NO_VALUES: list[Any] = []  # the parameter values of a static path (never written to)


class Routable(Protocol):
    """What the trie stores: a route (HTTP methods, or "WEBSOCKET") or a mount."""

    @property
    def methods(self) -> frozenset[str]: ...


R = TypeVar("R", bound=Routable)

#: What `lookup` finds. A hit: the route, its parameter values in path order, and
#: the path prefix a mount matched ("" for a route, which matches the whole path).
#: A miss: None, the methods of the routes whose path matched (for a 405; empty
#: for a 404), and "".
Match = tuple[R, list[Any], str] | tuple[None, frozenset[str], str]


class _Node(Generic[R]):
    __slots__ = ("by_method", "forks", "leaves", "mounts", "params", "static")

    def __init__(self) -> None:
        self.static: dict[str, _Node[R]] = {}
        # The first route ending here for each method: one dict lookup at the leaf.
        self.by_method: dict[str, R] = {}
        # Parameter children in registration order, as (kind, key, matcher, target):
        # _ONE: `{name:conv}`, matcher the convertor's bound convert, target a node;
        # _MIXED: a segment like `{name}.{ext}`, matcher a _Pattern, target a node;
        # _REST: `{name:path}`, matcher the bound convert, target the route itself.
        self.params: list[tuple[int, Any, Any, Any]] = []
        self.leaves: list[R] = []
        self.mounts: list[R] = []
        # Whether anything but a static child could match below this node; if not,
        # the search walks through it in a loop, with nothing to come back to.
        self.forks = False


class SegmentTrie(Generic[R]):
    """Maps path templates to routes and mounts, matched one segment at a time."""

    def __init__(self) -> None:
        self.root: _Node[R] = _Node()
        # Fully static paths, answered by one dict lookup: path -> method -> the
        # answer for the first route (built once, returned as is).
        self._static: dict[str, dict[str, Match[R]]] = {}

    def insert(self, template: PathTemplate, value: R, *, prefix: bool = False) -> None:
        """Add a route (or, with `prefix`, a mount) at `template`."""
        if template.is_static and not prefix:
            by_method = self._static.setdefault(template.path, {})
            for method in value.methods:
                by_method.setdefault(method, (value, _NO_VALUES, ""))
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
                child: _Node[R] = _Node()
                node.params.append((kind, key, matcher, child))
                node = child
        if prefix:
            node.mounts.append(value)
            node.forks = True
        else:
            node.leaves.append(value)
            for method in value.methods:
                node.by_method.setdefault(method, value)

    def lookup(self, path: str, method: str) -> Match[R]:
        """The first route whose template matches `path` and whose methods include
        `method` (a mount takes any method); see `Match`."""
        static = self._static.get(path)
        if static is not None and (hit := static.get(method)) is not None:
            return hit
        if path[:1] != "/":
            return None, frozenset(), ""
        segments = path[1:].split("/")
        n = len(segments)
        values: list[Any] = []
        allowed: list[frozenset[str]] = []
        found = _search(self.root, segments, 0, n, values, method, allowed)
        if found is None:
            return None, frozenset().union(*allowed), ""
        value, consumed = found
        # Only a mount stops short of the last segment.
        return value, values, "/" + "/".join(segments[:consumed]) if 0 < consumed < n else ""


def _search(
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
    them after the route found (its template's `param_names`). Methods of
    routes whose path matched but whose methods did not go on `allowed`.
    """
    # PERF: one function, longer than we like: one Python call per segment is most
    # of what a lookup costs, so the last segment's leaves are checked inline (three
    # times, once per kind of child) rather than by one more call.
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
        elif found := _search(child, segments, i + 1, n, values, method, allowed):
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
            elif (
                found := _search(target, segments, i + 1, n, values, method, allowed)
            ) is not None:
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
            elif (
                found := _search(target, segments, i + 1, n, values, method, allowed)
            ) is not None:
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
