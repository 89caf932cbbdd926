"""A per-device budget for dead letters (sans-IO; time passed in).

Bad input must not cost unbounded storage: each device has a token bucket for
dead-letter rows (``rate`` per second, ``burst`` saved up) and one for their
stored bytes. A dead letter over budget is *dropped* (not stored) and counted
per device; the message is still acknowledged, and its confirmable reports are
still confirmed (they are accounted for: the count is the record).
Devices are remembered up to ``max_devices`` (least recently seen forgotten).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field

from cloud.store import DeadLetter

UNKNOWN_DEVICE = "?"  # dead letters whose topic names no device


@dataclass(slots=True)
class _Bucket:
    rows: float
    nbytes: float
    t: float


@dataclass(slots=True)
class BudgetStats:
    admitted: int = 0
    dropped: int = 0
    dropped_bytes: int = 0
    dropped_by_device: dict[str, int] = field(default_factory=dict)


class DeadLetterBudget:
    def __init__(
        self, *, rate: float, burst: float, bytes_per_s: float, max_devices: int = 10_000
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.bytes_per_s = bytes_per_s
        self.bytes_burst = bytes_per_s * max(1.0, burst / rate)
        self.max_devices = max_devices
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()
        self.stats = BudgetStats()

    def _bucket(self, device: str, now: float) -> _Bucket:
        b = self._buckets.pop(device, None)
        if b is None:
            b = _Bucket(self.burst, self.bytes_burst, now)
        else:
            dt = max(0.0, now - b.t)
            b.rows = min(self.burst, b.rows + dt * self.rate)
            b.nbytes = min(self.bytes_burst, b.nbytes + dt * self.bytes_per_s)
            b.t = now
        self._buckets[device] = b
        while len(self._buckets) > self.max_devices:
            self._buckets.popitem(last=False)
        return b

    def admit(self, device: str | None, dead: Iterable[DeadLetter], now: float) -> list[DeadLetter]:
        """The dead letters to store now; the rest are dropped and counted."""
        dev = device or UNKNOWN_DEVICE
        b = self._bucket(dev, now)
        out: list[DeadLetter] = []
        for d in dead:
            size = len(d.payload) + len(d.reason)
            if b.rows >= 1.0 and b.nbytes >= size:
                b.rows -= 1.0
                b.nbytes -= size
                out.append(d)
                self.stats.admitted += 1
                continue
            self.stats.dropped += 1
            self.stats.dropped_bytes += size
            self.stats.dropped_by_device[dev] = self.stats.dropped_by_device.get(dev, 0) + 1
            if len(self.stats.dropped_by_device) > self.max_devices:
                self.stats.dropped_by_device.pop(next(iter(self.stats.dropped_by_device)))
        return out
