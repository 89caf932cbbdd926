"""Pin math libraries to one thread before numpy loads, and the process to one core."""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def pin_to_core(core: int = 0) -> int | None:
    """Bind this process to one CPU (the first allowed one by default); returns it."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
        cpu = allowed[core % len(allowed)]
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        return None
    return cpu


def tune_memory() -> bool:
    """The edge agent's malloc tuning (``edge.memory``), for benchmarks of its DSP loop."""
    from edge.memory import keep_large_blocks

    return keep_large_blocks()
