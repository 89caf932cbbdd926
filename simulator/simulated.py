"""The simulated source: one device's pumps, synthesized block by block."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._pace import Pace, Pacer
from .pump import PumpConfig
from .recordings import Recording
from .source import Block
from .synth import PumpSynth

RENDER_AHEAD = 32768  # samples (1.28 s at 25.6 kHz) synthesized per call at least


class SimulatedSource:
    """Blocks of synthesized vibration for one device (one or more pumps).

    ``SimulatedSource(pumps=None, *, seed=0, block_size=2560, pace=None,
    start_ns=None, duration_s=None, tachometer=False)``

    * ``pumps``: a :class:`PumpConfig`, a list of them (all with the same
      ``fs``), or None for one default pump.
    * channels are named ``"<pump>.<sensor>"`` (e.g. ``"pump1.de_h"``);
      :attr:`channel_pumps` and :attr:`channel_sensors` map each channel back,
      :attr:`full_scale` gives each channel's saturation level in m/s^2
      (None: ideal sensor chain).
    * ``pace``: ``"realtime"``, a speed factor (10.0 = ten times real time),
      or None / ``"fast"`` for as fast as possible.
    * ``t0_ns`` of a block is ``start_ns`` (default: wall clock at the first
      block) plus the stream time of its first sample.
    * ``duration_s``: stop after this much stream time (None: run forever).
    * ``tachometer``: fill ``Block.rpm`` with each channel's true speed.
    * ``Block.truth``: ``{"source": "simulated", "seed", "sample_index",
      "channel_pump": [...], "pumps": {name: {"rpm", "severities", "labels",
      "bearing_frequencies_hz": {bpfo, bpfi, bsf, ftf}, "blade_pass_hz",
      "resonances_hz", "fault_frequencies_hz": {kind: Hz of its signature line:
      1x, 2x, 0.5x, blade pass, BPFO, BPFI, 2xBSF (ball), FTF (cage)}}}}``,
      true over the block (speed: its mean; severities: at its middle).

    Deterministic for a seed: the samples do not depend on ``block_size``.
    """

    def __init__(
        self,
        pumps: PumpConfig | Sequence[PumpConfig] | None = None,
        *,
        seed: int = 0,
        block_size: int = 2560,
        pace: Pace = None,
        start_ns: int | None = None,
        duration_s: float | None = None,
        tachometer: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if pumps is None:
            pumps = [PumpConfig.default()]
        elif isinstance(pumps, PumpConfig):
            pumps = [pumps]
        self.pumps: tuple[PumpConfig, ...] = tuple(pumps)
        if not self.pumps:
            raise ValueError("a simulated source needs at least one pump")
        rates = {p.fs for p in self.pumps}
        if len(rates) != 1:
            raise ValueError(
                f"all pumps of one device must share one sample rate, got {sorted(rates)}"
            )
        names = [p.name for p in self.pumps]
        if len(set(names)) != len(names):
            raise ValueError(f"pump names must be unique within a device, got {names}")
        if not (isinstance(block_size, int) and block_size >= 1):
            raise ValueError(f"block_size must be a positive integer, got {block_size=}")
        self.seed = int(seed)
        self.block_size = block_size
        self.start_ns = start_ns
        self.duration_s = duration_s
        self.tachometer = tachometer
        self._fs = float(self.pumps[0].fs)
        self._synths = [PumpSynth(p, seed=self.seed, index=i) for i, p in enumerate(self.pumps)]
        self.channel_pumps = tuple(p.name for p in self.pumps for _ in p.sensors)
        self.channel_sensors = tuple(s.name for p in self.pumps for s in p.sensors)
        self._channels = tuple(
            f"{p}.{s}" for p, s in zip(self.channel_pumps, self.channel_sensors, strict=True)
        )
        self.full_scale: tuple[float | None, ...] = tuple(
            fsc for syn in self._synths for fsc in syn.full_scale
        )
        self._pacer = Pacer(pace, clock=clock, sleep=sleep)
        self._next = 0
        self._buf = np.empty((len(self._channels), 0), dtype=np.float32)
        self._buf_i0 = 0

    @property
    def channels(self) -> tuple[str, ...]:
        return self._channels

    @property
    def fs(self) -> float:
        return self._fs

    @property
    def resonances_hz(self) -> dict[str, list[float]]:
        return {s.cfg.name: [r.freq_hz for r in s.resonances] for s in self._synths}

    def read(self, n: int) -> Block:
        """The next ``n`` samples of every channel, unpaced."""
        i0 = self._next
        if self.start_ns is None:
            self.start_ns = time.time_ns()
        samples = self._take(i0, n)
        truth: dict[str, Any] = {
            "source": "simulated",
            "seed": self.seed,
            "sample_index": i0,
            "channel_pump": list(self.channel_pumps),
            "pumps": {},
        }
        for syn in self._synths:
            truth["pumps"][syn.cfg.name] = syn.truth(i0, n)
        self._next = i0 + n
        rpm = None
        if self.tachometer:
            rpm = np.array([truth["pumps"][p]["rpm"] for p in self.channel_pumps])
        return Block(
            samples=samples,
            t0_ns=self.start_ns + round(i0 * 1e9 / self._fs),
            fs=self._fs,
            channels=self._channels,
            rpm=rpm,
            truth=truth,
        )

    def _take(self, i0: int, n: int) -> NDArray[np.float32]:
        """Samples i0 .. i0+n-1, rendered ahead in chunks of at least ``RENDER_AHEAD``.

        Rendering does not depend on how the stream is cut, so rendering ahead in
        big chunks only saves per-call overhead; small blocks are served from it.
        """
        have = self._buf_i0 + self._buf.shape[1] - i0
        if have < n:
            m = max(n - have, RENDER_AHEAD)
            start = self._buf_i0 + self._buf.shape[1]
            fresh = np.empty((len(self._channels), m), dtype=np.float32)
            row = 0
            for syn in self._synths:
                k = len(syn.cfg.sensors)
                syn.render(start, m, fresh[row : row + k])
                row += k
            keep = self._buf[:, i0 - self._buf_i0 :]
            self._buf = np.concatenate([keep, fresh], axis=1) if keep.shape[1] else fresh
            self._buf_i0 = i0
        a = i0 - self._buf_i0
        return self._buf[:, a : a + n].copy()

    def blocks(self) -> Iterator[Block]:
        total = None if self.duration_s is None else round(self.duration_s * self._fs)
        if self.start_ns is None:  # the first sample is acquired now, delivered a block later
            self.start_ns = time.time_ns()
        while total is None or self._next < total:
            n = self.block_size if total is None else min(self.block_size, total - self._next)
            self._pacer.wait((self._next + n) / self._fs)
            yield self.read(n)


def simulate_recording(
    pump: PumpConfig | None = None, seconds: float = 10.0, *, seed: int = 0
) -> Recording:
    """``seconds`` of one pump as a :class:`Recording` whose meta carries the ground truth.

    meta: ``source``, ``seed``, ``pump`` (the config), ``asset`` (the report's
    asset descriptor), ``rpm`` (mean true speed), ``faults`` (kind, final
    severity, onset, ramp, progression, bearing), ``severities_at_end``,
    ``bearing_frequencies_hz`` ({bpfo, bpfi, bsf, ftf} of the first bearing at
    ``rpm``), ``blade_pass_hz``, ``resonances_hz``, ``full_scale_ms2``.
    """
    cfg = pump or PumpConfig.default()
    if not (seconds > 0 and np.isfinite(seconds)):
        raise ValueError(f"seconds must be > 0, got {seconds=}")
    n = round(seconds * cfg.fs)
    src = SimulatedSource(cfg, seed=seed, start_ns=0)
    block = src.read(n)
    truth = block.truth["pumps"][cfg.name]
    rpm = float(truth["rpm"])
    meta: dict[str, Any] = {
        "source": "pumpwatch simulator",
        "seed": seed,
        "pump": cfg.to_dict(),
        "asset": cfg.asset_descriptor(),
        "rpm": rpm,
        "faults": [dataclasses.asdict(f) for f in cfg.faults],
        "severities_at_end": src._synths[0].severity(n / cfg.fs),
        "bearing_frequencies_hz": cfg.bearing_frequencies_hz(rpm),
        "blade_pass_hz": truth["blade_pass_hz"],
        "resonances_hz": truth["resonances_hz"],
        "full_scale_ms2": list(src.full_scale),
    }
    return Recording(
        samples=block.samples,
        fs=cfg.fs,
        channels=cfg.channels,
        rpm=rpm,
        meta=meta,
        layout="npz",
    )
