"""Entry points behind ``pumpwatch edge`` and ``pumpwatch replay`` (the CLI only wires)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from simulator.source import Source

from .agent import Agent
from .config import ConfigError, EdgeConfig, load_config
from .sources import simulated_source, synthetic_source
from .spool import SpoolError

log = logging.getLogger(__name__)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def load_or_exit(path: str) -> EdgeConfig | int:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2


def run_agent(
    cfg: EdgeConfig,
    make_source: Callable[[EdgeConfig], Source],
    *,
    exit_when_drained: bool = False,
    overflow: str | None = None,
) -> int:
    try:
        source = make_source(cfg)
        agent = Agent(cfg, source, exit_when_drained=exit_when_drained, overflow=overflow)
    except (SpoolError, KeyError, ValueError) as exc:
        print(f"pumpwatch edge: cannot start: {exc}", file=sys.stderr)
        return 2
    return agent.run(_stop_on_signals())


def edge_main(config_path: str) -> int:
    cfg = load_or_exit(config_path)
    if isinstance(cfg, int):
        return cfg
    if cfg.source.kind == "synthetic":
        return run_agent(cfg, synthetic_source)
    if cfg.source.kind == "simulated":
        return run_agent(cfg, simulated_source)
    print(
        "pumpwatch edge: source.kind = 'replay' needs `pumpwatch replay FILE...`", file=sys.stderr
    )
    return 2
