"""Path templates (`/users/{id:int}`): parsing, matching mixed segments, filling in.

The segment trie that finds a route for a path is in `_trie`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from microasgi.convertors import CONVERTORS, Convertor

__all__ = ["NoMatchFound", "PathTemplate", "below_root"]

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
