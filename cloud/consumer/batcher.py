"""Sans-IO batcher: reports in, invocation batches out, time passed in.

Theory of operation
-------------------
There is at most one open batch per :class:`Target` (endpoint, model bundle).
A batch is emitted, whichever comes first, when

* it holds ``max_size`` items (reason ``"size"``);
* the next item would push it past ``max_bytes`` (reason ``"bytes"``; the
  open batch goes out and the item starts a new one) or it reaches exactly
  ``max_bytes``;
* ``max_delay`` seconds have passed since its first item (reason ``"delay"``):
  :meth:`Batcher.due` emits those, and :meth:`Batcher.add` emits a target's
  overdue batch before adding to it, so no batch ever spans more than
  ``max_delay`` whether or not the caller's timer fired in time;
* the caller :meth:`Batcher.flush` es (reason ``"flush"``).

``now`` is any monotonic clock in seconds; the batcher never reads a clock.
The batch contents depend only on the order of items and on the times given,
never on how the calls are split (STYLE.md rule 2), which the tests check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

FlushReason = Literal["size", "bytes", "delay", "flush"]


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """Where a batch goes: a SageMaker endpoint and, optionally, a model bundle."""

    endpoint: str
    model: str | None = None

    def __str__(self) -> str:
        return self.endpoint if self.model is None else f"{self.endpoint}/{self.model}"


class Batchable(Protocol):
    @property
    def target(self) -> Target: ...

    @property
    def nbytes(self) -> int: ...


T = TypeVar("T", bound=Batchable)


@dataclass(slots=True)
class Batch(Generic[T]):
    target: Target
    items: list[T]
    nbytes: int  # request envelope included
    opened: float  # ``now`` of the first item
    reason: FlushReason = "flush"

    def __len__(self) -> int:
        return len(self.items)


@dataclass(slots=True)
class BatcherStats:
    items: int = 0
    batches: int = 0
    by_reason: dict[str, int] = field(
        default_factory=lambda: {"size": 0, "bytes": 0, "delay": 0, "flush": 0}
    )
    open_items: int = 0


# InvokeEndpoint's request limit; the default leaves room for headers.
INVOKE_MAX_BYTES = 6 * 1024 * 1024


class Batcher(Generic[T]):
    """See the module docstring. Keyword-only settings; seconds and bytes."""

    def __init__(
        self,
        *,
        max_size: int = 64,
        max_delay: float = 0.05,
        max_bytes: int = 5 * 1024 * 1024,
        overhead: int = 32,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size=}")
        if max_delay < 0:
            raise ValueError(f"max_delay must be >= 0 s, got {max_delay=}")
        if not overhead < max_bytes <= INVOKE_MAX_BYTES:
            raise ValueError(
                f"max_bytes must be in ({overhead}, {INVOKE_MAX_BYTES}], got {max_bytes=}"
            )
        self.max_size = max_size
        self.max_delay = max_delay
        self.max_bytes = max_bytes
        self.overhead = overhead
        self._open: dict[Target, Batch[T]] = {}
        self.stats = BatcherStats()

    def _emit(self, batch: Batch[T], reason: FlushReason, out: list[Batch[T]]) -> None:
        del self._open[batch.target]
        batch.reason = reason
        self.stats.batches += 1
        self.stats.by_reason[reason] += 1
        self.stats.open_items -= len(batch.items)
        out.append(batch)

    def add(self, item: T, now: float) -> list[Batch[T]]:
        """Add one item; returns the batches this completes (possibly none)."""
        size = item.nbytes
        if size + self.overhead > self.max_bytes:
            raise ValueError(
                f"item of {size} bytes can never fit a batch of max_bytes={self.max_bytes}"
            )
        out: list[Batch[T]] = []
        target = item.target
        batch = self._open.get(target)
        if batch is not None and now - batch.opened >= self.max_delay:
            self._emit(batch, "delay", out)
            batch = None
        if batch is not None and batch.nbytes + size > self.max_bytes:
            self._emit(batch, "bytes", out)
            batch = None
        if batch is None:
            batch = Batch(target=target, items=[], nbytes=self.overhead, opened=now)
            self._open[target] = batch
        batch.items.append(item)
        batch.nbytes += size
        self.stats.items += 1
        self.stats.open_items += 1
        if len(batch.items) >= self.max_size:
            self._emit(batch, "size", out)
        elif batch.nbytes >= self.max_bytes:
            self._emit(batch, "bytes", out)
        return out

    def add_many(self, items: Iterable[T], now: float) -> list[Batch[T]]:
        out: list[Batch[T]] = []
        for item in items:
            out += self.add(item, now)
        return out

    def due(self, now: float) -> list[Batch[T]]:
        """Batches whose ``max_delay`` has run out at ``now``, oldest first."""
        out: list[Batch[T]] = []
        for batch in sorted(self._open.values(), key=lambda b: (b.opened, b.target)):
            if now - batch.opened >= self.max_delay:
                self._emit(batch, "delay", out)
        return out

    def next_deadline(self) -> float | None:
        """When the oldest open batch becomes due (None: nothing open)."""
        if not self._open:
            return None
        return min(b.opened for b in self._open.values()) + self.max_delay

    def flush(self) -> list[Batch[T]]:
        """Every open batch, now (shutdown)."""
        out: list[Batch[T]] = []
        for batch in sorted(self._open.values(), key=lambda b: (b.opened, b.target)):
            self._emit(batch, "flush", out)
        return out

    def __len__(self) -> int:
        """Items waiting in open batches."""
        return self.stats.open_items
