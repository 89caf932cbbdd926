"""The live stream: one poller over the store, fanned out to Server-Sent Events clients.

Theory of operation
-------------------
* **Cursor.** An event id is ``"{R}.{A}"``: every result with ``stored_ns <=
  R`` and every alarm write with ``updated_ns <= A`` has been sent before or
  with this event. Within one poll's batch every event but the last carries
  the cursor from *before* the batch and the last the cursor *after* it, so
  a client resuming from any id gets at least everything it missed (possibly
  a few events again: clients dedupe results on their identity and alarms
  on ``(id, updated_ms)``).
* **One poller** (:class:`StreamHub`) reads the store's watermarks (newest
  ``stored_ns`` and alarm ``updated_ns``: two index probes) every ``poll_s``
  and, when they moved, reads what was stored after ``R - lag_s`` (an index
  range on ``stored_ns``, the same query on SQLite and PostgreSQL). The
  look-back catches a commit whose ``stored_ns`` was stamped before a commit
  that became visible earlier (several consumers writing; the store stamps
  inside the transaction, so a commit is visible at most its own duration
  after its stamp); identities already sent within the look-back are
  skipped. A straggler does not move the watermarks, so the hub keeps
  polling for ``lag_s`` after they last moved, and every 5 s regardless.
  Polls are paced to at least twice their own duration, so a slow store
  costs latency, not a pegged core. This is polling on a stamped index, not
  LISTEN/NOTIFY: it needs no connection held open per dashboard, loses
  nothing while the dashboard is disconnected (it resumes from its cursor),
  and costs an idle store two index probes per poll.
* **Fan-out.** Every subscriber has a bounded queue. A subscriber that falls
  ``queue_size`` events behind is dropped: its response ends and the browser's
  ``EventSource`` reconnects with ``Last-Event-ID``, which is served from the
  store (up to ``catchup_limit`` rows; beyond that a ``reset`` event tells
  the client to reload its state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

import msgspec

from cloud.store import AlarmRow, Identity, ResultRow, StoreError

from ._store import StoreHandle
from .views import alarm_json, result_json

log = logging.getLogger(__name__)

_json = msgspec.json.Encoder().encode


class CursorError(ValueError):
    """A Last-Event-ID that is not ``"{int}.{int}"``."""


def format_cursor(results_ns: int, alarms_ns: int) -> str:
    return f"{results_ns}.{alarms_ns}"


def parse_cursor(text: str) -> tuple[int, int]:
    parts = text.strip().split(".")
    if len(parts) != 2 or not all(p.isdigit() and len(p) <= 20 for p in parts):
        raise CursorError(f"expected '<results_ns>.<alarms_ns>', got {text[:60]!r}")
    return int(parts[0]), int(parts[1])


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # "hello", "result", "alarm", "reset", "rollout"
    id: str
    data: bytes

    def encode(self) -> bytes:
        return b"event: %s\nid: %s\ndata: %s\n\n" % (
            self.kind.encode(), self.id.encode(), self.data,
        )


def _events(
    results: list[ResultRow], alarms: list[AlarmRow], before: str, after: str
) -> list[Event]:
    out = [Event("result", before, _json(result_json(r))) for r in results]
    out += [Event("alarm", before, _json(alarm_json(a))) for a in alarms]
    if out:
        last = out[-1]
        out[-1] = Event(last.kind, after, last.data)
    return out


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue[Event | None]
    dropped: bool = False


@dataclass
class HubStats:
    polls: int = 0
    results_sent: int = 0
    alarms_sent: int = 0
    subscribers_dropped: int = 0
    errors: int = 0
    last_error: str = ""
    extra: dict[str, int] = field(default_factory=dict)


class StreamHub:
    """Polls the store for new results and alarm writes and fans them out."""

    def __init__(
        self,
        store: StoreHandle,
        *,
        poll_s: float = 0.25,
        lag_s: float = 5.0,
        queue_size: int = 2000,
        batch_limit: int = 5000,
        catchup_limit: int = 5000,
    ) -> None:
        self._store = store
        self._poll_s = poll_s
        self._lag_s = lag_s
        self._lag_ns = int(lag_s * 1e9)
        self._queue_size = queue_size
        self._batch_limit = batch_limit
        self.catchup_limit = catchup_limit
        self._subs: set[Subscription] = set()
        self._sent_results: dict[Identity, int] = {}
        self._sent_alarms: dict[tuple[str, int], int] = {}
        self._results_ns = 0
        self._alarms_ns = 0
        self._scan_from: int | None = None
        self.ready = asyncio.Event()
        self.stats = HubStats()

    @property
    def cursor(self) -> tuple[int, int]:
        return self._results_ns, self._alarms_ns

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def subscribe(self) -> Subscription:
        sub = Subscription(asyncio.Queue(self._queue_size))
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def close_all(self) -> None:
        """End every subscriber's response (shutdown)."""
        for sub in list(self._subs):
            self._subs.discard(sub)
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.queue.put_nowait(None)

    def announce(self, kind: str, data: bytes) -> None:
        """Send every subscriber an event that is not in the store (``rollout``): it carries
        the current cursor, so a resume neither skips nor replays anything because of it,
        and it is not replayed itself."""
        self._broadcast([Event(kind, format_cursor(*self.cursor), data)])

    def _broadcast(self, events: list[Event]) -> None:
        for sub in list(self._subs):
            for ev in events:
                try:
                    sub.queue.put_nowait(ev)
                except asyncio.QueueFull:
                    # Too slow: end its response; EventSource resumes from the store.
                    sub.dropped = True
                    self._subs.discard(sub)
                    self.stats.subscribers_dropped += 1
                    while not sub.queue.empty():
                        sub.queue.get_nowait()
                    sub.queue.put_nowait(None)
                    break

    async def run(self) -> None:
        """Poll until cancelled; store errors are logged and retried."""
        marks: tuple[int, int] | None = None
        last_poll = 0.0
        busy_until = 0.0  # keep polling until then: stragglers behind the watermarks
        while True:
            pause = self._poll_s
            try:
                store = await self._store.get()
                if not self.ready.is_set():
                    self._results_ns, self._alarms_ns = await store.watermarks()
                    await self.poll_once(broadcast=False)  # the look-back is old news
                    self.ready.set()
                m = await store.watermarks()
                now = time.monotonic()
                if m != marks:
                    busy_until = now + self._lag_s + self._poll_s
                if m != marks or now < busy_until or now - last_poll > 5.0:
                    marks, last_poll = m, now
                    while await self.poll_once():
                        pass  # a full batch: more is waiting
                    pause = max(pause, 2 * (time.monotonic() - now))
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                self.stats.errors += 1
                if str(exc) != self.stats.last_error:
                    log.warning("live stream cannot read the store: %s", exc)
                self.stats.last_error = str(exc)
                pause = 1.0
            await asyncio.sleep(pause)

    async def poll_once(self, *, broadcast: bool = True) -> bool:
        """Read and broadcast one batch; True when the batch hit its limit (poll again)."""
        self.stats.polls += 1
        store = await self._store.get()
        r_from = self._scan_from if self._scan_from is not None else (
            self._results_ns - self._lag_ns)
        rows = await store.results_stored_after(max(r_from, -1), limit=self._batch_limit)
        a_from = self._alarms_ns - self._lag_ns
        alarms = await store.alarms(since_updated_ns=max(a_from, -1), limit=self._batch_limit)
        # From here to the broadcast: no await, so subscribe() sees a consistent cursor.
        new_rows = [r for r in rows if r.identity not in self._sent_results]
        new_alarms = [a for a in alarms if (a.id, a.updated_ns) not in self._sent_alarms]
        before = format_cursor(*self.cursor)
        for r in new_rows:
            self._sent_results[r.identity] = r.stored_ns
            self._results_ns = max(self._results_ns, r.stored_ns)
        for a in new_alarms:
            self._sent_alarms[(a.id, a.updated_ns)] = a.updated_ns
            self._alarms_ns = max(self._alarms_ns, a.updated_ns)
        more = len(rows) >= self._batch_limit
        self._scan_from = rows[-1].stored_ns - 1 if more else None
        # Keep what a later poll may read again: the look-back.
        keep = self._results_ns - self._lag_ns
        if self._scan_from is not None:
            keep = min(keep, self._scan_from)
        self._sent_results = {k: t for k, t in self._sent_results.items() if t >= keep}
        a_keep = self._alarms_ns - self._lag_ns
        self._sent_alarms = {k: t for k, t in self._sent_alarms.items() if t >= a_keep}
        events = _events(new_rows, new_alarms, before, format_cursor(*self.cursor))
        self.stats.results_sent += len(new_rows)
        self.stats.alarms_sent += len(new_alarms)
        if events and broadcast:
            self._broadcast(events)
        return more

    async def catch_up(self, since: tuple[int, int], upto: tuple[int, int]) -> list[Event]:
        """What a client resuming at ``since`` missed up to the hub's cursor ``upto``."""
        store = await self._store.get()
        rows = await store.results_stored_after(
            since[0], upto_ns=upto[0], limit=self.catchup_limit + 1
        )
        alarms = await store.alarms(
            since_updated_ns=since[1], upto_updated_ns=upto[1], limit=self.catchup_limit + 1
        )
        if len(rows) > self.catchup_limit or len(alarms) > self.catchup_limit:
            reason = _json({"reason": "too far behind; reload state from the API"})
            return [Event("reset", format_cursor(*upto), reason)]
        return _events(rows, alarms, format_cursor(*since), format_cursor(*upto))


async def event_stream(
    hub: StreamHub, resume: tuple[int, int] | None, *, heartbeat_s: float = 15.0
) -> AsyncGenerator[bytes, None]:
    """The bytes of one client's SSE response (until the hub drops it or it disconnects)."""
    await hub.ready.wait()
    sub = hub.subscribe()
    upto = hub.cursor  # consistent with the subscription: taken with no await between
    try:
        yield b"retry: 1000\n\n"
        if resume is None:
            hello = {"cursor": format_cursor(*upto), "subscribers": hub.subscribers}
            yield Event("hello", format_cursor(*upto), _json(hello)).encode()
        else:
            for missed in await hub.catch_up(resume, upto):
                yield missed.encode()
        while True:
            try:
                ev = await asyncio.wait_for(sub.queue.get(), heartbeat_s)
            except TimeoutError:
                yield b": ping\n\n"
                continue
            if ev is None:
                return
            yield ev.encode()
    finally:
        hub.unsubscribe(sub)


@contextlib.asynccontextmanager
async def running_hub(hub: StreamHub) -> AsyncIterator[StreamHub]:
    task = asyncio.create_task(hub.run(), name="dashboard-stream-hub")
    try:
        yield hub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
