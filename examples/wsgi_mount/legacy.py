"""The "legacy" Flask app that examples.wsgi_mount serves under /legacy.

An ordinary Flask app: it knows nothing about ASGI. Its URLs come out under
/legacy because microasgi gives it SCRIPT_NAME=/legacy.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

from flask import Flask, Response, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

flask_app = Flask(__name__)


@flask_app.get("/")
def index() -> str:
    return (
        "<h1>Flask, under microasgi</h1>"
        f"<p>SCRIPT_NAME is {request.script_root!r}, PATH_INFO is {request.path!r}.</p>"
        f"<p><a href='{url_for('countdown')}'>a streamed countdown</a></p>"
        f"<form method='post' action='{url_for('upload')}' enctype='multipart/form-data'>"
        "<input type='file' name='file'> <button>Upload</button></form>"
    )


@flask_app.post("/upload")
def upload() -> dict[str, object]:
    """Read the upload in pieces: the body streams in as it is read."""
    file = request.files["file"]
    digest = hashlib.sha256()
    size = 0
    while chunk := file.stream.read(64 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return {"filename": file.filename, "size": size, "sha256": digest.hexdigest()}


@flask_app.get("/countdown")
def countdown() -> Response:
    """A streamed response: each line reaches the client as it is produced."""

    def lines() -> Iterator[str]:
        for n in range(5, 0, -1):
            yield f"{n}...\n"
            time.sleep(0.2)
        yield "liftoff\n"

    return Response(lines(), mimetype="text/plain")


@flask_app.get("/old-home")
def old_home() -> BaseResponse:
    return redirect(url_for("index"))
