"""Sample sources for the agent: the simulator, replays, and a cheap synthetic signal.

``synthetic`` is a commissioning and benchmark signal: per channel a 1x line,
its blade-pass line and noise, precomputed once (``period_s`` seconds) and
replayed with advancing timestamps, so producing it costs next to nothing.
Its ``faults`` inject bad samples into chosen channels (``nan``, ``inf``,
``clip``, ``constant``) to exercise the quality flags.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from simulator.source import Block, Source

from .config import EdgeConfig


@dataclass
class SyntheticSource:
    """Deterministic test signal for ``channels`` at ``fs`` Hz (see module doc)."""

    channel_names: Sequence[str]
    sample_rate: float = 25600.0
    block_size: int = 2560
    period_s: float = 1.0
    seed: int = 0
    rpm: float = 2950.0
    vanes: int = 6
    duration_s: float | None = None
    speed: float | None = None  # stream seconds per wall second; None: as fast as possible
    start_ns: int | None = None
    faults: Mapping[str, str] | None = None  # channel -> "nan" | "inf" | "clip" | "constant"
    full_scale: float = 50.0 * 9.80665

    def __post_init__(self) -> None:
        n = max(self.block_size, round(self.period_s * self.sample_rate))
        n -= n % self.block_size
        rng = np.random.default_rng(self.seed)
        t = np.arange(n) / self.sample_rate
        fr = self.rpm / 60.0
        # whole cycles over the period so the loop is seamless
        f1 = round(fr * n / self.sample_rate) * self.sample_rate / n
        ch = len(self.channel_names)
        # row by row in float32: no (channels, n) float64 temporaries at 256 channels
        self._buf = np.empty((ch, n), dtype=np.float32)
        w1 = (2 * np.pi * f1 * t).astype(np.float32)
        wv = (2 * np.pi * self.vanes * f1 * t).astype(np.float32)
        for c in range(ch):
            amp, p1, p2 = (
                rng.uniform(0.5, 3.0),
                rng.uniform(0, 2 * np.pi),
                rng.uniform(0, 2 * np.pi),
            )
            row = self._buf[c]
            row[:] = rng.standard_normal(n, dtype=np.float32)
            row *= 0.2
            row += amp * np.sin(w1 + np.float32(p1))
            row += 0.3 * amp * np.sin(wv + np.float32(p2))
        for name, kind in (self.faults or {}).items():
            i = list(self.channel_names).index(name)
            row = self._buf[i]
            if kind == "nan":
                row[::97] = np.nan
            elif kind == "inf":
                row[::101] = np.inf
            elif kind == "clip":
                row *= 400.0
                np.clip(row, -self.full_scale, self.full_scale, out=row)
            elif kind == "constant":
                row[:] = 0.25
            else:
                raise ValueError(f"unknown synthetic fault {kind!r} for channel {name!r}")

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.channel_names)

    @property
    def fs(self) -> float:
        return self.sample_rate

    def blocks(self) -> Iterator[Block]:
        start = time.time_ns() if self.start_ns is None else self.start_ns
        n_buf = self._buf.shape[1]
        total = None if self.duration_s is None else round(self.duration_s * self.sample_rate)
        i = 0
        t_wall = time.monotonic()
        while total is None or i < total:
            n = self.block_size if total is None else min(self.block_size, total - i)
            j = i % n_buf
            if self.speed is not None:
                due = t_wall + (i + n) / self.sample_rate / self.speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield Block(
                samples=self._buf[:, j : j + n],
                t0_ns=start + round(i * 1e9 / self.sample_rate),
                fs=self.sample_rate,
                channels=self.channels,
            )
            i += n


def _pace_speed(pace: str | float) -> float | None:
    if pace == "fast":
        return None
    if pace == "realtime":
        return 1.0
    return float(pace)


def simulated_source(cfg: EdgeConfig) -> Source:
    """The simulator standing in for sensors: one simulated pump per configured pump.

    A pump's ``simulate`` (a simulator pump TOML path or inline table: faults,
    speed profile, resonances, ...) is layered over what the edge config already
    says about it (name, fs, vanes, speed, bearings, one sensor per channel).
    """
    from simulator.pump import load_pump_config, pump_config_from_dict
    from simulator.simulated import SimulatedSource

    pumps = []
    for p in cfg.pumps:
        base: dict[str, Any] = {
            "name": p.id,
            "fs": cfg.report.fs,
            "sensors": [{"name": ch.name} for ch in p.channels],
        }
        if p.asset.vanes:
            base["vanes"] = p.asset.vanes
        rpm = p.rpm or p.asset.rated_rpm
        if rpm:
            base["rpm"] = rpm
        if p.asset.bearings:
            base["bearings"] = [
                {
                    "n_balls": b.n_balls,
                    "ball_d_mm": b.ball_d_mm,
                    "pitch_d_mm": b.pitch_d_mm,
                    "contact_deg": b.contact_deg,
                    "designation": b.designation,
                    "location": b.location or "DE",
                }
                for b in p.asset.bearings
            ]
        if isinstance(p.simulate, str):
            sim = load_pump_config(p.simulate).to_dict()
            sim.update({"name": p.id, "fs": cfg.report.fs})
            pumps.append(pump_config_from_dict(sim, where=f"pump {p.id} simulate"))
            continue
        extra = dict(p.simulate or {})
        if "speed" in extra:
            base.pop("rpm", None)
        base.update(extra)
        pumps.append(pump_config_from_dict(base, where=f"pump {p.id} simulate"))
    s = cfg.source
    pace: Any = s.pace
    return SimulatedSource(
        pumps,
        seed=s.seed,
        block_size=s.block_size,
        pace=pace,
        duration_s=s.duration_s,
        tachometer=s.tachometer,
    )


def synthetic_source(cfg: EdgeConfig, **kw: Any) -> SyntheticSource:
    names = [ch.source for _p, ch in cfg.channels]
    s = cfg.source
    args: dict[str, Any] = {
        "channel_names": names,
        "sample_rate": cfg.report.fs,
        "block_size": s.block_size,
        "seed": s.seed,
        "duration_s": s.duration_s,
        "speed": _pace_speed(s.pace),
    }
    args.update(kw)
    return SyntheticSource(**args)


def channel_index(cfg: EdgeConfig, source_channels: Sequence[str]) -> NDArray[np.intp]:
    """Rows of the source's blocks, in config channel order; KeyError names what is missing."""
    pos = {name: i for i, name in enumerate(source_channels)}
    missing = [ch.source for _p, ch in cfg.channels if ch.source not in pos]
    if missing:
        raise KeyError(f"the source has no channel(s) {missing}; it offers {list(source_channels)}")
    return np.array([pos[ch.source] for _p, ch in cfg.channels], dtype=np.intp)
