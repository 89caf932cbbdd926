"""The dashboard: read-only HTTP API, live Server-Sent Events stream and a built-in web page.

``pumpwatch dashboard --store URL`` runs :func:`serve` over a SQLite or PostgreSQL
results store, read through :mod:`cloud.store`'s public read interface. The page (``static/``)
is plain HTML/CSS/JS with hand-drawn canvas charts: no build step, nothing
fetched from outside the machine.
"""

from __future__ import annotations

from ._store import StoreHandle
from .app import DashboardSettings, create_app, serve
from .openapi import openapi_document
from .stream import StreamHub, format_cursor, parse_cursor

__all__ = [
    "DashboardSettings",
    "StoreHandle",
    "StreamHub",
    "create_app",
    "format_cursor",
    "openapi_document",
    "parse_cursor",
    "serve",
]
