"""Connection limits for the model server: header, body and idle timeouts, a connection cap.

Theory of operation
-------------------
aiohttp's server has a keep-alive timeout but no deadline for a request's head or
body: a client that sends its headers one byte a second (slow-loris) or a large
body slowly holds a connection, and enough of them hold the server. The guard
closes such connections:

* **header timeout** -- a connection must have sent a complete request head
  within ``header_s`` of being accepted (of its previous response, plus the idle
  allowance, on a kept-alive connection). Bytes trickling in do not extend it.
* **body timeout** -- once the head is in, the whole body must arrive within
  ``body_s``.
* **idle timeout** -- a kept-alive connection with no request is closed after
  ``idle_s`` (aiohttp's own keep-alive timer, set to the same value).
* **connection limit** -- beyond ``max_connections`` open connections a new one
  is closed at once.

:class:`Deadlines` is the sans-IO state (time passed in): one deadline per
connection, or none while a request is being handled. :class:`GuardedProtocol`
is the thin adapter that tells it about accepted and lost connections, and
:func:`sweep` closes what :meth:`Deadlines.expired` returns. The server's
middleware reports "head parsed" and "body read" (:meth:`Deadlines.head_done`,
:meth:`Deadlines.body_done`) and "response produced" (:meth:`Deadlines.idle`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Limits:
    header_s: float = 10.0
    body_s: float = 30.0
    idle_s: float = 60.0
    max_connections: int = 256

    def __post_init__(self) -> None:
        for name in ("header_s", "body_s", "idle_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")


class Deadlines:
    """Per-connection deadlines (sans-IO: every method takes the time)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._due: dict[Hashable, tuple[float, str] | None] = {}
        self.refused = 0
        self.timed_out = {"header": 0, "body": 0}

    def __len__(self) -> int:
        return len(self._due)

    def opened(self, conn: Hashable, now: float) -> bool:
        """A connection was accepted; False: over the limit, close it now."""
        if len(self._due) >= self.limits.max_connections:
            self.refused += 1
            return False
        self._due[conn] = (now + self.limits.header_s, "header")
        return True

    def head_done(self, conn: Hashable, now: float) -> None:
        if conn in self._due:
            self._due[conn] = (now + self.limits.body_s, "body")

    def body_done(self, conn: Hashable) -> None:
        if conn in self._due:
            self._due[conn] = None  # being handled: the handler's own limits apply

    def idle(self, conn: Hashable, now: float) -> None:
        """The response is out: the next request head is due after the idle allowance."""
        if conn in self._due:
            self._due[conn] = (now + self.limits.idle_s + self.limits.header_s, "header")

    def closed(self, conn: Hashable) -> None:
        self._due.pop(conn, None)

    def expired(self, now: float) -> list[Hashable]:
        """Connections past their deadline (forgotten here; the caller closes them)."""
        out = []
        for conn, due in list(self._due.items()):
            if due is not None and due[0] <= now:
                self.timed_out[due[1]] += 1
                out.append(conn)
                del self._due[conn]
        return out

    @property
    def sweep_interval_s(self) -> float:
        return min(self.limits.header_s, self.limits.body_s) / 20


class GuardedProtocol(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol; registers the connection with the guard."""

    def __init__(self, inner: asyncio.Protocol, deadlines: Deadlines,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.deadlines = deadlines
        self.clock = clock
        self.transport: asyncio.Transport | None = None
        self.admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.deadlines.opened(transport, self.clock()):
            transport.abort()
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return  # refused at the limit: aiohttp never saw it
        self.deadlines.closed(self.transport)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


async def sweep(deadlines: Deadlines, clock: Callable[[], float] = time.monotonic) -> None:
    """Close expired connections until cancelled."""
    while True:
        await asyncio.sleep(deadlines.sweep_interval_s)
        for conn in deadlines.expired(clock()):
            assert isinstance(conn, asyncio.Transport)
            conn.abort()
