"""A microasgi app with a Flask app mounted next to its native routes.

Serve it with ``python -m microasgi run examples.wsgi_mount:app``, then open
http://127.0.0.1:8000/ (native) and http://127.0.0.1:8000/legacy/ (Flask), or
watch Flask stream with ``curl -N http://127.0.0.1:8000/legacy/countdown``.
"""

from __future__ import annotations

from examples.wsgi_mount.legacy import flask_app
from microasgi import App, HTMLResponse
from microasgi.wsgi import WSGIApp

app = App()
app.mount("/legacy", WSGIApp(flask_app), name="legacy")


@app.get("/")
async def index() -> HTMLResponse:
    return HTMLResponse(
        "<h1>microasgi</h1><p>Native routes here; the Flask app lives under "
        "<a href='/legacy/'>/legacy/</a>.</p>"
    )


@app.get("/api/health")
async def health() -> dict[str, str]:
    return {"status": "ok", "served_by": "microasgi"}
