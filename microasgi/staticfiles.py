"""StaticFiles: an ASGI app serving a directory, and resource directories of packages.

Mount it like any app (``app.mount("/static", StaticFiles(directory="static"), name="static")``)
or serve it alone. See docs/files.md.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import re
import stat
from collections.abc import Callable, Sequence
from typing import Literal

import anyio.to_thread

from microasgi._context import context_of
from microasgi._encodings import parse_accept_encoding
from microasgi._lifespan import serve_empty_lifespan
from microasgi._paths import below_root
from microasgi.datastructures import _check_header, quote_path
from microasgi.exceptions import HTTPException
from microasgi.responses import FileResponse, PlainTextResponse, RedirectResponse
from microasgi.responses._file import CHUNK_SIZE, PRECONDITION_HEADERS, offers_pathsend
from microasgi.responses._fileio import NotAFileError, OpenedFile, open_file
from microasgi.responses._filetypes import guess_media_type
from microasgi.responses._ranges import etag_for
from microasgi.types import Receive, Scope, Send

__all__ = ["IMMUTABLE", "StaticFiles"]

logger = logging.getLogger("microasgi")

#: The Cache-Control of files matched by `immutable`: cached for a year, never revalidated.
IMMUTABLE = "public, max-age=31536000, immutable"

FollowSymlinks = bool | Literal["files", "directories"]

#: Precompressed siblings, in our order of preference when the client likes them equally.
_SIDECARS = (("br", ".br"), ("zstd", ".zst"), ("gzip", ".gz"))
_DRIVE = re.compile(r"[A-Za-z]:")
#: lstat/stat errors that mean "nothing to serve here"
_MISSING = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP})
_DENIED = frozenset({errno.EACCES, errno.EPERM})
_WANTS_CONDITIONS = frozenset(PRECONDITION_HEADERS)


def safe_parts(route_path: str) -> tuple[list[str], bool] | None:
    """The segments of a request path below the mount, and whether it ends with ``/``.

    None for anything that could name a file outside the directory, or that no
    browser sends: ``.`` or ``..`` segments, empty segments, NUL, backslashes,
    drive letters (``C:``), a path that does not start with ``/``. The server
    has already percent-decoded the path; it is not decoded again.
    """
    if not route_path.startswith("/") or "\x00" in route_path or "\\" in route_path:
        return None
    parts = route_path[1:].split("/")
    trailing = parts[-1] == ""
    if trailing:
        parts.pop()
    for part in parts:
        if part in ("", ".", "..") or _DRIVE.match(part) or (os.name == "nt" and ":" in part):
            return None
    return parts, trailing


def _package_directory(package: str | tuple[str, str]) -> str:
    name, subdirectory = package if isinstance(package, tuple) else (package, "statics")
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise RuntimeError(f"Package {name!r} could not be found")
    locations = list(spec.submodule_search_locations or ())
    if not locations and spec.origin:
        locations = [os.path.dirname(spec.origin)]
    for location in locations:
        candidate = os.path.join(location, subdirectory)
        if os.path.isdir(candidate):
            return candidate
    raise RuntimeError(
        f"Directory {subdirectory!r} not found in package {name!r} "
        "(packages must be installed as directories, not zip files)"
    )


class _Replaced(OSError):
    """The file opened is not the one the lookup checked (it was swapped in between)."""


def _fd_path(fd: int) -> str | None:
    """The path the kernel has for an open file (Linux), or None where it cannot say."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _checker(found: _Found, root_prefix: str) -> Callable[[int, os.stat_result], None]:
    """A check that the file opened for `found` is the one the lookup allowed.

    The lookup and the open are two steps: someone who can write in the
    directory could swap the file, or a directory on its path, for a symlink
    in between. Where the kernel says which file was opened (Linux), its path
    must be the path the lookup allowed or lie inside the directory; elsewhere
    the file must be the very one the lookup saw (device and inode).
    """
    allowed, seen = found.path, found.stat
    assert seen is not None

    def check(fd: int, st: os.stat_result) -> None:
        real = _fd_path(fd)
        if real is not None:
            real = real.removesuffix(" (deleted)")  # unlinked since it was opened
            if real == allowed or (real + os.sep).startswith(root_prefix):
                return
        elif (st.st_dev, st.st_ino) == (seen.st_dev, seen.st_ino):
            return
        raise _Replaced(f"{allowed} was replaced while it was looked up (opened {real!r})")

    return check


class _Found:
    """What a lookup found: a file to send (maybe already open), a redirect, or nothing."""

    __slots__ = ("encoding", "name", "opened", "path", "redirect", "stat", "status", "varies")

    def __init__(self) -> None:
        self.path = ""
        self.name = ""  # the name whose suffix gives the media type
        self.stat: os.stat_result | None = None
        self.opened: OpenedFile | None = None
        self.status = 200
        self.encoding: str | None = None
        self.varies = False
        self.redirect = False


class StaticFiles:
    """Serves the files of `directory` and of each package's resource directory.

    - GET and HEAD, with FileResponse's validators, preconditions and ranges;
      other methods: 405 with ``Allow: GET, HEAD``. Missing files: 404.
    - `packages`: names, or ``(name, subdirectory)`` pairs (the subdirectory
      defaults to ``statics``), searched after `directory`, in order.
    - `html=True`: a directory serves its ``index.html`` (a path without the
      trailing slash is first redirected, 307, to the one with it), and a miss
      serves the top-level ``404.html`` with status 404 if there is one.
    - Never outside its directories: ``..``, empty or ``.`` segments, NUL,
      backslashes and drive letters answer 404, and resolved paths are
      compared, not string prefixes. A symlink whose target stays inside is
      followed; one whose target leaves is refused (404) unless
      `follow_symlinks` allows it: ``"files"`` for symlinked files (as some
      package managers install them), ``"directories"`` for symlinked
      directories, True for both.
    - `cache_control`: the Cache-Control of every file (None: no header).
      `immutable`: a regular expression searched in the path below the mount
      (or a function of it): matching files, fingerprinted assets, get
      ``public, max-age=31536000, immutable`` instead.
    - `precompressed=True`: ``name.br``, ``name.zst`` or ``name.gz`` next to
      ``name`` is sent instead (with Content-Encoding, its own ETag) when the
      client's Accept-Encoding prefers it; a sibling older than the file is
      ignored as stale. Responses for a file with siblings carry
      ``Vary: Accept-Encoding``.
    - Errors: inside a microasgi App the 404 and 405 go to the app's error
      handling (your 404 handler applies); served alone, they are plain text.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        packages: Sequence[str | tuple[str, str]] | None = None,
        html: bool = False,
        check_dir: bool = True,
        follow_symlinks: FollowSymlinks = False,
        follow_symlink: bool | None = None,
        cache_control: str | None = None,
        immutable: str | re.Pattern[str] | Callable[[str], bool] | None = None,
        precompressed: bool = True,
        chunk_size: int = CHUNK_SIZE,
        max_ranges: int | None = None,
    ) -> None:
        if directory is None and not packages:
            raise ValueError("StaticFiles needs a directory, packages, or both")
        if follow_symlink is not None:  # Starlette's name for it
            follow_symlinks = follow_symlinks or follow_symlink
        if follow_symlinks not in (False, True, "files", "directories"):
            raise ValueError("follow_symlinks must be False, True, 'files' or 'directories'")
        self.directory = directory
        self.packages = list(packages or ())
        self.html = html
        self.follow_symlinks = follow_symlinks
        self._follow_files = follow_symlinks in (True, "files")
        self._follow_dirs = follow_symlinks in (True, "directories")
        if cache_control is not None:
            _check_header(b"cache-control", cache_control)
            cache_control.encode("latin-1")  # a header value; UnicodeEncodeError otherwise
        self.cache_control = cache_control
        if isinstance(immutable, (str, re.Pattern)):
            pattern = re.compile(immutable)
            self._immutable: Callable[[str], bool] | None = lambda path: bool(pattern.search(path))
        else:
            self._immutable = immutable
        self.precompressed = precompressed
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        if max_ranges is not None and max_ranges < 1:
            raise ValueError("max_ranges must be at least 1")
        self.chunk_size = chunk_size
        self.max_ranges = max_ranges
        sources = [os.fspath(directory)] if directory is not None else []
        sources += [_package_directory(package) for package in self.packages]
        self._sources = sources
        if check_dir and directory is not None and not os.path.isdir(directory):
            raise RuntimeError(f"Directory '{os.fspath(directory)}' does not exist")
        self._roots: list[tuple[str, str]] | None = None
        if check_dir:
            self._roots = self._resolve_roots()

    def _resolve_roots(self) -> list[tuple[str, str]]:
        """Each directory's real path, and that path with a separator (for containment)."""
        roots = []
        for source in self._sources:
            if not os.path.isdir(source):
                raise RuntimeError(f"StaticFiles directory '{source}' does not exist")
            real = os.path.realpath(source)
            roots.append((real, real if real.endswith(os.sep) else real + os.sep))
        return roots

    # -- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000, "reason": ""})
        elif kind == "lifespan":  # served alone: nothing to start or stop
            await serve_empty_lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _error(scope, receive, send, 405, {"Allow": "GET, HEAD"})
            return
        # The path below the mount point (root_path); "" for the mount point itself.
        path: str = scope["path"]
        root = scope.get("root_path") or ""
        below = below_root(path, root) if root else None
        route_path = path if below is None else below
        # The mount point itself is its directory without the trailing slash.
        split = ([], False) if route_path == "" else safe_parts(route_path)
        if split is None:
            await _error(scope, receive, send, 404)
            return
        parts, trailing = split
        accept_encoding: str | None = None
        conditional = False
        for name, value in scope.get("headers", ()):
            if name == b"accept-encoding":
                text = value.decode("latin-1")
                accept_encoding = text if accept_encoding is None else f"{accept_encoding},{text}"
            elif name in _WANTS_CONDITIONS:
                conditional = True
        plain_get = method == "GET" and not conditional
        pathsend = plain_get and offers_pathsend(scope)
        prefetch = -1 if method == "HEAD" or pathsend else (self.chunk_size if plain_get else 0)
        codings = parse_accept_encoding(accept_encoding) if accept_encoding else None
        if self._roots is None:
            self._roots = await anyio.to_thread.run_sync(self._resolve_roots)
        found = await anyio.to_thread.run_sync(self._find, parts, trailing, codings, prefetch)
        if found.redirect:
            await self._redirect(scope, receive, send)
            return
        if found.stat is None:
            await _error(scope, receive, send, 404)
            return
        try:
            response = self._response(found, route_path)
        except BaseException:
            if found.opened is not None:  # e.g. an `immutable` function that raised
                found.opened.close()
            raise
        response._opened = found.opened
        await response(scope, receive, send)

    def _response(self, found: _Found, route_path: str) -> FileResponse:
        """The FileResponse for what the lookup found, with the caching headers."""
        assert found.stat is not None
        headers: dict[str, str] = {}
        cache_control = self.cache_control
        if self._immutable is not None and found.status == 200 and self._immutable(route_path[1:]):
            cache_control = IMMUTABLE
        if cache_control is not None:
            headers["cache-control"] = cache_control
        if found.varies:
            headers["vary"] = "Accept-Encoding"
        if found.encoding is not None:
            # Each encoding is a representation of its own, with its own entity tag.
            st = found.stat
            headers["content-encoding"] = found.encoding
            headers["etag"] = etag_for(st.st_mtime_ns, st.st_size, "-" + found.encoding)
        return FileResponse(
            found.path,
            media_type=guess_media_type(found.name),
            headers=headers,
            status_code=found.status,
            stat_result=found.stat,
            chunk_size=self.chunk_size,
            max_ranges=self.max_ranges,
        )

    async def _redirect(self, scope: Scope, receive: Receive, send: Send) -> None:
        """307 from a directory path to the same path with a slash, query string kept."""
        path: str = scope["path"]
        root = scope.get("root_path") or ""
        if root and not path.startswith(root):  # a server that leaves root_path out of path
            path = root + path
        location = quote_path(path) + "/"
        if location.startswith("//"):  # would be read as another host
            await _error(scope, receive, send, 404)
            return
        query = scope.get("query_string", b"")
        if query:
            location += "?" + query.decode("latin-1")
        await RedirectResponse(location, status_code=307)(scope, receive, send)

    # -- lookup (in a worker thread) ------------------------------------------------------

    def _find(
        self,
        parts: list[str],
        trailing: bool,
        codings: dict[str, float] | None,
        prefetch: int,
    ) -> _Found:
        """Find what to send for `parts`; open it too unless `prefetch` is -1."""
        found = _Found()
        assert self._roots is not None
        for root, root_prefix in self._roots:
            hit = self._walk(root, root_prefix, parts)
            if hit is None:
                continue
            parent, path, st = hit
            if stat.S_ISDIR(st.st_mode):
                if not self.html:
                    break
                index = self._step(root_prefix, path, "index.html")
                if index is None or not stat.S_ISREG(index[1].st_mode):
                    break
                if not trailing:
                    found.redirect = True
                    return found
                parent, (path, st) = path, index
                name = "index.html"
            elif stat.S_ISREG(st.st_mode) and not trailing:
                name = parts[-1]
            else:
                break
            found.name = name
            if self.precompressed:
                self._pick_sidecar(found, root_prefix, parent, name, st, codings)
            if found.stat is None:
                found.path, found.stat = path, st
            if self._open(found, prefetch, root_prefix):
                return found
            break
        found = _Found()
        if self.html:
            for root, root_prefix in self._roots:
                page = self._step(root_prefix, root, "404.html")
                if page is not None and stat.S_ISREG(page[1].st_mode):
                    found.path, found.stat = page
                    found.name = "404.html"
                    found.status = 404
                    if self._open(found, prefetch, root_prefix):
                        return found
                    break
        return _Found()

    def _open(self, found: _Found, prefetch: int, root_prefix: str) -> bool:
        """Open the file found (unless only its stat is needed); False if it is gone."""
        if prefetch < 0:
            return True
        try:
            found.opened = open_file(found.path, prefetch, _checker(found, root_prefix))
        except (FileNotFoundError, NotADirectoryError, NotAFileError):
            return False  # replaced or removed since the lookup
        except _Replaced as exc:
            logger.warning("Static file not served: %s", exc)
            return False
        except PermissionError:
            logger.warning("Static file %s cannot be read (permission denied)", found.path)
            return False
        except OSError as exc:
            if exc.errno in _MISSING:  # e.g. swapped for a link loop since the lookup
                return False
            raise
        found.stat = found.opened.stat
        return True

    def _pick_sidecar(
        self,
        found: _Found,
        root_prefix: str,
        parent: str,
        name: str,
        st: os.stat_result,
        codings: dict[str, float] | None,
    ) -> None:
        """Choose a precompressed sibling for the client, if there is a fresh one it takes."""
        best_q = 0.0
        identity_q = codings.get("identity", codings.get("*", 0.0)) if codings else 0.0
        for coding, suffix in _SIDECARS:
            sidecar = self._step(root_prefix, parent, name + suffix)
            if sidecar is None or not stat.S_ISREG(sidecar[1].st_mode):
                continue
            if sidecar[1].st_mtime < st.st_mtime:
                continue  # older than the file: stale, not a version of it
            found.varies = True
            if not codings:
                continue
            q = codings.get(coding, codings.get("*", 0.0))
            if q > best_q and q >= identity_q:
                best_q = q
                found.path, found.stat = sidecar
                found.encoding = coding

    def _walk(
        self, root: str, root_prefix: str, parts: list[str]
    ) -> tuple[str, str, os.stat_result] | None:
        """(real parent directory, real path, stat) for `parts` below `root`, or None."""
        if not parts:
            try:
                return root, root, os.stat(root)
            except OSError:
                return None
        current = root
        for name in parts[:-1]:
            step = self._step(root_prefix, current, name)
            if step is None or not stat.S_ISDIR(step[1].st_mode):
                return None
            current = step[0]
        last = self._step(root_prefix, current, parts[-1])
        if last is None:
            return None
        return current, last[0], last[1]

    def _step(
        self, root_prefix: str, directory: str, name: str
    ) -> tuple[str, os.stat_result] | None:
        """The real path and stat of `name` in the real directory `directory`, or None.

        A symlink whose resolved target leaves the root is refused unless
        following that kind (file or directory) is allowed.
        """
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode):
                return path, st
            target = os.path.realpath(path)
            st = os.stat(target)
        except OSError as exc:
            if exc.errno in _DENIED:
                logger.warning("Static file %s cannot be read (permission denied)", path)
                return None
            if exc.errno in _MISSING or isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                return None
            raise
        except ValueError:  # a name the OS cannot take
            return None
        if not (target + os.sep).startswith(root_prefix):
            allowed = self._follow_dirs if stat.S_ISDIR(st.st_mode) else self._follow_files
            if not allowed:
                return None
        return target, st

    def __repr__(self) -> str:
        return f"StaticFiles(directory={self.directory!r}, packages={self.packages!r})"


async def _error(
    scope: Scope,
    receive: Receive,
    send: Send,
    status_code: int,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer with an HTTP error: through the App's error handling if there is one."""
    exc = HTTPException(status_code, headers=headers)
    context = context_of(scope)
    if context is not None:
        await context.errors.http_error(exc, scope, receive, send)
        return
    await PlainTextResponse(exc.detail, status_code, headers=headers)(scope, receive, send)
