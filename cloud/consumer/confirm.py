"""Confirmations to the edge (sans-IO): committed identities in, messages per device out.

The writer calls :meth:`Confirmer.add` for every identity a commit made
durable (a result row, a dead letter naming its report, or a redelivered
report the store already had) and :meth:`Confirmer.take` after the commit:
one message per device, its committed sequence numbers as compact ranges per
stream epoch (:mod:`dsp.confirm`). Each consumer confirms what *it*
committed; the edge takes the union, so several consumers of one stream need
no coordination, and a confirmation sent twice changes nothing.
"""

from __future__ import annotations

from dsp.confirm import RangeSet, encode_confirmation

#: ranges per message: about 20 bytes each on the wire, so far below 128 KB
MAX_RANGES_PER_MESSAGE = 2000


class Confirmer:
    def __init__(self, *, max_ranges: int = MAX_RANGES_PER_MESSAGE) -> None:
        self.max_ranges = max_ranges
        self._pending: dict[str, dict[int, RangeSet]] = {}
        self.confirmed = 0  # identities handed out in messages (repeats counted)
        self.messages = 0

    def add(self, device: str, epoch: int, seq: int) -> None:
        self._pending.setdefault(device, {}).setdefault(epoch, RangeSet()).add(seq)

    def __len__(self) -> int:
        """Devices with something to confirm."""
        return len(self._pending)

    def take(self) -> list[tuple[str, bytes]]:
        """``(device, payload)`` for everything added since the last call (then forgotten)."""
        out: list[tuple[str, bytes]] = []
        for device, epochs in self._pending.items():
            chunk: list[tuple[int, RangeSet]] = []
            n = 0
            for epoch, rs in epochs.items():
                self.confirmed += rs.count()
                part = RangeSet()
                for a, b in rs.ranges():
                    part.add(a, b)
                    n += 1
                    if n >= self.max_ranges:
                        chunk.append((epoch, part))
                        out.append((device, encode_confirmation(device, chunk)))
                        chunk, part, n = [], RangeSet(), 0
                if part:
                    chunk.append((epoch, part))
            if chunk:
                out.append((device, encode_confirmation(device, chunk)))
        self._pending.clear()
        self.messages += len(out)
        return out
