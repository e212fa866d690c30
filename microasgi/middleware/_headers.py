"""Raw ASGI header lists as the built-in middleware read and change them.

Request headers come from the server with lower-case names (ASGI); response
headers are compared in lower case too, in case an app sent them otherwise.
A middleware never edits a header list in place: the list may belong to a
`Response` that is sent again, so every change builds a new list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = [
    "OWS",
    "TOKEN_CHARS",
    "RawHeaders",
    "collect_headers",
    "get_header",
    "get_headers",
    "split_tokens",
    "with_headers",
    "with_vary",
]

RawHeaders = list[tuple[bytes, bytes]]

#: The characters of an HTTP token (RFC 9110 section 5.6.2): header and cookie names.
TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


#: Optional whitespace around header values and list items (RFC 9110 section 5.6.3):
#: a space or a tab. `str.strip()` would also take other characters (``\x85``,
#: ``\xa0``, ``\x1c``...) of a latin-1 decoded header for whitespace.
OWS = " \t"


def get_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header `name` (lower case), or None."""
    size = len(name)
    for key, value in headers:
        # ASGI servers should, but need not, send names in lower case.
        if key == name or (len(key) == size and key.lower() == name):
            return bytes(value)
    return None


def get_headers(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every value of header `name` (lower case), in order."""
    size = len(name)
    return [
        bytes(value)
        for key, value in headers
        if key == name or (len(key) == size and key.lower() == name)
    ]


def collect_headers(
    headers: Iterable[tuple[bytes, bytes]], names: frozenset[bytes]
) -> dict[bytes, list[bytes]]:
    """The values of each of `names` (lower case), in one pass over `headers`."""
    sizes = {len(name) for name in names}
    found: dict[bytes, list[bytes]] = {}
    for key, value in headers:
        if key in names or (len(key) in sizes and (key := key.lower()) in names):
            found.setdefault(key, []).append(bytes(value))
    return found


def split_tokens(value: bytes | str) -> list[str]:
    """The comma-separated items of a header value, without the optional whitespace
    around them, empty ones left out."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    return [item for part in text.split(",") if (item := part.strip(OWS))]


def with_headers(
    headers: Iterable[tuple[bytes, bytes]],
    replace: Mapping[bytes, bytes | None],
    *,
    append: Iterable[tuple[bytes, bytes]] = (),
) -> RawHeaders:
    """A new list: every header named in `replace` dropped, then re-added with its
    value there (None: dropped for good), then the `append` pairs."""
    result = [(k, v) for k, v in headers if k.lower() not in replace]
    result.extend((k, v) for k, v in replace.items() if v is not None)
    result.extend(append)
    return result


def with_vary(headers: RawHeaders, names: Iterable[str]) -> RawHeaders:
    """`headers` with each of `names` in Vary (merged, compared without case, never twice).

    Returns the same list when nothing is missing (or Vary is already ``*``).
    The first Vary field gets the new names, so other Vary fields stay as they are.
    """
    present: set[str] = set()
    first = -1
    for index, (key, value) in enumerate(headers):
        if key == b"vary" or key.lower() == b"vary":
            if first < 0:
                first = index
            present.update(token.lower() for token in split_tokens(value))
    if "*" in present:
        return headers
    missing = []
    for name in names:
        if name.lower() not in present:
            present.add(name.lower())  # and named twice in `names`: added once
            missing.append(name)
    if not missing:
        return headers
    added = ", ".join(missing).encode("latin-1")
    result = list(headers)
    if first < 0:
        result.append((b"vary", added))
    else:
        key, value = result[first]
        value = bytes(value).strip()
        result[first] = (key, value + b", " + added if value else added)
    return result
