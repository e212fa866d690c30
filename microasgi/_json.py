"""JSON both ways, strictly RFC 8259: what requests, WebSockets and responses share.

Decoding refuses what JSON forbids and Python's `json` accepts: `NaN`,
`Infinity`, `-Infinity`, numbers too large for a float (`1e999`), lone
surrogates (`"\\ud800"`), text that is not UTF-8, and nesting too deep for
the decoder. Every refusal is an `InvalidJSON` (a `json.JSONDecodeError`, so
a `ValueError`), whatever the cause, so callers have one error to handle.
Encoding refuses NaN and the infinities too, and writes compact UTF-8.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["InvalidJSON", "decode_json", "encode_json"]


class InvalidJSON(json.JSONDecodeError):
    """The text is not JSON as RFC 8259 defines it.

    A `json.JSONDecodeError` (so a `ValueError`), so that code written for
    `json.loads` errors catches it too; `pos` is 0 where no position applies.
    """

    def __init__(self, message: str, document: str = "", position: int = 0) -> None:
        super().__init__(message, document, position)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:20]!r} is out of range")
    return number


_decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _check_surrogates(value: Any) -> None:
    """Raise InvalidJSON if a string anywhere in `value` holds a lone surrogate.

    Iterative (the decoder already bounded the depth), linear in the size.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidJSON("lone surrogate in a string", "") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def decode_json(data: str | bytes | bytearray | memoryview) -> Any:
    """Parse JSON text (bytes must be UTF-8); raises InvalidJSON for anything else."""
    text = ""
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        value, end = _decoder.raw_decode(text, _skip_whitespace(text, 0))
    except json.JSONDecodeError as exc:
        raise InvalidJSON(exc.msg, text, exc.pos) from None
    except RecursionError:
        raise InvalidJSON("JSON nested too deeply", text) from None
    except ValueError as exc:  # not UTF-8, NaN and the infinities, out-of-range numbers
        raise InvalidJSON(str(exc), text) from None
    if _skip_whitespace(text, end) != len(text):
        raise InvalidJSON("Extra data", text, end)
    if "\\u" in text:  # only an escape can make a lone surrogate in a str
        _check_surrogates(value)
    return value


_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's own (str.isspace would take U+00A0 too)


def _skip_whitespace(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)
    assert match is not None  # the pattern matches the empty string
    return match.end()


_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
try:
    from json.encoder import c_encode_basestring, c_make_encoder  # type: ignore[attr-defined]

    # The C encoder built once: JSONEncoder.encode builds a new one on every call,
    # which costs more than the encoding of a small object. Without the circular
    # check a self-containing object ends in RecursionError instead of ValueError.
    _c_encoder = c_make_encoder(
        None, _encoder.default, c_encode_basestring, None, ":", ",", False, False, False
    )

    def encode_json(content: Any) -> bytes:
        """Compact UTF-8 JSON; NaN and infinities are refused (ValueError)."""
        if isinstance(content, str):
            return _encoder.encode(content).encode("utf-8")
        return "".join(_c_encoder(content, 0)).encode("utf-8")

except ImportError:  # pragma: no cover - Python built without the C accelerator

    def encode_json(content: Any) -> bytes:
        """Compact UTF-8 JSON; NaN and infinities are refused (ValueError)."""
        return _encoder.encode(content).encode("utf-8")
