"""A download page (FileResponse) and a static site (StaticFiles).

    python -m microasgi run examples.files:app

- ``GET /``: the download page, one link per file of the downloads directory
  (``examples/files/downloads``, or the directory in ``MICROASGI_FILES_DOWNLOADS``).
- ``GET /downloads/{name}``: that file as an attachment, under its own name; add
  ``?inline=1`` to view it in the browser. Downloads are resumable: ETag,
  Last-Modified, Range and If-Range are all handled by FileResponse.
- ``/site/``: a static site (``examples/files/site``) with ``index.html`` pages,
  a ``404.html``, precompressed ``.br`` and ``.gz`` siblings (written by
  ``python -m examples.files.compress``), and fingerprinted files under
  ``assets/`` cached as immutable.

docs/files.md explains both parts.
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path
from urllib.parse import quote

import anyio.to_thread

from microasgi import App, FileResponse, HTMLResponse, HTTPException, Request
from microasgi.staticfiles import StaticFiles

__all__ = ["app", "create_app", "list_downloads"]

HERE = Path(__file__).resolve().parent
PAGE_HEADERS = {"content-security-policy": "default-src 'self'", "cache-control": "no-cache"}


def list_downloads(directory: Path) -> dict[str, tuple[Path, int]]:
    """The regular files of `directory` by name, with their sizes (dotfiles left out).

    Downloads are looked up by exact name in this listing, never by joining a
    path from the URL, so no URL can reach a file outside the directory.
    """
    files = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                files[entry.name] = (Path(entry.path), size)
    return dict(sorted(files.items()))


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"


def _page(files: dict[str, tuple[Path, int]]) -> str:
    rows = "\n".join(
        f'<li><a href="/downloads/{quote(name)}">{escape(name)}</a> ({_size(size)}) '
        f'<a href="/downloads/{quote(name)}?inline=1">view</a></li>'
        for name, (_, size) in files.items()
    )
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Downloads</title></head>
<body>
  <h1>Downloads</h1>
  <ul id="downloads">
{rows}
  </ul>
  <p>Also: <a href="/site/">a static site</a>.</p>
</body>
</html>
"""


def create_app(downloads: Path | None = None) -> App:
    """The example app, serving the files of `downloads`."""
    directory = downloads if downloads is not None else HERE / "downloads"
    app = App()
    app.mount(
        "/site",
        StaticFiles(
            directory=HERE / "site",
            html=True,
            cache_control="no-cache",  # revalidate: cheap, with ETags and 304s
            immutable=r"^assets/",  # names there change with their content
        ),
        name="site",
    )

    @app.get("/")
    async def index() -> HTMLResponse:
        files = await anyio.to_thread.run_sync(list_downloads, directory)
        return HTMLResponse(_page(files), headers=PAGE_HEADERS)

    @app.get("/downloads/{name}", name="download")
    async def download(request: Request, name: str) -> FileResponse:
        files = await anyio.to_thread.run_sync(list_downloads, directory)
        if name not in files:
            raise HTTPException(404, f"No download called {name!r}")
        path, _ = files[name]
        inline = request.query_params.get("inline") == "1"
        return FileResponse(
            path, filename=name, content_disposition_type="inline" if inline else "attachment"
        )

    return app


_configured = os.environ.get("MICROASGI_FILES_DOWNLOADS")
app = create_app(Path(_configured) if _configured else None)
