"""StaticFiles: serving, html mode, every traversal form, symlink choices, caching,
precompressed siblings, packages, methods and errors."""

from __future__ import annotations

import gzip
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microasgi import App, HTTPException, PlainTextResponse, Request, staticfiles
from microasgi._encodings import parse_accept_encoding
from microasgi.middleware import CompressionMiddleware, Middleware
from microasgi.responses import _filetypes
from microasgi.staticfiles import IMMUTABLE, StaticFiles, safe_parts
from tests.helpers import AddHeader, Exchange, MakeClient, http_scope
from tests.linearity import assert_linear

SECRET = b"TOP SECRET: never served"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp/static (served) with siblings and symlinks around it."""
    static = tmp_path / "static"
    (static / "sub").mkdir(parents=True)
    (static / "hello.txt").write_bytes(b"hello")
    (static / "index.html").write_bytes(b"<h1>home</h1>")
    (static / "404.html").write_bytes(b"<h1>missing</h1>")
    (static / "sub" / "index.html").write_bytes(b"<h1>sub</h1>")
    (static / "sub" / "page.html").write_bytes(b"<p>page</p>")
    (static / "empty").mkdir()
    (tmp_path / "static1.txt").write_bytes(SECRET)  # a sibling whose name extends "static"
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "file.txt").write_bytes(SECRET)
    (static / "link_inside.txt").symlink_to(static / "hello.txt")
    (static / "link_outside.txt").symlink_to(tmp_path / "secret.txt")
    (static / "linkdir_inside").symlink_to(static / "sub")
    (static / "linkdir_outside").symlink_to(tmp_path / "outside")
    (static / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    (static / "loop.txt").symlink_to(static / "loop.txt")
    return static


def scope(method: str = "GET", path: str = "/", root_path: str = "", **headers: str) -> Any:
    raw = [(b"host", b"testserver")]
    raw += [(k.replace("_", "-").encode(), v.encode("latin-1")) for k, v in headers.items()]
    return http_scope(method, root_path + path, headers=raw, root_path=root_path)


async def get(app: Any, path: str, method: str = "GET", **headers: str) -> Exchange:
    return await Exchange().run(app, scope(method, path, **headers))


# -- serving ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_serves_a_file(tree: Path) -> None:
    ex = await get(StaticFiles(directory=tree), "/hello.txt")
    assert (ex.status, ex.body) == (200, b"hello")
    assert ex.header(b"content-type") == b"text/plain; charset=utf-8"
    assert ex.header(b"etag") is not None and ex.header(b"last-modified") is not None
    assert ex.header(b"vary") is None and ex.header(b"cache-control") is None
    ex = await get(StaticFiles(directory=tree), "/sub/page.html", "HEAD")
    assert (ex.status, ex.body, ex.header(b"content-length")) == (200, b"", b"11")


@pytest.mark.anyio
async def test_conditional_and_range_requests(tree: Path) -> None:
    app = StaticFiles(directory=str(tree))
    etag = (await get(app, "/hello.txt")).header(b"etag")
    assert etag is not None
    ex = await get(app, "/hello.txt", if_none_match=etag.decode())
    assert (ex.status, ex.body) == (304, b"")
    ex = await get(app, "/hello.txt", range="bytes=1-3")
    assert (ex.status, ex.body, ex.header(b"content-range")) == (206, b"ell", b"bytes 1-3/5")
    ex = await get(app, "/hello.txt", if_match='"nope"')
    assert ex.status == 412


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_are_405(tree: Path, method: str) -> None:
    ex = await get(StaticFiles(directory=tree), "/hello.txt", method)
    assert ex.status == 405
    assert ex.header(b"allow") == b"GET, HEAD"


@pytest.mark.anyio
async def test_misses(tree: Path) -> None:
    app = StaticFiles(directory=tree)
    for path in ("/nope.txt", "/sub", "/sub/", "/", "/hello.txt/", "/empty/", "/sub/nope/x"):
        ex = await get(app, path)
        assert (ex.status, ex.body) == (404, b"Not Found"), path


@pytest.mark.anyio
async def test_a_fifo_is_not_served_and_does_not_hang(tree: Path) -> None:
    os.mkfifo(tree / "pipe")
    with anyio.fail_after(5):
        assert (await get(StaticFiles(directory=tree), "/pipe")).status == 404


@pytest.mark.anyio
async def test_unreadable_file_is_404(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: str, *args: Any) -> Any:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr("microasgi.staticfiles.open_file", denied)
    assert (await get(StaticFiles(directory=tree), "/hello.txt")).status == 404


@pytest.mark.anyio
async def test_small_file_costs_one_thread_trip(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = StaticFiles(directory=tree)
    trips = []
    original = anyio.to_thread.run_sync

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(func)
        return await original(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    ex = await get(app, "/hello.txt")
    assert ex.body == b"hello"
    assert len(trips) == 1


@pytest.mark.anyio
async def test_pathsend(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_open(*args: Any) -> Any:
        raise AssertionError("opened")

    monkeypatch.setattr("microasgi.staticfiles.open_file", no_open)
    request = {**scope("GET", "/sub/page.html"), "extensions": {"http.response.pathsend": {}}}
    ex = await Exchange().run(StaticFiles(directory=tree), request)
    assert [m["type"] for m in ex.sent] == ["http.response.start", "http.response.pathsend"]
    assert ex.sent[1]["path"] == str((tree / "sub" / "page.html").resolve())


# -- html mode -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_html_index_and_redirect(tree: Path) -> None:
    app = StaticFiles(directory=tree, html=True)
    assert (await get(app, "/")).body == b"<h1>home</h1>"
    assert (await get(app, "/sub/")).body == b"<h1>sub</h1>"
    ex = await get(app, "/sub")
    assert (ex.status, ex.header(b"location")) == (307, b"/sub/")
    request = scope("GET", "/sub", root_path="/static")
    request["query_string"] = b"a=1&b=%20"
    ex = await Exchange().run(app, request)
    assert (ex.status, ex.header(b"location")) == (307, b"/static/sub/?a=1&b=%20")
    assert (await get(app, "/linkdir_inside/")).body == b"<h1>sub</h1>"


@pytest.mark.anyio
async def test_the_mount_point_itself(tree: Path) -> None:
    # A router that hands over "/static" under the mount "/static" (Starlette's does):
    # the directory without its slash, so html mode redirects (relative links need it).
    request = scope("GET", "", root_path="/static")
    ex = await Exchange().run(StaticFiles(directory=tree, html=True), request)
    assert (ex.status, ex.header(b"location")) == (307, b"/static/")
    ex = await Exchange().run(StaticFiles(directory=tree), scope("GET", "", root_path="/static"))
    assert ex.status == 404
    # A server that leaves root_path out of path.
    request = http_scope("GET", "/sub", root_path="/static")
    ex = await Exchange().run(StaticFiles(directory=tree, html=True), request)
    assert ex.header(b"location") == b"/static/sub/"


@pytest.mark.anyio
async def test_redirect_location_is_percent_encoded(tree: Path) -> None:
    (tree / "a dir?#%").mkdir()
    (tree / "a dir?#%" / "index.html").write_bytes(b"odd")
    ex = await get(StaticFiles(directory=tree, html=True), "/a dir?#%")
    assert ex.header(b"location") == b"/a%20dir%3F%23%25/"


@pytest.mark.anyio
async def test_html_404_page(tree: Path) -> None:
    app = StaticFiles(directory=tree, html=True, cache_control="no-cache")
    ex = await get(app, "/nope.html")
    assert (ex.status, ex.body) == (404, b"<h1>missing</h1>")
    assert ex.header(b"content-type") == b"text/html; charset=utf-8"
    assert ex.header(b"accept-ranges") is None
    ex = await get(app, "/nope.html", "HEAD")
    assert (ex.status, ex.body) == (404, b"")
    ex = await get(app, "/empty/")  # a directory without index.html
    assert ex.status == 404 and ex.body == b"<h1>missing</h1>"
    (tree / "404.html").unlink()
    assert (await get(app, "/nope.html")).body == b"Not Found"


# -- never outside the directory ---------------------------------------------------------------

TRAVERSALS = [
    "/../secret.txt",
    "/..",
    "/../",
    "/sub/../../secret.txt",
    "/sub/../hello.txt",  # stays inside, but no browser sends dot segments: 404 too
    "/./hello.txt",
    "/../static1.txt",  # the sibling whose name starts like the directory's
    "/%2e%2e/secret.txt",  # not decoded again: a literal name that does not exist
    "/..%2fsecret.txt",
    "/%252e%252e/secret.txt",
    "//etc/passwd",
    "//secret.txt",
    "/sub//page.html",
    "/\x00",
    "/hello.txt\x00.png",
    "/..\\secret.txt",
    "/sub\\..\\..\\secret.txt",
    "/\\\\server\\share\\x",
    "/C:/Windows/win.ini",
    "/c:secret.txt",
    "hello.txt",  # not starting with /
    "/link_outside.txt",
    "/linkdir_outside/file.txt",
    "/dangling.txt",
    "/loop.txt",
]


@pytest.mark.anyio
@pytest.mark.parametrize("path", TRAVERSALS)
async def test_traversal_is_404(tree: Path, path: str) -> None:
    for app in (StaticFiles(directory=tree), StaticFiles(directory=tree, html=True)):
        request = scope("GET", "/")
        request["path"] = path
        ex = await Exchange().run(app, request)
        assert ex.status == 404, path
        assert SECRET not in ex.body


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/hello.txt/../../secret.txt", "/../static1.txt"])
async def test_traversal_under_a_mount(tree: Path, path: str, make_client: MakeClient) -> None:
    app = App()
    app.mount("/static", StaticFiles(directory=tree), name="static")
    request = scope("GET", "/")
    request["path"] = "/static" + path
    ex = await Exchange().run(app, request)
    assert ex.status == 404 and SECRET not in ex.body
    # "/static1.txt" is not below the "/static" mount at all.
    ex = await Exchange().run(app, scope("GET", "/static1.txt"))
    assert ex.status == 404


segment = st.sampled_from(
    ["..", ".", "", "hello.txt", "sub", "secret.txt", "static1.txt", "%2e%2e", "\\..",
     "link_outside.txt", "linkdir_outside", "linkdir_inside", "file.txt", "C:", "\x00", "..\\"]
)  # fmt: skip


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=st.lists(segment, min_size=1, max_size=6), lead=st.sampled_from(["/", "//", "", "/../"])
)
def test_no_path_reaches_a_file_outside(tree: Path, parts: list[str], lead: str) -> None:
    app = StaticFiles(directory=tree, html=True)
    request = scope("GET", "/")
    request["path"] = lead + "/".join(parts)
    ex = anyio.run(Exchange().run, app, request)
    assert SECRET not in ex.body
    assert ex.status in (200, 307, 404)


def test_safe_parts() -> None:
    assert safe_parts("/") == ([], True)
    assert safe_parts("/a/b") == (["a", "b"], False)
    assert safe_parts("/a/b/") == (["a", "b"], True)
    for bad in ("", "a", "/a//b", "/..", "/a/./b", "/a\\b", "/a\x00", "/C:/x", "//x"):
        assert safe_parts(bad) is None, bad


# -- symlinks ------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("follow", "file_served", "dir_served"),
    [
        (False, False, False),
        ("files", True, False),
        ("directories", False, True),
        (True, True, True),
    ],
)
async def test_symlink_choices(
    tree: Path, follow: Any, file_served: bool, dir_served: bool
) -> None:
    app = StaticFiles(directory=tree, follow_symlinks=follow)
    assert (await get(app, "/link_inside.txt")).body == b"hello"  # inside: always
    assert (await get(app, "/linkdir_inside/page.html")).body == b"<p>page</p>"
    ex = await get(app, "/link_outside.txt")
    assert (ex.status == 200) is file_served
    assert (ex.body == SECRET) is file_served
    ex = await get(app, "/linkdir_outside/file.txt")
    assert (ex.status == 200) is dir_served


@pytest.mark.anyio
async def test_followed_directory_does_not_open_its_own_file_links(
    tree: Path, tmp_path: Path
) -> None:
    # A symlinked directory is followed, but a symlinked file in it that leaves again is not.
    (tmp_path / "outside" / "deeper.txt").symlink_to(tmp_path / "secret.txt")
    app = StaticFiles(directory=tree, follow_symlinks="directories")
    assert (await get(app, "/linkdir_outside/deeper.txt")).status == 404
    app = StaticFiles(directory=tree, follow_symlinks=True)
    assert (await get(app, "/linkdir_outside/deeper.txt")).body == SECRET


@pytest.mark.anyio
async def test_starlette_follow_symlink_name(tree: Path) -> None:
    app = StaticFiles(directory=tree, follow_symlink=True)
    assert (await get(app, "/link_outside.txt")).status == 200


def test_follow_symlinks_must_be_a_known_choice(tree: Path) -> None:
    with pytest.raises(ValueError):
        StaticFiles(directory=tree, follow_symlinks="yes")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_served_directory_may_itself_be_a_symlink(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "current").symlink_to(tree)
    app = StaticFiles(directory=tmp_path / "current")
    assert (await get(app, "/hello.txt")).body == b"hello"
    assert (await get(app, "/link_outside.txt")).status == 404


# -- a directory that changes between the lookup and the open ------------------------------------


def _swap_before_open(monkeypatch: pytest.MonkeyPatch, change: Any) -> None:
    """Make `change` happen once, after StaticFiles checked a path and before it opens it."""
    real_open = staticfiles.open_file
    pending = [change]

    def racing(path: str, *args: Any) -> Any:
        if pending:
            pending.pop()()
        return real_open(path, *args)

    monkeypatch.setattr(staticfiles, "open_file", racing)


@pytest.fixture(params=["kernel path", "device and inode"])
def verification(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of checking the open file: the kernel's path (Linux), or its identity."""
    if request.param == "device and inode":
        monkeypatch.setattr(staticfiles, "_fd_path", lambda fd: None)
    return str(request.param)


@pytest.mark.anyio
async def test_a_file_swapped_for_a_symlink_after_the_check_is_not_served(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verification: str
) -> None:
    def swap() -> None:
        (tree / "hello.txt").unlink()
        (tree / "hello.txt").symlink_to(tmp_path / "secret.txt")

    _swap_before_open(monkeypatch, swap)
    ex = await get(StaticFiles(directory=tree), "/hello.txt")
    assert ex.status == 404 and SECRET not in ex.body


@pytest.mark.anyio
@pytest.mark.parametrize("html", [False, True])
async def test_a_directory_swapped_for_a_symlink_after_the_check_is_not_served(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verification: str, html: bool
) -> None:
    (tmp_path / "outside" / "page.html").write_bytes(SECRET)

    def swap() -> None:
        (tree / "sub").rename(tmp_path / "old-sub")
        (tree / "sub").symlink_to(tmp_path / "outside")

    _swap_before_open(monkeypatch, swap)
    ex = await get(StaticFiles(directory=tree, html=html), "/sub/page.html")
    assert (tree / "sub").is_symlink()  # the swap did happen
    assert SECRET not in ex.body
    assert ex.status == 404
    assert ex.body == (b"<h1>missing</h1>" if html else b"Not Found")


@pytest.mark.anyio
async def test_a_file_swapped_for_a_link_loop_after_the_check_is_a_404(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def swap() -> None:
        (tree / "hello.txt").unlink()
        (tree / "hello.txt").symlink_to(tree / "hello.txt")

    _swap_before_open(monkeypatch, swap)
    assert (await get(StaticFiles(directory=tree), "/hello.txt")).status == 404


@pytest.mark.anyio
async def test_a_file_replaced_by_a_new_version_after_the_check_is_served(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The usual deployment (write a new file, rename it over the old one) is no attack.
    def deploy() -> None:
        (tree / "hello.new").write_bytes(b"hello, new")
        (tree / "hello.new").replace(tree / "hello.txt")

    _swap_before_open(monkeypatch, deploy)
    ex = await get(StaticFiles(directory=tree), "/hello.txt")
    assert (ex.status, ex.body, ex.header(b"content-length")) == (200, b"hello, new", b"10")


@pytest.mark.anyio
async def test_a_link_allowed_to_leave_is_still_served(
    tree: Path, monkeypatch: pytest.MonkeyPatch, verification: str
) -> None:
    _swap_before_open(monkeypatch, lambda: None)
    app = StaticFiles(directory=tree, follow_symlinks=True)
    assert (await get(app, "/link_outside.txt")).body == SECRET
    assert (await get(app, "/linkdir_outside/file.txt")).body == SECRET


# -- caching -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cache_control_and_immutable(tree: Path) -> None:
    (tree / "assets").mkdir()
    (tree / "assets" / "app.3f2a9c1b.js").write_bytes(b"x")
    app = StaticFiles(
        directory=tree, html=True, cache_control="no-cache", immutable=r"^assets/.*\.[0-9a-f]{8}\."
    )
    assert (await get(app, "/assets/app.3f2a9c1b.js")).header(
        b"cache-control"
    ) == IMMUTABLE.encode()
    assert (await get(app, "/hello.txt")).header(b"cache-control") == b"no-cache"
    assert (await get(app, "/assets/missing.3f2a9c1b.js")).header(b"cache-control") == b"no-cache"
    app = StaticFiles(directory=tree, immutable=lambda path: path.endswith(".txt"))
    assert (await get(app, "/hello.txt")).header(b"cache-control") == IMMUTABLE.encode()
    assert (await get(app, "/sub/page.html")).header(b"cache-control") is None
    etag = (await get(app, "/hello.txt")).header(b"etag") or b""
    ex = await get(app, "/hello.txt", if_none_match=etag.decode())
    assert (ex.status, ex.header(b"cache-control")) == (304, IMMUTABLE.encode())


@pytest.mark.anyio
async def test_an_immutable_function_that_raises_leaks_no_descriptor(tree: Path) -> None:
    def broken(path: str) -> bool:
        raise LookupError("a bug in the user's function")

    app = StaticFiles(directory=tree, immutable=broken)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(LookupError):  # a range request: the file is open, not read
            await get(app, "/hello.txt", range="bytes=0-1")
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize("value", ["no-cache\r\nX-Injected: 1", "no-cache\n", "max-age=€"])
def test_a_bad_cache_control_is_refused_at_once(tree: Path, value: str) -> None:
    with pytest.raises(ValueError):
        StaticFiles(directory=tree, cache_control=value)


@pytest.mark.parametrize("options", [{"chunk_size": 0}, {"max_ranges": 0}])
def test_bad_sizes_are_refused_at_once(tree: Path, options: dict[str, int]) -> None:
    # Not on every request, as a 500 after the file was found and opened.
    with pytest.raises(ValueError, match="at least 1"):
        StaticFiles(directory=tree, **options)  # type: ignore[arg-type]


# -- precompressed siblings ---------------------------------------------------------------------


@pytest.fixture
def compressed(tree: Path) -> Path:
    (tree / "app.js").write_bytes(b"console.log('plain')")
    for suffix in ("br", "gz", "zst"):
        (tree / f"app.js.{suffix}").write_bytes(suffix.upper().encode() * 3)
    return tree


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("accept", "encoding"),
    [
        ("gzip", "gzip"),
        ("gzip, deflate, br, zstd", "br"),
        ("gzip;q=1.0, br;q=0.5", "gzip"),
        ("zstd", "zstd"),
        ("x-gzip", "gzip"),
        ("GZIP", "gzip"),
        ("*", "br"),
        ("br;q=0, *", "zstd"),
        ("br;q=0", None),
        ("gzip;q=0.5, identity", None),
        ("identity", None),
        ("", None),
        ("deflate", None),
        ("gzip;q=2", None),  # a malformed q-value: that element is left out
        ("gzip;q=nan", None),
        ("gzip;q=0.001", "gzip"),
    ],
)
async def test_precompressed_choice(compressed: Path, accept: str, encoding: str | None) -> None:
    app = StaticFiles(directory=compressed)
    ex = await get(app, "/app.js", accept_encoding=accept)
    assert ex.status == 200
    assert ex.header(b"vary") == b"Accept-Encoding"
    assert ex.header(b"content-type") == b"text/javascript; charset=utf-8"
    if encoding is None:
        assert ex.header(b"content-encoding") is None
        assert ex.body == b"console.log('plain')"
    else:
        assert ex.header(b"content-encoding") == encoding.encode()
        suffix = {"br": "br", "gzip": "gz", "zstd": "zst"}[encoding]
        assert ex.body == suffix.upper().encode() * 3
        assert (ex.header(b"etag") or b"").endswith(f'-{encoding}"'.encode())


@pytest.mark.anyio
async def test_precompressed_etags_differ_and_304_per_encoding(compressed: Path) -> None:
    app = StaticFiles(directory=compressed)
    plain = (await get(app, "/app.js")).header(b"etag") or b""
    gz = (await get(app, "/app.js", accept_encoding="gzip")).header(b"etag") or b""
    assert plain != gz
    ex = await get(app, "/app.js", accept_encoding="gzip", if_none_match=gz.decode())
    assert (ex.status, ex.header(b"vary"), ex.header(b"content-encoding")) == (
        304,
        b"Accept-Encoding",
        None,
    )
    ex = await get(app, "/app.js", if_none_match=gz.decode())  # the plain one is not that
    assert ex.status == 200
    ex = await get(app, "/app.js", accept_encoding="gzip", range="bytes=0-1")
    assert (ex.status, ex.body, ex.header(b"content-encoding")) == (206, b"GZ", b"gzip")
    ex = await get(app, "/app.js", "HEAD", accept_encoding="br")
    assert ex.header(b"content-length") == b"6" and ex.header(b"content-encoding") == b"br"


@pytest.mark.anyio
async def test_stale_sibling_is_ignored(compressed: Path) -> None:
    past = time.time() - 3600
    for suffix in ("br", "gz", "zst"):
        os.utime(compressed / f"app.js.{suffix}", (past, past))
    ex = await get(StaticFiles(directory=compressed), "/app.js", accept_encoding="gzip, br")
    assert ex.body == b"console.log('plain')"
    assert ex.header(b"vary") is None


@pytest.mark.anyio
async def test_precompressed_off_and_files_without_siblings(compressed: Path) -> None:
    ex = await get(
        StaticFiles(directory=compressed, precompressed=False), "/app.js", accept_encoding="br"
    )
    assert ex.header(b"content-encoding") is None and ex.header(b"vary") is None
    ex = await get(StaticFiles(directory=compressed), "/hello.txt", accept_encoding="br")
    assert ex.header(b"content-encoding") is None and ex.header(b"vary") is None
    # Asking for the sibling by name: the compressed file itself, as what it is.
    ex = await get(StaticFiles(directory=compressed), "/app.js.gz")
    assert ex.header(b"content-type") == b"application/gzip"
    assert ex.header(b"content-encoding") is None


def test_parse_accept_encoding() -> None:
    assert parse_accept_encoding("gzip, br;q=0.5 , zstd;Q=0") == {
        "gzip": 1.0,
        "br": 0.5,
        "zstd": 0.0,
    }
    assert parse_accept_encoding(",,;q=1, gzip;q=abc") == {}
    many = ", ".join(f"c{i};q=0.5" for i in range(10_000))
    assert len(parse_accept_encoding(many)) == 10_000


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="gzipbr*;q=0.15, \tX-", max_size=60))
def test_parse_accept_encoding_never_fail(header: str) -> None:
    codings = parse_accept_encoding(header)
    assert all(0.0 <= q <= 1.0 for q in codings.values())
    assert all(coding and coding == coding.strip(" \t").lower() for coding in codings)


@pytest.mark.parametrize(
    ("make", "function"),
    [
        (lambda n: "gzip;q=0.5, " * n, parse_accept_encoding),
        (lambda n: "gzip" + ";" * n, parse_accept_encoding),
        (lambda n: "gzip;q=" + "0" * n, parse_accept_encoding),
        (lambda n: "/a" * n, safe_parts),
        (lambda n: "/" + "x" * n, safe_parts),
    ],
)
def test_request_parsers_are_linear(make: Any, function: Any) -> None:
    assert_linear(make, function, 2000)


# -- directories and packages ---------------------------------------------------------------------


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="does not exist"):
        StaticFiles(directory=tmp_path / "nope")
    with pytest.raises(ValueError):
        StaticFiles()


@pytest.mark.anyio
async def test_check_dir_false_resolves_on_first_request(tmp_path: Path) -> None:
    app = StaticFiles(directory=tmp_path / "later", check_dir=False)
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "a.txt").write_bytes(b"a")
    assert (await get(app, "/a.txt")).body == b"a"


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    root = tmp_path / "pkgroot" / "demo_static_pkg"
    (root / "statics").mkdir(parents=True)
    (root / "assets").mkdir()
    (root / "__init__.py").write_text("")
    (root / "statics" / "pkg.css").write_bytes(b"pkg-statics")
    (root / "assets" / "pkg.css").write_bytes(b"pkg-assets")
    (root / "statics" / "hello.txt").write_bytes(b"from the package")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgroot"))
    yield "demo_static_pkg"
    sys.modules.pop("demo_static_pkg", None)


@pytest.mark.anyio
async def test_packages(tree: Path, package: str) -> None:
    app = StaticFiles(packages=[package])
    assert (await get(app, "/pkg.css")).body == b"pkg-statics"
    app = StaticFiles(packages=[(package, "assets")])
    assert (await get(app, "/pkg.css")).body == b"pkg-assets"
    app = StaticFiles(directory=tree, packages=[package, (package, "assets")])
    assert (await get(app, "/hello.txt")).body == b"hello"  # the directory comes first
    assert (await get(app, "/pkg.css")).body == b"pkg-statics"
    assert (await get(app, "/../demo_static_pkg/__init__.py")).status == 404


def test_missing_package(package: str) -> None:
    with pytest.raises(RuntimeError, match="could not be found"):
        StaticFiles(packages=["no_such_package_here"])
    with pytest.raises(RuntimeError, match="not found in package"):
        StaticFiles(packages=[(package, "nope")])


# -- other scopes, errors -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_websocket_is_closed(tree: Path) -> None:
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await StaticFiles(directory=tree)({"type": "websocket", "path": "/"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1000, "reason": ""}]


@pytest.mark.anyio
async def test_lifespan_when_served_alone(tree: Path) -> None:
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Any] = []

    async def receive() -> Any:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await StaticFiles(directory=tree)({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def _app_with_handlers(tree: Path) -> App:
    app = App()
    app.mount("/static", StaticFiles(directory=tree), name="static")

    @app.exception_handler(404)
    async def not_found(request: Request, exc: HTTPException) -> PlainTextResponse:
        return PlainTextResponse(f"custom 404 for {request.url.path}", 404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: HTTPException) -> PlainTextResponse:
        return PlainTextResponse("custom 405", 405, headers=exc.headers)

    return app


def test_user_error_handlers_apply_when_mounted(tree: Path, make_client: MakeClient) -> None:
    client = make_client(_app_with_handlers(tree))
    response = client.get("/static/nope.txt")
    assert (response.status_code, response.text) == (404, "custom 404 for /static/nope.txt")
    response = client.delete("/static/hello.txt")
    assert (response.status_code, response.text) == (405, "custom 405")
    assert response.headers["allow"] == "GET, HEAD"
    assert client.get("/static/hello.txt").text == "hello"


def test_error_handlers_reached_through_foreign_middleware(
    tree: Path, make_client: MakeClient
) -> None:
    # StaticFiles answers through the App's error handling itself (found in the
    # scope's AppContext), so an ASGI app between them need not pass exceptions on.
    app = _app_with_handlers(tree)
    app.mount("/wrapped", AddHeader(StaticFiles(directory=tree)))
    response = make_client(app).get("/wrapped/nope.txt")
    assert (response.status_code, response.text) == (404, "custom 404 for /wrapped/nope.txt")
    assert response.headers["x-mw"] == "yes"


def test_mounted_in_an_app(tree: Path, make_client: MakeClient) -> None:
    app = App()
    app.mount("/static", StaticFiles(directory=tree, html=True), name="static")
    client = make_client(app)
    assert client.get("/static/hello.txt").text == "hello"
    assert client.get("/static/sub/page.html").text == "<p>page</p>"
    response = client.get("/static/sub", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (307, "/static/sub/")
    assert client.get("/static/sub").text == "<h1>sub</h1>"
    assert client.get("/static/nope").status_code == 404
    assert app.url_path_for("static", path="sub/page.html") == "/static/sub/page.html"


def test_served_alone_answers_plainly(tree: Path, make_client: MakeClient) -> None:
    client = make_client(StaticFiles(directory=tree))
    response = client.get("/nope")
    assert (response.status_code, response.text) == (404, "Not Found")
    response = client.post("/hello.txt")
    assert (response.status_code, response.headers["allow"]) == (405, "GET, HEAD")


def test_file_types(tree: Path, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import mimetypes

    monkeypatch.setattr(mimetypes, "guess_type", lambda *a, **k: ("text/plain", None))
    (tree / "mod.mjs").write_text("export {}")
    client = make_client(StaticFiles(directory=tree))
    assert client.get("/mod.mjs").headers["content-type"] == "text/javascript; charset=utf-8"
    assert _filetypes.guess_media_type("x.webmanifest") == "application/manifest+json"


def test_behind_the_compression_middleware(compressed: Path, make_client: MakeClient) -> None:
    (compressed / "big.txt").write_text("compress me " * 500)
    (compressed / "app.js.gz").write_bytes(gzip.compress(b"console.log('plain')"))
    app = App(middleware=[Middleware(CompressionMiddleware)])
    app.mount("/s", StaticFiles(directory=compressed))
    client = make_client(app)
    accept = {"accept-encoding": "gzip"}
    # A precompressed sibling goes out as it is: the middleware leaves encoded bodies alone.
    sibling = client.get("/s/app.js", headers=accept)
    assert sibling.headers["content-encoding"] == "gzip"
    assert sibling.text == "console.log('plain')"
    assert sibling.headers["etag"].endswith('-gzip"') and not sibling.headers["etag"].startswith(
        "W/"
    )
    # A file without siblings is compressed by the middleware, which weakens the ETag;
    # the weak comparison of If-None-Match still recognises it.
    compressed_on_the_fly = client.get("/s/big.txt", headers=accept)
    assert compressed_on_the_fly.headers["content-encoding"] == "gzip"
    etag = compressed_on_the_fly.headers["etag"]
    assert etag.startswith("W/")
    again = client.get("/s/big.txt", headers={**accept, "if-none-match": etag})
    assert again.status_code == 304
