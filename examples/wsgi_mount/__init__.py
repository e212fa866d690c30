"""A Flask app mounted under microasgi, next to native routes (see main.py).

Serve it with ``python -m microasgi run examples.wsgi_mount:app``.
"""

from examples.wsgi_mount.main import app

__all__ = ["app"]
