"""Log output for every long-running command: ``--log-format text|json``.

``json`` writes one JSON object per line (what journald, CloudWatch Logs and
Loki ingest without a parser): ``time`` (RFC 3339, UTC, milliseconds),
``level``, ``logger``, ``message``, then the structured fields a log call
carries through ``extra=`` (the pipeline uses device, site, pump, epoch as
hex, seq, model_version, target, kind, topic; docs/metrics.md) and
``exc_info`` / ``stack_info`` text when present. A value JSON cannot hold is
written as its ``repr``. Standard library only: the edge-only install uses it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: whatever else a record carries came from ``extra=``.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ).replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _RESERVED or key.startswith("_"):
                continue
            out[key] = value if _jsonable(value) else repr(value)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def _jsonable(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def configure(level: str, fmt: LogFormat = "text", *, stream: TextIO | None = None) -> None:
    """Set up the root logger once for a command (replaces earlier handlers)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


__all__ = ["LOG_FORMATS", "JsonFormatter", "LogFormat", "configure"]
