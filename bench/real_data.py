"""Where the shared real recordings live: the one definition benchmarks and tests use.

``$PUMPWATCH_REAL_DATA`` when set, else ``../shared/data/real`` beside the checkout;
a folder counts only when it holds the ``manifest.csv`` that names the files and
their provenance. The recordings are for measuring only (see docs/models.md).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = "PUMPWATCH_REAL_DATA"
#: what a user is told when the recordings are not where they are looked for
MISSING = f"real recordings not found (set {ENV} or provide ../shared/data/real)"


def real_data_dir() -> Path | None:
    """The real-recordings folder, or None when it is absent."""
    env = os.environ.get(ENV)
    p = Path(env) if env else ROOT.parent / "shared" / "data" / "real"
    return p if (p / "manifest.csv").exists() else None
