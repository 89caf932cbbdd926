"""Confirmations: the cloud tells a device which of its reports are committed (pure; no I/O).

After the results store commits a report's result (or its dead letter), a
consumer publishes a :class:`Confirmation` on ``{root}/acks/{device}``: per
stream epoch, the committed sequence numbers as compact inclusive ranges
(``[(0, 127), (130, 130)]``). Confirmations are at-least-once and idempotent:
applying one twice, or out of order, or several consumers' confirmations of
different ranges of the same stream, gives the same result (set union).

Wire format: msgpack, positional like the report codec; ``v`` is the schema
major version (later versions only append optional fields).

:class:`RangeSet` is the compact, mergeable set of integers both sides use:
the cloud to gather what it committed, the edge to test what is confirmed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Annotated

import msgspec

from .report import DeviceName

CONFIRM_VERSION = 1
SUPPORTED_CONFIRM_VERSIONS = frozenset({1})

U64 = Annotated[int, msgspec.Meta(ge=0)]  # 64-bit epochs (checked on decode)
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class EpochRanges(msgspec.Struct, frozen=True, array_like=True):
    """Committed sequence numbers of one stream epoch: inclusive ``(first, last)`` ranges."""

    epoch: U64
    ranges: list[tuple[Seq, Seq]]


class Confirmation(msgspec.Struct, frozen=True, array_like=True):
    """One confirmation message (``{root}/acks/{device}``)."""

    v: int
    device: DeviceName
    epochs: list[EpochRanges]

    def count(self) -> int:
        """Sequence numbers covered (for logs and counters)."""
        return sum(b - a + 1 for e in self.epochs for a, b in e.ranges)


class ConfirmDecodeError(ValueError):
    """A payload on the acks topic that is not a valid confirmation."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Confirmation)


def encode_confirmation(device: str, epochs: Iterable[tuple[int, RangeSet]]) -> bytes:
    return _encoder.encode(
        Confirmation(
            CONFIRM_VERSION, device, [EpochRanges(e, list(r.ranges())) for e, r in epochs]
        )
    )


def decode_confirmation(data: bytes) -> Confirmation:
    try:
        msg = _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ConfirmDecodeError(f"invalid confirmation: {exc}") from None
    if msg.v not in SUPPORTED_CONFIRM_VERSIONS:
        raise ConfirmDecodeError(
            f"unknown confirmation schema version v={msg.v!r} "
            f"(supported: {sorted(SUPPORTED_CONFIRM_VERSIONS)})"
        )
    for e in msg.epochs:
        if e.epoch >= 1 << 64:
            raise ConfirmDecodeError(f"epoch {e.epoch} out of 64-bit range")
        for a, b in e.ranges:
            if a > b:
                raise ConfirmDecodeError(f"invalid range ({a}, {b}) in epoch {e.epoch:x}")
    return msg


class RangeSet:
    """A set of non-negative integers kept as sorted, disjoint, non-adjacent inclusive ranges.

    ``add`` is idempotent and order-free; adjacent ranges merge, so a stream
    committed in order is one range however it was split.
    """

    __slots__ = ("_hi", "_lo")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []
        for a, b in ranges:
            self.add(a, b)

    def add(self, lo: int, hi: int | None = None) -> None:
        """Add ``lo..hi`` (inclusive; ``hi`` defaults to ``lo``)."""
        if hi is None:
            hi = lo
        if lo > hi:
            raise ValueError(f"empty range: {lo=} > {hi=}")
        # ranges that overlap or touch [lo, hi]: hi_i >= lo - 1 and lo_i <= hi + 1
        i = bisect.bisect_left(self._hi, lo - 1)
        j = bisect.bisect_right(self._lo, hi + 1)
        if i < j:
            lo = min(lo, self._lo[i])
            hi = max(hi, self._hi[j - 1])
        self._lo[i:j] = [lo]
        self._hi[i:j] = [hi]

    def update(self, other: RangeSet | Iterable[tuple[int, int]]) -> None:
        for a, b in other.ranges() if isinstance(other, RangeSet) else other:
            self.add(a, b)

    def __contains__(self, x: object) -> bool:
        if not isinstance(x, int):
            return False
        i = bisect.bisect_right(self._lo, x) - 1
        return i >= 0 and x <= self._hi[i]

    def ranges(self) -> Iterator[tuple[int, int]]:
        return zip(self._lo, self._hi, strict=True)

    def missing(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Ranges of ``lo..hi`` not in the set."""
        out: list[tuple[int, int]] = []
        cur = lo
        for a, b in self.ranges():
            if b < cur:
                continue
            if a > hi:
                break
            if a > cur:
                out.append((cur, min(a - 1, hi)))
            cur = max(cur, b + 1)
            if cur > hi:
                return out
        if cur <= hi:
            out.append((cur, hi))
        return out

    def count(self) -> int:
        return sum(b - a + 1 for a, b in self.ranges())

    def __len__(self) -> int:
        """Number of ranges (the set's size on the wire), not of integers: see :meth:`count`."""
        return len(self._lo)

    def __bool__(self) -> bool:
        return bool(self._lo)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and self._lo == other._lo and self._hi == other._hi

    def __hash__(self) -> int:
        raise TypeError("RangeSet is mutable")

    def __repr__(self) -> str:
        return f"RangeSet({list(self.ranges())})"
