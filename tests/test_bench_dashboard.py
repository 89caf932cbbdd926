"""``python -m bench.dashboard`` at a tiny size: it runs on both stores and prints its keys."""

from __future__ import annotations

from tests.infra.bench import run_bench
from tests.infra.postgres import postgres_available
from tests.infra.require import need

KEYS = [f"{prefix}p95_ms_{what}_{size}" for prefix in ("", "sqlite_")
        for what in ("fleet", "series", "alarms") for size in ("small", "large")]


def test_bench_dashboard_smoke() -> None:
    need("postgresql", postgres_available())
    result = run_bench("dashboard", "--small", "2000", "--large", "6000", "--channels", "20",
                       "--requests", "3", "--results-per-alarm", "100")
    for key in [*KEYS, "rows_small", "rows_large", "bytes_small", "bytes_large"]:
        assert key in result, key
    assert (result["rows_small"], result["rows_large"]) == (2000, 6000)
    assert 0 < result["bytes_small"] < result["bytes_large"]
    assert 0 < result["sqlite_bytes_small"] < result["sqlite_bytes_large"]
    assert all(result[k] > 0 for k in KEYS)
