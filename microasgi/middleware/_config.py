"""Checking the options of the built-in middleware when they are built."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["string_list"]


def string_list(value: Iterable[str], option: str) -> list[str]:
    """`value` as a list of strings; one string alone is a TypeError (it would be
    read as a list of its characters)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{option} takes a list of strings, not one string: [{value!r}]")
    return list(value)
