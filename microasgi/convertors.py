"""Path parameter convertors: `{name:int}` and friends, plus registration of your own."""

from __future__ import annotations

import math
import re
import uuid
from decimal import Decimal
from typing import Any, ClassVar

__all__ = [
    "Convertor",
    "FloatConvertor",
    "IntConvertor",
    "PathConvertor",
    "StringConvertor",
    "UUIDConvertor",
    "register_convertor",
]


class Convertor:
    """Turns one path segment into a value and back.

    `convert` gets a non-empty segment (never containing "/") and returns the
    value, or raises ValueError when the segment does not match, so the router
    tries the next candidate. `to_string` is used by `url_path_for`.
    """

    matches_rest: ClassVar[bool] = False

    def convert(self, value: str) -> Any:
        """The value of a non-empty segment; ValueError if it does not match."""
        return value

    def to_string(self, value: Any) -> str:
        """The segment for `value`, percent-encoded by `url_path_for` afterwards."""
        text = str(value)
        if not text or "/" in text:
            raise ValueError(f"{value!r} is not a valid path segment")
        return text


class StringConvertor(Convertor):
    """One non-empty segment (the default)."""


class PathConvertor(Convertor):
    """The rest of the path, "/" included; only allowed as the last segment."""

    matches_rest = True

    def to_string(self, value: Any) -> str:
        return str(value)


class IntConvertor(Convertor):
    """ASCII digits only: no sign, no spaces, no underscores, no Unicode digits."""

    def convert(self, value: str) -> int:
        if value.isascii() and value.isdigit():
            return int(value)
        raise ValueError(value)

    def to_string(self, value: Any) -> str:
        number = int(value)
        if number < 0:
            raise ValueError("negative integers are not supported in paths")
        return str(number)


class FloatConvertor(Convertor):
    """Digits with an optional fraction: `3`, `3.25`; no exponents, signs, inf or nan."""

    def convert(self, value: str) -> float:
        whole, _, fraction = value.partition(".")
        if (
            value.isascii()
            and whole.isdigit()
            and (fraction.isdigit() or (not fraction and not value.endswith(".")))
        ):
            number = float(value)
            if math.isfinite(number):  # 400 digits would make inf
                return number
        raise ValueError(value)

    def to_string(self, value: Any) -> str:
        number = float(value)
        if number < 0 or not math.isfinite(number):
            raise ValueError("only finite non-negative floats are supported in paths")
        # Positional notation (no exponent), the only form `convert` accepts.
        return format(Decimal(repr(number)), "f")


class UUIDConvertor(Convertor):
    """A UUID in its canonical 8-4-4-4-12 hex form (any case)."""

    def convert(self, value: str) -> uuid.UUID:
        # uuid.UUID() alone also takes braces, "urn:uuid:", "+", "_" and spaces.
        if not _UUID.fullmatch(value):
            raise ValueError(value)
        return uuid.UUID(value)

    def to_string(self, value: Any) -> str:
        return str(value)


_UUID = re.compile("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

CONVERTORS: dict[str, Convertor] = {
    "str": StringConvertor(),
    "path": PathConvertor(),
    "int": IntConvertor(),
    "float": FloatConvertor(),
    "uuid": UUIDConvertor(),
}


def register_convertor(name: str, convertor: Convertor) -> None:
    """Make `{param:name}` available in every route registered afterwards."""
    if not name.isidentifier():
        raise ValueError(f"convertor name {name!r} must be an identifier")
    CONVERTORS[name] = convertor
