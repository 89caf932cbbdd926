"""The soak run (bench/_soak.py) as a test: mixed good and bad load into the real pipeline
with the broker SIGKILLed (60 s autosave), the consumer away past its session expiry and an
intruder in the shared group; every good report stored exactly once, every bad message
accounted for, memory bounded. A short run always; a long one with PUMPWATCH_SLOW=1
(length: PUMPWATCH_SOAK_MESSAGES, default 20,000 messages = 160,000 reports)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench._soak import soak_run
from tests.infra.fixtures import _require_mosquitto


def _check(out: dict[str, object]) -> None:
    assert out["lost"] == 0, out
    assert out["duplicates_stored"] == 0, out
    assert out["unaccounted"] == 0, out
    assert out["gaps_reported_good_devices"] == 0, out
    assert out["spool_undrained"] == 0, out
    assert out["faults"] == ["broker_kill", "consumer_expiry", "intruder"], out
    assert isinstance(out["republished"], int) and out["republished"] > 0, out
    assert isinstance(out["consumer_rss_peak_mb"], float)
    assert out["consumer_rss_peak_mb"] <= 300, out


def test_short_soak(tmp_path: Path) -> None:
    _require_mosquitto()
    _check(soak_run(work=tmp_path, messages=1200, minutes=None, devices=4, say=print))


@pytest.mark.slow
def test_long_soak(tmp_path: Path) -> None:
    _require_mosquitto()
    n = int(os.environ.get("PUMPWATCH_SOAK_MESSAGES", "20000"))
    _check(soak_run(work=tmp_path, messages=n, minutes=None, devices=8, say=print))
