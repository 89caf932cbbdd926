"""Entry points behind ``pumpwatch edge`` and ``pumpwatch replay`` (the CLI only wires)."""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

import msgspec

from simulator.source import Source

from .agent import Agent
from .config import ConfigError, EdgeConfig, load_config
from .memory import keep_large_blocks
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
    keep_large_blocks()
    try:
        source = make_source(cfg)
        agent = Agent(cfg, source, exit_when_drained=exit_when_drained, overflow=overflow)
    except (SpoolError, KeyError, ValueError, OSError) as exc:  # OSError: metrics port
        print(f"pumpwatch edge: cannot start: {exc}", file=sys.stderr)
        return 2
    return agent.run(_stop_on_signals())


def edge_main(config_path: str) -> int:
    cfg = load_or_exit(config_path)
    if isinstance(cfg, int):
        return cfg
    # a source with an end (duration_s) lets the agent exit once everything is acknowledged
    finite = cfg.source.duration_s is not None
    if cfg.source.kind == "synthetic":
        return run_agent(cfg, synthetic_source, exit_when_drained=finite)
    if cfg.source.kind == "simulated":
        return run_agent(cfg, simulated_source, exit_when_drained=finite)
    print(
        "pumpwatch edge: source.kind = 'replay' needs `pumpwatch replay FILE...`", file=sys.stderr
    )
    return 2


def replay_config(
    cfg: EdgeConfig,
    pump_id: str,
    rec_channels: tuple[str, ...],
    fs: float,
    rpm: float | None,
    *,
    onto: Sequence[str | None] | None = None,
) -> EdgeConfig:
    """The agent config for a replay: only ``pump_id``, the report config at the
    recording's rate, its own spool; the recording's channels mapped onto the pump's.

    Without ``onto`` the pump's channels take the recording's in order. With it
    (``replay --channel SEL=PUMP_CHANNEL``), recording channel ``i`` feeds the pump
    channel named ``onto[i]`` (None: the pump's ``i``-th channel), which keeps its
    full scale; every report carries the pump's asset (its bearings).
    """
    problems: list[str] = []
    pumps = [p for p in cfg.pumps if p.id == pump_id]
    if not pumps:
        raise ConfigError(
            [f"--pump {pump_id!r} is not in the config (pumps: {[p.id for p in cfg.pumps]})"],
            source=cfg.path or "config",
        )
    pump = pumps[0]
    if onto is None:
        n = min(len(pump.channels), len(rec_channels))
        if len(rec_channels) < len(pump.channels):
            log.warning(
                "the recording has %d channel(s), pump %s has %d: replaying the first %d",
                len(rec_channels),
                pump_id,
                len(pump.channels),
                n,
            )
        chans = tuple(
            dataclasses.replace(ch, source=rec_channels[i])
            for i, ch in enumerate(pump.channels[:n])
        )
    else:
        by_name = {ch.name: ch for ch in pump.channels}
        picked = []
        for i, (rec_ch, name) in enumerate(zip(rec_channels, onto, strict=True)):
            if name is None:
                if i >= len(pump.channels):
                    problems.append(f"--channel {rec_ch!r}: pump {pump_id} has only "
                                    f"{len(pump.channels)} channel(s); name one with =CHANNEL")
                    continue
                name = pump.channels[i].name
            if name not in by_name:
                problems.append(f"--channel ...={name}: pump {pump_id} has no channel {name!r} "
                                f"(channels: {list(by_name)})")
                continue
            picked.append(dataclasses.replace(by_name[name], source=rec_ch))
        names = [ch.name for ch in picked]
        if len(set(names)) != len(names):
            problems.append(f"--channel: two recording channels map onto one pump channel "
                            f"({names})")
        chans = tuple(picked)
    pump = dataclasses.replace(pump, channels=chans, rpm=rpm if rpm else pump.rpm)
    rc = cfg.report
    try:
        report = rc.at_rate(fs)
    except ValueError as exc:
        problems.append(f"report config at the recording's {fs:g} Hz: {exc}")
        report = rc
    if problems:
        raise ConfigError(problems, source=cfg.path or "config")
    spool = msgspec.structs.replace(cfg.spool, path=cfg.spool.path.rstrip("/") + "-replay")
    source = msgspec.structs.replace(cfg.source, kind="replay")
    return dataclasses.replace(cfg, pumps=(pump,), report=report, spool=spool, source=source)


def replay_main(
    config_path: str,
    files: list[str],
    *,
    pump: str,
    fs: float | None = None,
    force_fs: bool = False,
    scale: float | None = None,
    rpm: float | None = None,
    speed: float | None = None,
    loop: bool = False,
    channels: Sequence[tuple[str, str | None]] | None = None,
) -> int:
    """Replay recordings through the same agent (own epoch); exits when every report
    was acknowledged (or on SIGTERM/SIGINT; what is unsent stays in the replay spool).

    ``channels``: ``(recording channel selection, pump channel or None)`` pairs
    (``--channel SEL[=PUMP_CHANNEL]``); default: every channel, in order.
    """
    from simulator.recordings import RecordingError
    from simulator.replay import ReplaySource

    cfg0 = load_or_exit(config_path)
    if isinstance(cfg0, int):
        return cfg0
    try:
        src = ReplaySource(
            files, pace=speed, loop=loop, fs=fs, force_fs=force_fs, scale=scale,
            block_size=cfg0.source.block_size,
            channels=None if not channels else [sel for sel, _ in channels],
        )
        onto = None if not channels else [name for _, name in channels]
        cfg = replay_config(cfg0, pump, src.channels, src.fs, rpm, onto=onto)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    except (RecordingError, ValueError) as exc:
        print(f"pumpwatch replay: {exc}", file=sys.stderr)
        return 2
    log.info(
        "replaying %d file(s) at %s as pump %s (%d channels, %g Hz) into %s",
        len(files),
        "full speed" if speed is None else f"{speed:g}x real time",
        pump,
        len(cfg.pumps[0].channels),
        cfg.report.fs,
        cfg.spool.path,
    )
    return run_agent(cfg, lambda _c: src, exit_when_drained=not loop, overflow="block")
