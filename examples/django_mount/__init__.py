"""A Django site (its admin) mounted under microasgi, next to native routes (see main.py).

Serve it with ``python -m microasgi run examples.django_mount:app`` after
``python -m examples.django_mount migrate``.
"""

from examples.django_mount.main import app

__all__ = ["app"]
