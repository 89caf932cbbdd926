"""``--log-format json``: one JSON object per record, structured fields kept."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from pumpwatch.cli import build_parser
from pumpwatch.logfmt import configure


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_records_carry_fields_and_exceptions(restore_logging: None) -> None:
    out = io.StringIO()
    configure("INFO", "json", stream=out)
    log = logging.getLogger("pumpwatch.test")
    log.info("scored %d\nreports", 3, extra={"device": "gw-1", "seq": 7, "epoch": "00ff",
                                              "model_version": "pumps/3", "obj": object()})
    log.debug("not shown")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed for %s", "p1", extra={"pump": "p1"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # the newline in the message stayed inside one line
    first, second = (json.loads(x) for x in lines)
    assert first["message"] == "scored 3\nreports"
    assert (first["level"], first["logger"]) == ("INFO", "pumpwatch.test")
    assert first["time"].endswith("Z")
    assert (first["device"], first["seq"], first["epoch"], first["model_version"]) == (
        "gw-1", 7, "00ff", "pumps/3")
    assert first["obj"].startswith("<object object")  # not JSON: its repr
    assert "args" not in first and "msg" not in first  # LogRecord internals are not fields
    assert second["level"] == "ERROR" and second["pump"] == "p1"
    assert "ValueError: boom" in second["exc_info"]


def test_text_is_the_default_and_formats_are_checked(restore_logging: None) -> None:
    assert build_parser().parse_args(["selftest"]).log_format == "text"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--log-format", "xml", "selftest"])
    out = io.StringIO()
    configure("INFO", "text", stream=out)
    logging.getLogger("x").info("hello", extra={"device": "gw-1"})
    assert out.getvalue().rstrip().endswith("INFO x: hello")
