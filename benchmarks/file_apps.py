"""The apps bench_files.py serves, each in a uvicorn process of its own:

    python benchmarks/file_apps.py microasgi|starlette PORT DIRECTORY

Both, written the usual way for each framework:
- ``GET /big``: ``FileResponse(DIRECTORY/big.bin)``;
- ``/static/...``: ``StaticFiles(directory=DIRECTORY/static)``;
- ``POST /upload``: ``await request.form()``, answering how many fields and files
  arrived and how many bytes the files hold (from the parsed form, so the whole
  body must have been parsed).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import uvicorn

MAX_FIELDS = 5000


def microasgi_app(directory: Path) -> Any:
    from microasgi import App, FileResponse, Request, UploadFile
    from microasgi.staticfiles import StaticFiles

    app = App(max_body_size=None)  # the upload is 50 MB: no limit, as in Starlette
    app.mount("/static", StaticFiles(directory=directory / "static"))

    @app.get("/big")
    async def big() -> FileResponse:
        return FileResponse(directory / "big.bin")

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        form = await request.form(max_fields=MAX_FIELDS, max_files=MAX_FIELDS)
        fields = files = size = 0
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                files += 1
                size += value.size or 0
            else:
                fields += 1
        return {"fields": fields, "files": files, "bytes": size}

    return app


def starlette_app(directory: Path) -> Any:
    from starlette.applications import Starlette
    from starlette.datastructures import UploadFile
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def big(request: Request) -> FileResponse:
        return FileResponse(directory / "big.bin")

    async def upload(request: Request) -> JSONResponse:
        fields = files = size = 0
        async with request.form(max_fields=MAX_FIELDS, max_files=MAX_FIELDS) as form:
            for _, value in form.multi_items():
                if isinstance(value, UploadFile):
                    files += 1
                    size += value.size or 0
                else:
                    fields += 1
        return JSONResponse({"fields": fields, "files": files, "bytes": size})

    return Starlette(
        routes=[
            Route("/big", big),
            Mount("/static", StaticFiles(directory=directory / "static")),
            Route("/upload", upload, methods=["POST"]),
        ]
    )


APPS = {"microasgi": microasgi_app, "starlette": starlette_app}


def main() -> None:
    framework, port, directory = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    app = APPS[framework](directory)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
