"""A Django site mounted under /django, next to native microasgi routes.

Set up the database once, then serve::

    python -m examples.django_mount migrate
    python -m examples.django_mount createsuperuser
    python -m microasgi run examples.django_mount:app

http://127.0.0.1:8000/ is microasgi, http://127.0.0.1:8000/django/admin/ is
Django's admin, and http://127.0.0.1:8000/api/books is a native route that
reads the books edited there, with Django's ORM.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_mount.settings")

from django.apps import apps
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections

from microasgi import App, HTMLResponse
from microasgi.staticfiles import StaticFiles
from microasgi.wsgi import WSGIApp

MOUNT = "/django"

django_app = get_wsgi_application()  # runs django.setup()

from examples.django_mount.catalog.models import Book  # noqa: E402 (needs django.setup())

app = App()

if not settings.DEBUG:
    # Django serves static files only in debug mode (see urls.py). Otherwise
    # microasgi serves them, from the event loop, at the URL Django's
    # {% static %} writes: MOUNT + "/static/". The directories are the apps'
    # static/ folders, where Django's AppDirectoriesFinder looks. (A project
    # with collectstatic would use StaticFiles(directory=settings.STATIC_ROOT).)
    packages = [
        (config.name, "static")
        for config in apps.get_app_configs()
        if (Path(config.path) / "static").is_dir()
    ]
    app.mount(MOUNT + "/static", StaticFiles(packages=packages), name="django-static")

app.mount(MOUNT, WSGIApp(django_app), name="django")


@app.get("/")
async def index() -> HTMLResponse:
    return HTMLResponse(
        "<h1>microasgi</h1><p>Native routes here; Django's admin lives under "
        f"<a href='{MOUNT}/admin/'>{MOUNT}/admin/</a>. The books edited there: "
        "<a href='/api/books'>/api/books</a>.</p>"
    )


@app.get("/api/books")
def books() -> list[dict[str, object]]:
    """A plain def runs in a worker thread, where Django's ORM may be used."""
    try:
        return [
            {"id": book.pk, "title": book.title, "author": book.author, "year": book.year}
            for book in Book.objects.all()
        ]
    finally:
        close_old_connections()  # what Django does at the end of each of its requests
