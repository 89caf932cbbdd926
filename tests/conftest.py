"""Shared fixtures: real-recordings location, seeds printed on failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.real_data import MISSING, real_data_dir
from tests.infra.require import need

ROOT = Path(__file__).resolve().parent.parent

# Shared servers for tests (mosquitto, ...): fixtures live with their infrastructure.
pytest_plugins = ["tests.infra.fixtures"]


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real-recordings folder; skips when absent, fails under CI where it must exist."""
    p = real_data_dir()
    if p is None:
        need("the real recordings", MISSING)
        raise AssertionError("unreachable")
    return p


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.slow`` tests run only with PUMPWATCH_SLOW=1 (see pyproject)."""
    if os.environ.get("PUMPWATCH_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set PUMPWATCH_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
