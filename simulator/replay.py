"""The replay source: recorded vibration played back as if from a sensor."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ._pace import Pace, Pacer
from .recordings import Recording, RecordingError, Scale, read_recording
from .source import Block


class ReplaySource:
    """Blocks from one or more recordings in sequence, optionally looping.

    ``ReplaySource(recordings, *, block_size=2560, pace=None, loop=False,
    start_ns=None, fs=None, scale=None, channels=None)``

    * ``recordings``: :class:`Recording` objects or paths (read with ``fs``,
      ``scale``, ``channels``); all must share one sample rate and channel
      count (a device does not change its sensors mid-stream).
    * A block never spans two recordings (the last block of each is short
      when the length is not a multiple of ``block_size``), so every sample
      is delivered exactly once per pass; ``Block.truth`` says which
      recording, at which sample offset, in which pass.
    * ``loop``: False (one pass), True (forever) or a number of passes.
    * ``pace``: ``"realtime"``, a speed factor, or None / ``"fast"``.
    * ``t0_ns``: ``start_ns`` (default: wall clock at the first block) plus
      the stream time of the block's first sample, counted across
      recordings and passes, so timestamps never repeat when looping.
    * ``Block.rpm``: each channel's speed when the recording states one.
    """

    def __init__(
        self,
        recordings: Sequence[Recording | str | Path] | Recording | str | Path,
        *,
        block_size: int = 2560,
        pace: Pace = None,
        loop: bool | int = False,
        start_ns: int | None = None,
        fs: float | None = None,
        force_fs: bool = False,
        scale: Scale = None,
        channels: Sequence[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(recordings, Recording | str | Path):
            recordings = [recordings]
        recs = [
            r
            if isinstance(r, Recording)
            else read_recording(r, fs=fs, scale=scale, channels=channels, force_fs=force_fs)
            for r in recordings
        ]
        if not recs:
            raise ValueError("a replay source needs at least one recording")
        first = recs[0]
        for r in recs[1:]:
            if r.fs != first.fs or len(r.channels) != len(first.channels):
                raise RecordingError(
                    r.path or "<recording>",
                    f"{r.fs:g} Hz x {len(r.channels)} channels does not continue "
                    f"{first.fs:g} Hz x {len(first.channels)} channels of {first.path}",
                )
        if not (isinstance(block_size, int) and block_size >= 1):
            raise ValueError(f"block_size must be a positive integer, got {block_size=}")
        if isinstance(loop, bool):
            self.passes: int | None = None if loop else 1
        else:
            if loop < 1:
                raise ValueError(f"loop must be True, False or a number of passes >= 1, got {loop}")
            self.passes = int(loop)
        self.recordings = tuple(recs)
        self.block_size = block_size
        self.start_ns = start_ns
        self._fs = float(first.fs)
        self._channels = first.channels
        self._pacer = Pacer(pace, clock=clock, sleep=sleep)

    @property
    def channels(self) -> tuple[str, ...]:
        return self._channels

    @property
    def fs(self) -> float:
        return self._fs

    def blocks(self) -> Iterator[Block]:
        stream = 0  # samples delivered so far, across recordings and passes
        if self.start_ns is None:  # the first sample is "acquired" now
            self.start_ns = time.time_ns()
        k = 0
        while self.passes is None or k < self.passes:
            for rec in self.recordings:
                rpm = None if rec.rpm is None else np.full(len(rec.channels), rec.rpm)
                name = str(rec.path) if rec.path else None
                for off in range(0, rec.n_samples, self.block_size):
                    x = np.ascontiguousarray(
                        rec.samples[:, off : off + self.block_size], dtype=np.float32
                    )
                    n = x.shape[1]
                    self._pacer.wait((stream + n) / self._fs)
                    yield Block(
                        samples=x,
                        t0_ns=self.start_ns + round(stream * 1e9 / self._fs),
                        fs=self._fs,
                        channels=self._channels,
                        rpm=rpm,
                        truth={"source": "replay", "recording": name, "offset": off, "pass": k},
                    )
                    stream += n
            k += 1
