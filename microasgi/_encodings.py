"""Accept-Encoding, read the one way CompressionMiddleware and StaticFiles both use."""

from __future__ import annotations

import re

__all__ = ["parse_accept_encoding"]

_OWS = " \t"  # optional whitespace (RFC 9110 section 5.6.3): not what str.strip() takes
_ALIASES = {"x-gzip": "gzip"}  # RFC 9110 section 8.4.1.3
# qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )   (RFC 9110 section 12.4.2)
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


def parse_accept_encoding(value: str) -> dict[str, float]:
    """Coding name (lower case) -> weight, from an Accept-Encoding value.

    Items that do not parse (a bad name or q-value) are left out; a coding
    listed twice, or with two weights, keeps its lowest, so ``q=0`` anywhere
    means never.
    Linear in the length of `value`.
    """
    weights: dict[str, float] = {}
    for item in value.split(","):
        name, _, params = item.partition(";")
        name = name.strip(_OWS).lower()
        if not name:
            continue
        weight = 1.0
        for param in params.split(";") if params else ():
            key, sep, raw = param.partition("=")
            if key.strip(_OWS).lower() != "q":
                continue
            raw = raw.strip(_OWS)
            if not sep or not _QVALUE.fullmatch(raw):
                weight = -1.0  # a q-value we cannot read: the item does not count
                break
            weight = min(weight, float(raw))  # given twice: the lowest, as for a coding
        if weight < 0:
            continue
        name = _ALIASES.get(name, name)
        weights[name] = min(weight, weights.get(name, weight))
    return weights
