"""Windows in, encoded reports out: dsp.analyze vectorized over channels, in chunks.

Also the *progress mark*: a tiny file in the spool directory saying which
report sequence numbers are being computed right now. If the agent dies
(``kill -9``, power loss) between taking an interval and spooling its reports,
the next start reads the mark and logs how many reports were lost and which.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

import dsp

from .config import EdgeConfig

log = logging.getLogger(__name__)

Record = tuple[int, int, bytes]  # (epoch, seq, encoded report)


class ReportBuilder:
    """Turns one report interval of every channel into encoded reports with fresh seqs.

    Keeps each channel's envelope band tracker state (:class:`dsp.BandState`)
    from one interval to the next, so a steady machine keeps one demodulation
    band; a window marked ``after_restart`` (stream start, gap, rate change)
    starts the tracking afresh.
    """

    def __init__(self, cfg: EdgeConfig, epoch: int, *, first_seq: int = 0) -> None:
        self.cfg = cfg
        self.epoch = epoch
        self.seq = first_seq
        self.chunk = cfg.pipeline.chunk_channels
        self.names = [(p.id, ch.name) for p, ch in cfg.channels]
        self.specs = [
            dsp.ChannelSpec(asset=p.asset, rpm=p.rpm, rpm_source="given", full_scale=ch.full_scale)
            for p, ch in cfg.channels
        ]
        self.intervals = 0
        self.band_states: list[dsp.BandState | None] = [None] * len(self.specs)

    def reset_tracking(self) -> None:
        """Forget every channel's envelope band (the next interval searches afresh)."""
        self.band_states = [None] * len(self.specs)

    @property
    def n_channels(self) -> int:
        return len(self.specs)

    def build(
        self,
        x: NDArray[np.floating],
        t0_ns: int,
        *,
        after_restart: bool = False,
        rpm: NDArray[np.float64] | None = None,
    ) -> list[Record]:
        """Reports for ``x`` of shape ``(channels, interval_samples)`` starting at ``t0_ns``."""
        seq0 = self.seq
        out: list[Record] = []
        for lo in range(0, self.n_channels, self.chunk):
            part_rpm = None if rpm is None else rpm[lo : lo + self.chunk]
            out += self.build_part(
                lo,
                x[lo : lo + self.chunk],
                t0_ns,
                seq0=seq0,
                after_restart=after_restart,
                rpm=part_rpm,
            )
        self.seq += self.n_channels
        self.intervals += 1
        return out

    def build_part(
        self,
        lo: int,
        x: NDArray[np.floating],
        t0_ns: int,
        *,
        seq0: int,
        after_restart: bool = False,
        rpm: NDArray[np.float64] | None = None,
    ) -> list[Record]:
        """Reports for channels ``lo .. lo + len(x) - 1`` of the interval whose first
        report is ``seq0`` (channel ``c`` gets ``seq0 + c``). Does not advance :attr:`seq`."""
        specs = self.specs[lo : lo + x.shape[0]]
        if rpm is not None:
            specs = [
                dataclasses.replace(s, rpm=float(r), rpm_source="measured")
                if np.isfinite(r) and r > 0
                else s
                for s, r in zip(specs, rpm, strict=True)
            ]
        rc = self.cfg.report
        out: list[Record] = []
        hi = lo + x.shape[0]
        results = dsp.analyze(
            x, rc, specs, after_restart=after_restart, band_state=self.band_states[lo:hi]
        )
        self.band_states[lo:hi] = [r.band_state for r in results]
        for i, (res, spec) in enumerate(zip(results, specs, strict=True)):
            pump, channel = self.names[lo + i]
            seq = seq0 + lo + i
            report = dsp.make_report(
                res,
                rc,
                spec,
                device=self.cfg.device,
                epoch=self.epoch,
                seq=seq,
                site=self.cfg.site,
                pump=pump,
                channel=channel,
                t0_ns=t0_ns,
            )
            out.append((self.epoch, seq, dsp.encode_report(report)))
        return out


_MARK = struct.Struct("<QQQB")  # epoch, first seq, end seq, state
COMPUTING, SPOOLED = 1, 2


class ProgressMark:
    """``<spool>/progress``: (epoch, seq range, computing|spooled), checksummed, rewritten
    in place. No fsync: it only feeds a log line, and survives ``kill -9`` as written."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "progress"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def read(self) -> tuple[int, int, int, int] | None:
        data = os.pread(self._fd, _MARK.size + 4, 0)
        if len(data) != _MARK.size + 4:
            return None
        (crc,) = struct.unpack_from("<I", data, _MARK.size)
        if zlib.crc32(data[: _MARK.size]) != crc:
            return None
        epoch, first, end, state = _MARK.unpack_from(data)
        return epoch, first, end, state

    def write(self, epoch: int, first: int, end: int, state: int) -> None:
        body = _MARK.pack(epoch, first, end, state)
        os.pwrite(self._fd, body + struct.pack("<I", zlib.crc32(body)), 0)

    def report_previous(self) -> int:
        """Log what the previous run lost while computing; returns the report count."""
        mark = self.read()
        if mark is None or mark[3] != COMPUTING:
            return 0
        epoch, first, end, _ = mark
        lost = end - first
        log.warning(
            "previous run (epoch %x) stopped while computing %d reports (seq %d..%d): "
            "they were never spooled and are lost",
            epoch,
            lost,
            first,
            end - 1,
        )
        return lost

    def close(self) -> None:
        os.close(self._fd)
