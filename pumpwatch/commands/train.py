"""``pumpwatch train``: train the condition classifier on the simulator, write a bundle.

Wiring only: simulation and fitting live in :mod:`models.training.training`.
Writes ``OUT/bundle/`` (the bundle), ``OUT/model.tar.gz`` (what ``pumpwatch
models register`` takes), ``OUT/metrics.json`` (held-out figures, also
registered as the package's metrics) and ``OUT/training.json`` (confusion
matrix, features, config). The bundle carries the training data's
statistics (``statistics.json``, ``constraints.json``; Model Monitor layout).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ._roles import Role

ROLE = Role("models", ("sklearn",))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train the condition classifier on simulated pumps")
    # For the defaults; after add_parser, so the command is listed without the models extra.
    from models.training.training import TrainConfig

    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--pumps-per-class", type=int, default=TrainConfig.pumps_per_class)
    p.add_argument("--test-pumps-per-class", type=int, default=TrainConfig.test_pumps_per_class)
    p.add_argument("--calib-pumps-per-class", type=int,
                   default=TrainConfig.calib_pumps_per_class,
                   help="pumps per class of the calibration split (the temperature); 0: none")
    p.add_argument("--seconds", type=int, default=TrainConfig.seconds,
                   help="seconds simulated per pump (1 s reports, two sensor axes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-version", default=None,
                   help="bundle model_version (default sim-{kind}-seed{seed})")
    p.add_argument("--baselines", type=Path, default=None,
                   help="baselines.npz (pumpwatch baseline fit) to ship in the same bundle")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--labels", type=Path, default=None, metavar="DIR",
                   help="also train on operators' verdicts: a `pumpwatch labels export` "
                   "directory (docs/monitoring.md)")
    p.set_defaults(func=run)


def eta_text(elapsed_s: float, i: int, n: int) -> str:
    """``ETA 1m05s`` from the stage's mean time per step so far (``ETA --`` before step 1)."""
    if i <= 0 or n <= 0:
        return "ETA --"
    left = round(elapsed_s / i * max(0, n - i))
    return f"ETA {left // 60}m{left % 60:02d}s" if left >= 60 else f"ETA {left}s"


class _Bar:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal).

    Shows the total elapsed time and the stage's ETA (its mean time per step so far).
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.stage_t0 = self.t0
        self.stage = ""

    def __call__(self, stage: str, i: int, n: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if stage != self.stage:
            if self.stage and self.tty:
                sys.stderr.write("\n")
            self.stage_t0 = now
        self.stage = stage
        width = 30
        done = int(width * i / max(n, 1))
        eta = "done" if i >= n else eta_text(now - self.stage_t0, i, n)
        line = (f"{stage:18s} [{'#' * done}{'.' * (width - done)}] {i}/{n} "
                f"{now - self.t0:5.0f}s  {eta}")
        if self.tty:
            sys.stderr.write("\r" + line + "\x1b[K")
            if i == n:
                sys.stderr.write("\n")
        elif i == n or i % max(1, n // 10) == 0:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from models.serving.baseline import Baselines
    from models.serving.errors import BundleError
    from models.training.training import TrainConfig, train, write_model

    cfg = TrainConfig(
        pumps_per_class=args.pumps_per_class, test_pumps_per_class=args.test_pumps_per_class,
        calib_pumps_per_class=args.calib_pumps_per_class, seconds=args.seconds, seed=args.seed,
    )
    version = args.model_version or f"sim-{cfg.kind}-seed{cfg.seed}"
    baselines = None
    if args.baselines is not None:
        try:
            baselines = Baselines.load(args.baselines)
        except BundleError as exc:
            print(f"pumpwatch train: {exc}", file=sys.stderr)
            return 2
    labelled = None
    if args.labels is not None:
        from models.training.labels import read_labels

        try:
            labelled = read_labels(args.labels)
        except (OSError, ValueError) as exc:  # msgspec's decode errors are ValueErrors
            print(f"pumpwatch train: --labels {args.labels}: {exc}", file=sys.stderr)
            return 2
    try:
        result = train(cfg, progress=_Bar(args.quiet), labelled=labelled)
    except ValueError as exc:
        print(f"pumpwatch train: --labels {args.labels}: {exc}", file=sys.stderr)
        return 2
    tar = write_model(result, args.out, model_version=version, baselines=baselines)
    print(json.dumps(result.metrics))
    print(f"model {version}: {tar} (metrics in {args.out / 'metrics.json'})")
    print(f"next: pumpwatch models register pumps {tar} --metrics {args.out / 'metrics.json'}")
    return 0
