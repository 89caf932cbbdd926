"""The dashboard: read-only HTTP API, live Server-Sent Events stream and a built-in web page.

``pumpwatch dashboard --store URL`` runs :func:`serve`. The page (``static/``)
is plain HTML/CSS/JS with hand-drawn canvas charts: no build step, nothing
fetched from outside the machine.
"""

from __future__ import annotations

from .alarms import ALARMS_DDL, AlarmRow, write_alarms_sqlite
from .app import DashboardSettings, create_app, serve
from .openapi import openapi_document
from .queries import SQLiteReader, open_reader
from .stream import StreamHub, format_cursor, parse_cursor

__all__ = [
    "ALARMS_DDL",
    "AlarmRow",
    "DashboardSettings",
    "SQLiteReader",
    "StreamHub",
    "create_app",
    "format_cursor",
    "open_reader",
    "openapi_document",
    "parse_cursor",
    "serve",
    "write_alarms_sqlite",
]
