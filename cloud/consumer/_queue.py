"""A bounded thread -> asyncio handoff that can report itself.

The MQTT client runs its network loop on its own thread; messages cross into
the event loop here. When the queue is full the producing thread *blocks*
(it stops reading its socket, so TCP and the broker's in-flight window push
back): a QoS 1 message must never be dropped after it was delivered to us,
because the broker will not resend it on the same connection. ``drops`` is
therefore always zero for this queue; ``blocked_s`` says how long the
producer waited instead.

The handoff also keeps a *byte* budget (``max_bytes``): ``put(item, nbytes)``
blocks while the bytes taken and not yet given back with
:meth:`Handoff.release_bytes` would exceed it. The consumer gives bytes back
when it acknowledges (or forgets) a delivery, so memory is bounded by the
unacknowledged payload bytes, not by message counts (one message may exceed
the budget alone when nothing else is held).
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

    def __init__(
        self, capacity: int, loop: asyncio.AbstractEventLoop, *, max_bytes: int | None = None
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity=}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._bytes = 0  # taken by put, not yet released
        self._bytes_cv = threading.Condition()
        self._loop = loop
        self._items: collections.deque[tuple[float, T, int]] = collections.deque()
        self._slots = threading.Semaphore(capacity)
        self._ready = asyncio.Event()
        self._closed = threading.Event()
        self._peak = 0
        self._total = 0
        self._blocked_s = 0.0

    def put(self, item: T, nbytes: int = 0) -> bool:
        """Enqueue from a foreign thread; blocks while full (items or bytes). False once
        closed."""
        if not self._slots.acquire(blocking=False):
            t0 = time.monotonic()
            while not self._slots.acquire(timeout=0.1):
                if self._closed.is_set():
                    return False
            self._blocked_s += time.monotonic() - t0
        if not self._take_bytes(nbytes) or self._closed.is_set():
            self._slots.release()
            return False
        self._items.append((time.monotonic(), item, nbytes))  # deque.append is thread-safe
        self._loop.call_soon_threadsafe(self._ready.set)
        return True

    async def get_batch(self, max_items: int, max_bytes: int | None = None) -> list[T]:
        """Wait for at least one item; return up to ``max_items`` in arrival order, and
        (always at least one) no more than ``max_bytes`` of their ``put`` sizes."""
        while not self._items:
            self._ready.clear()
            if self._items:
                break
            await self._ready.wait()
        out: list[T] = []
        depth = len(self._items)
        self._peak = max(self._peak, depth)
        taken = 0
        while self._items and len(out) < max_items:
            nbytes = self._items[0][2]
            if out and max_bytes is not None and taken + nbytes > max_bytes:
                break
            out.append(self._items.popleft()[1])
            taken += nbytes
        self._total += len(out)
        for _ in out:
            self._slots.release()
        return out

    def _take_bytes(self, nbytes: int) -> bool:
        if self.max_bytes is None or nbytes <= 0:
            return True
        with self._bytes_cv:
            t0 = None
            while self._bytes and self._bytes + nbytes > self.max_bytes:
                if self._closed.is_set():
                    return False
                t0 = t0 if t0 is not None else time.monotonic()
                self._bytes_cv.wait(0.1)
            self._bytes += nbytes
        if t0 is not None:
            self._blocked_s += time.monotonic() - t0
        return True

    def release_bytes(self, nbytes: int) -> None:
        """Give back bytes of items the consumer no longer holds (acked or forgotten)."""
        if self.max_bytes is None or nbytes <= 0:
            return
        with self._bytes_cv:
            self._bytes = max(0, self._bytes - nbytes)
            self._bytes_cv.notify_all()

    @property
    def held_bytes(self) -> int:
        return self._bytes

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


class JobQueue(Generic[T]):
    """Bounded FIFO between asyncio tasks: ``await put`` waits while full (backpressure
    on the producers: invocations and ingest), and it reports itself like :class:`Handoff`."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity=}")
        self.capacity = capacity
        self._q: asyncio.Queue[T] = asyncio.Queue(capacity)
        self._peak = 0
        self._total = 0
        self._blocked_s = 0.0
        self._stamps: collections.deque[float] = collections.deque()  # put times, FIFO

    async def put(self, item: T) -> None:
        now = time.monotonic()
        if self._q.full():
            await self._q.put(item)
            self._blocked_s += time.monotonic() - now
        else:
            self._q.put_nowait(item)
        self._stamps.append(now)
        self._peak = max(self._peak, self._q.qsize())

    async def get(self) -> T:
        item = await self._q.get()
        self._got()
        return item

    def get_nowait(self) -> T:
        item = self._q.get_nowait()
        self._got()
        return item

    def _got(self) -> None:
        self._total += 1
        if self._stamps:
            self._stamps.popleft()

    def empty(self) -> bool:
        return self._q.empty()

    def qsize(self) -> int:
        return self._q.qsize()

    def stats(self) -> QueueStats:
        oldest = time.monotonic() - self._stamps[0] if self._stamps else 0.0
        return QueueStats(
            depth=self._q.qsize(), peak=self._peak, capacity=self.capacity,
            total=self._total, drops=0, oldest_age_s=oldest, blocked_s=self._blocked_s,
        )
