"""``python -m bench.simulator --json`` ends with one JSON object carrying the target figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_prints_json_last_line() -> None:
    argv = [
        sys.executable,
        "-m",
        "bench.simulator",
        "--json",
        "--pumps",
        "2",
        "--channels-per-pump",
        "2",
        "--seconds",
        "0.5",
        "--runs",
        "1",
    ]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["channels"] == 4 and result["fs"] == 25600.0
    assert result["realtime_factor"] > 0
