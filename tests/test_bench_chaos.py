"""The chaos benchmark's run, small: two consumers, PostgreSQL, faults, a consumer killed."""

from __future__ import annotations

from pathlib import Path

from bench._chaos import chaos_run


def test_chaos_run_meets_its_correctness_targets(postgres_url: str, tmp_path: Path) -> None:
    out = chaos_run(work=tmp_path, store=postgres_url, consumers=2, n_reports=3200,
                    n_poison=2, outage_s=0.8, chaos=True, say=lambda m: None)
    assert out["lost"] == 0 and out["duplicates_stored"] == 0, out
    assert out["dead_lettered"] == out["poison_injected"] == 2, out
    assert out["dead_lettered_exactly_the_poison"], out
    assert out["reports_per_s"] > 0 and out["max_backlog"] > 0
    assert any("killed" in e for e in out["events"]), out["events"]
