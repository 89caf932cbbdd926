"""``python -m bench.simulator --json`` ends with one JSON object carrying the target figures."""

from __future__ import annotations

from tests.infra.bench import run_bench


def test_bench_prints_json_last_line() -> None:
    result = run_bench(
        "simulator", "--pumps", "2", "--channels-per-pump", "2", "--seconds", "0.5", "--runs", "1",
        timeout=120,
    )
    assert result["channels"] == 4 and result["fs"] == 25600.0
    assert result["realtime_factor"] > 0
