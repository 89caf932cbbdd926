"""A bounded thread -> asyncio handoff that can report itself.

The MQTT client runs its network loop on its own thread; messages cross into
the event loop here. When the queue is full the producing thread *blocks*
(it stops reading its socket, so TCP and the broker's in-flight window push
back): a QoS 1 message must never be dropped after it was delivered to us,
because the broker will not resend it on the same connection. ``drops`` is
therefore always zero for this queue; ``blocked_s`` says how long the
producer waited instead.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int
    peak: int
    capacity: int
    total: int
    drops: int
    oldest_age_s: float
    blocked_s: float


class Handoff(Generic[T]):
    """Bounded FIFO: ``put`` from any thread (blocking when full), ``get`` from the loop."""

    def __init__(self, capacity: int, loop: asyncio.AbstractEventLoop) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity=}")
        self.capacity = capacity
        self._loop = loop
        self._items: collections.deque[tuple[float, T]] = collections.deque()
        self._slots = threading.Semaphore(capacity)
        self._ready = asyncio.Event()
        self._closed = threading.Event()
        self._peak = 0
        self._total = 0
        self._blocked_s = 0.0

    def put(self, item: T) -> bool:
        """Enqueue from a foreign thread; blocks while full. False once closed."""
        if not self._slots.acquire(blocking=False):
            t0 = time.monotonic()
            while not self._slots.acquire(timeout=0.1):
                if self._closed.is_set():
                    return False
            self._blocked_s += time.monotonic() - t0
        if self._closed.is_set():
            self._slots.release()
            return False
        self._items.append((time.monotonic(), item))  # deque.append is thread-safe
        self._loop.call_soon_threadsafe(self._ready.set)
        return True

    async def get_batch(self, max_items: int) -> list[T]:
        """Wait for at least one item; return up to ``max_items`` in arrival order."""
        while not self._items:
            self._ready.clear()
            if self._items:
                break
            await self._ready.wait()
        out: list[T] = []
        depth = len(self._items)
        self._peak = max(self._peak, depth)
        while self._items and len(out) < max_items:
            out.append(self._items.popleft()[1])
        self._total += len(out)
        for _ in out:
            self._slots.release()
        return out

    def close(self) -> None:
        """Unblock producers; further puts return False."""
        self._closed.set()

    def stats(self) -> QueueStats:
        items = self._items
        try:
            oldest = time.monotonic() - items[0][0] if items else 0.0
        except IndexError:
            oldest = 0.0
        depth = len(items)
        return QueueStats(
            depth=depth,
            peak=max(self._peak, depth),
            capacity=self.capacity,
            total=self._total,
            drops=0,
            oldest_age_s=oldest,
            blocked_s=self._blocked_s,
        )
