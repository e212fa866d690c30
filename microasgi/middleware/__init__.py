"""Middleware: `Middleware(cls, **options)` and the built-in middleware classes."""

from microasgi.middleware.base import Middleware

__all__ = ["Middleware"]
