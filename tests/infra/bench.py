"""Running a ``bench/*`` module the way a user does, for the benchmarks' smoke tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.infra.pipeline import ROOT


def run_bench(module: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    """``python -m bench.<module> --json ARGS`` from the checkout; its last line, parsed
    (every benchmark prints one JSON object last). A failing run raises with its output."""
    out = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--json", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise AssertionError(
            f"bench.{module} exited {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
