"""URL, Headers, QueryParams, FormData, UploadFile and State."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, quote, urlencode

import anyio
import anyio.to_thread

__all__ = [
    "URL",
    "FormData",
    "Headers",
    "ImmutableMultiDict",
    "MutableHeaders",
    "QueryParams",
    "State",
    "UploadFile",
]

# A host is a registered name, an IPv4 address or a bracketed IPv6 literal, with an optional port.
_VALID_HOST = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


class URL:
    """A URL kept as its parts, so a hostile Host header cannot move the path or query."""

    __slots__ = ("fragment", "netloc", "path", "query", "scheme")

    def __init__(
        self,
        scheme: str = "",
        netloc: str = "",
        path: str = "",
        query: str = "",
        fragment: str = "",
    ) -> None:
        self.scheme = scheme
        self.netloc = netloc
        self.path = path
        self.query = query
        self.fragment = fragment

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> URL:
        """Build the request URL from an ASGI scope; the path is always the routed one."""
        scheme = scope.get("scheme") or "http"
        path = scope.get("path") or "/"
        query = scope.get("query_string", b"").decode("latin-1")
        netloc = ""
        for key, value in scope.get("headers", ()):
            if key == b"host":
                host = value.decode("latin-1")
                if _VALID_HOST.fullmatch(host):
                    netloc = host
                break
        if not netloc:
            server = scope.get("server")
            if server:
                host, port = server[0], server[1]
                default = {"http": 80, "ws": 80, "https": 443, "wss": 443}.get(scheme)
                if ":" in host and not host.startswith("["):
                    host = f"[{host}]"
                netloc = host if port in (None, default) else f"{host}:{port}"
            else:
                netloc = "localhost"
        return cls(scheme, netloc, _safe_path(quote_path(path)), query)

    @property
    def hostname(self) -> str:
        host = self.netloc.rsplit("@", 1)[-1]
        if host.startswith("["):
            return host[1 : host.find("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def port(self) -> int | None:
        host = self.netloc.rsplit("@", 1)[-1]
        _, sep, port = host.rpartition(":")
        if sep and port.isdigit() and not port.startswith("]"):
            return int(port)
        return None

    def replace(self, **parts: str) -> URL:
        """A copy with some of scheme, netloc, path, query, fragment replaced."""
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(parts)
        return URL(**values)

    def include_query_params(self, **params: Any) -> URL:
        """A copy with these query parameters set (replacing those of the same names)."""
        items = [
            (k, v) for k, v in parse_qsl(self.query, keep_blank_values=True) if k not in params
        ]
        items.extend((k, str(v)) for k, v in params.items())
        return self.replace(query=urlencode(items))

    def __str__(self) -> str:
        path = _safe_path(self.path) if self.path else ""
        text = f"{self.scheme}://{self.netloc}{path}" if self.scheme else path
        if self.query:
            text += "?" + self.query
        if self.fragment:
            text += "#" + self.fragment
        return text

    def __repr__(self) -> str:
        return f"URL({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return str(self) == str(other) if isinstance(other, (str, URL)) else NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))


def _safe_path(path: str) -> str:
    """`path` such that nothing before it can be taken for an authority.

    A request target that does not start with "/" (`@evil.com`, `http://x/y`)
    goes under "/", and a leading "//" becomes "/%2F": written after a host it
    would be userinfo or a second host, and alone a protocol-relative URL.
    """
    if path[:1] != "/":
        path = "/" + path
    if path[:2] == "//":
        path = "/%2F" + path[2:]
    return path


def quote_path(path: str) -> str:
    """Percent-encode a decoded path for a URL ("/" and sub-delimiters stay)."""
    return quote(path, safe="/:@!$&'()*+,;=-._~")


class ImmutableMultiDict(Mapping[str, Any]):
    """A mapping that keeps every value of a repeated key; `d[key]` is the last one.

    Built from another multi-dict (every value kept), a mapping, or (key, value)
    pairs, plus keyword arguments.
    """

    __slots__ = ("_dict", "_list")

    def __init__(
        self,
        items: ImmutableMultiDict | Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
        /,
        **kwargs: Any,
    ) -> None:
        if isinstance(items, ImmutableMultiDict):
            pairs = list(items._list)
        elif isinstance(items, Mapping):
            pairs = list(items.items())
        else:
            pairs = list(items)
        pairs.extend(kwargs.items())
        self._list: list[tuple[str, Any]] = pairs
        self._dict: dict[str, Any] = dict(pairs)

    def getlist(self, key: str) -> list[Any]:
        """Every value of `key`, in order; [] if none."""
        return [v for k, v in self._list if k == key]

    def multi_items(self) -> list[tuple[str, Any]]:
        """Every (key, value) pair, in order."""
        return list(self._list)

    def __getitem__(self, key: str) -> Any:
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ImmutableMultiDict):
            return sorted(self._list) == sorted(other._list)
        return NotImplemented

    def __hash__(self) -> int:  # pragma: no cover - mutable content, identity hash
        return id(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._list!r})"


class QueryParams(ImmutableMultiDict):
    """Query string parameters. Bytes that are not UTF-8 become U+FFFD, never an error."""

    __slots__ = ()

    def __init__(
        self,
        query: str
        | bytes
        | ImmutableMultiDict
        | Mapping[str, Any]
        | Iterable[tuple[str, Any]] = "",
        /,
        **kwargs: Any,
    ) -> None:
        if isinstance(query, bytes):
            query = query.decode("utf-8", "replace")
        if isinstance(query, str):
            query = parse_qsl(query, keep_blank_values=True, errors="replace")
        super().__init__(query, **kwargs)

    def __str__(self) -> str:
        return urlencode(self._list)


class Headers(Mapping[str, str]):
    """Case-insensitive, multi-valued, read-only view of raw ASGI headers.

    Names and values are decoded as latin-1 (RFC 9110), so any byte is accepted.
    The index is built on first use, not when the object is created.
    """

    __slots__ = ("_index", "raw")

    def __init__(
        self,
        headers: Mapping[str, str] | None = None,
        *,
        raw: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if raw is None:
            raw = [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in (headers or {}).items()
            ]
        self.raw = raw
        self._index: dict[str, list[str]] | None = None

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> Headers:
        """The headers of an ASGI scope (a copy of its list)."""
        return cls(raw=list(scope.get("headers", ())))

    def _build(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for key, value in self.raw:
            index.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        self._index = index
        return index

    def getlist(self, key: str) -> list[str]:
        """Every value of `key`, in order (case-insensitive); [] if none."""
        index = self._index if self._index is not None else self._build()
        return list(index.get(key.lower(), ()))

    def __getitem__(self, key: str) -> str:
        index = self._index if self._index is not None else self._build()
        return index[key.lower()][0]

    def get(self, key: str, default: Any = None) -> Any:
        """The first value of `key` (case-insensitive), or `default`."""
        index = self._index if self._index is not None else self._build()
        values = index.get(key.lower())
        return values[0] if values else default

    def __contains__(self, key: object) -> bool:
        index = self._index if self._index is not None else self._build()
        return isinstance(key, str) and key.lower() in index

    # Iteration goes over every raw header, repeated names included, in order
    # (as in Starlette); `get`, `[]` and `getlist` look names up.

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.raw)

    def keys(self) -> list[str]:  # type: ignore[override]
        """Every header name, once per header, as sent (servers send lowercase)."""
        return [k.decode("latin-1") for k, _ in self.raw]

    def values(self) -> list[str]:  # type: ignore[override]
        """Every header value, in order."""
        return [v.decode("latin-1") for _, v in self.raw]

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        """Every (name, value) pair, in order."""
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw]

    def multi_items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair, in order."""
        return self.items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return sorted(self.raw) == sorted(other.raw)
        return NotImplemented

    def __hash__(self) -> int:  # pragma: no cover
        return id(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.multi_items()!r})"


class MutableHeaders(Headers):
    """Headers that write through to a raw header list (a response's)."""

    __slots__ = ()

    def __setitem__(self, key: str, value: str) -> None:
        """Replace every value of `key` with `value`."""
        name = key.lower().encode("latin-1")
        encoded = value.encode("latin-1")
        # PERF: _check_header inlined (this runs once per header a middleware sets).
        if b"\r" in encoded or b"\n" in encoded or b"\r" in name or b"\n" in name:
            raise ValueError("header names and values cannot contain CR or LF")
        raw = self.raw
        for existing, _ in raw:
            if existing == name:
                raw[:] = [(k, v) for k, v in raw if k != name]
                break
        raw.append((name, encoded))
        self._index = None

    def __delitem__(self, key: str) -> None:
        name = key.lower().encode("latin-1")
        self.raw[:] = [(k, v) for k, v in self.raw if k != name]
        self._index = None

    def append(self, key: str, value: str) -> None:
        """Add a value, keeping the ones already there (e.g. set-cookie)."""
        name = key.lower().encode("latin-1")
        _check_header(name, value)
        self.raw.append((name, value.encode("latin-1")))
        self._index = None

    def setdefault(self, key: str, value: str) -> str:
        """The first value of `key`, setting it to `value` first if there is none."""
        if key in self:
            return self[key]
        self[key] = value
        return value

    def update(self, other: Mapping[str, str]) -> None:
        """Set each header of `other` (replacing the values there were)."""
        for key, value in other.items():
            self[key] = value

    def add_vary_header(self, vary: str) -> None:
        """Add a field name to Vary, keeping every value already there."""
        values = [
            v.strip() for value in self.getlist("vary") for v in value.split(",") if v.strip()
        ]
        if vary.lower() not in (v.lower() for v in values):
            values.append(vary)
        self["vary"] = ", ".join(values)


def _check_header(name: bytes, value: str) -> None:
    # A CR or LF in a header would let a value smuggle in headers of its own.
    if b"\r" in name or b"\n" in name or "\r" in value or "\n" in value:
        raise ValueError("header names and values cannot contain CR or LF")


class State:
    """Attribute access over a dict: request state over lifespan state."""

    __slots__ = ("_state",)

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_state", {} if state is None else state)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._state[name]
        except KeyError:
            raise AttributeError(f"'State' object has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._state[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self._state[name]
        except KeyError:
            raise AttributeError(name) from None

    def __contains__(self, name: str) -> bool:
        return name in self._state

    def __repr__(self) -> str:
        return f"State({self._state!r})"


class UploadFile:
    """An uploaded file, spooled to disk past a size; blocking I/O runs in a worker thread."""

    def __init__(
        self,
        file: BinaryIO,
        *,
        filename: str | None = None,
        size: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        self.file = file
        self.filename = filename
        self.size = size
        self.headers = headers or Headers()

    @property
    def content_type(self) -> str | None:
        value: str | None = self.headers.get("content-type")
        return value

    async def read(self, size: int = -1) -> bytes:
        """Read up to `size` bytes (all with -1), in a worker thread."""
        return await anyio.to_thread.run_sync(self.file.read, size)

    async def seek(self, offset: int) -> None:
        """Move to `offset` in the file, in a worker thread."""
        await anyio.to_thread.run_sync(self.file.seek, offset)

    async def write(self, data: bytes) -> None:
        """Write `data` (and count it in `size`), in a worker thread."""
        await anyio.to_thread.run_sync(self.file.write, data)
        if self.size is not None:
            self.size += len(data)

    async def close(self) -> None:
        """Close the file (a spooled temporary file goes away), in a worker thread."""
        await anyio.to_thread.run_sync(self.file.close)

    def __repr__(self) -> str:
        return (
            f"UploadFile(filename={self.filename!r}, size={self.size!r}, headers={self.headers!r})"
        )


class FormData(ImmutableMultiDict):
    """Parsed form fields: `str` values, and `UploadFile` values for files."""

    __slots__ = ()

    async def close(self) -> None:
        """Close every uploaded file (their temporary files go away).

        Shielded from cancellation: this is the cleanup of a request that may be
        being cancelled (a shutdown, a timeout), and a file it skipped would stay
        open, with its disk space, until the garbage collector found it.
        """
        with anyio.CancelScope(shield=True):
            for _, value in self._list:
                if isinstance(value, UploadFile):
                    await value.close()
