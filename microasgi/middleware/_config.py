"""Checking the options of the built-in middleware when they are built."""

from __future__ import annotations

from collections.abc import Iterable

from microasgi.middleware._headers import TOKEN_CHARS

__all__ = ["string_list", "token_list"]


def string_list(value: Iterable[str], option: str) -> list[str]:
    """`value` as a list of strings; one string alone is a TypeError (it would be
    read as a list of its characters)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{option} takes a list of strings, not one string: [{value!r}]")
    return list(value)


def token_list(value: Iterable[str], option: str) -> list[str]:
    """`value` as a list of HTTP tokens (header names, methods), stripped, or ``*``.

    Anything else is a ValueError: these names go into response headers as they are.
    """
    tokens = [item.strip() for item in string_list(value, option)]
    for token in tokens:
        if token != "*" and not (token and TOKEN_CHARS.issuperset(token)):
            raise ValueError(f"{option}: {token!r} is not a header name or method (an HTTP token)")
    return tokens
