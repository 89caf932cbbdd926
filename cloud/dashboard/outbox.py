"""The alarm-change outbox: which stored changes to hand to the broker, and when (sans-IO).

Theory of operation
-------------------
The results store is the outbox: every operator's change
(:meth:`cloud.store.Store.change_alarm`) is stored with the asset alarm as it was
after it and no ``published_ns``: it is *pending* until the broker acknowledges it.
:class:`Outbox` decides what the publisher (:mod:`.publish`, the thin MQTT adapter)
does with the pending changes it reads from the store, oldest first:

* **Order.** Changes are handed over in the store's order (``at_ns``: the alarm
  stamp, strictly increasing across every writer), at most ``window`` unacknowledged
  at a time, only while connected.
* **Reconnects.** paho keeps a message it handed over and sends it again (same
  packet id) on the next connection, before anything new. After a reconnect the
  outbox hands over nothing new until every change carried over from the earlier
  connection is acknowledged, so a newer change never overtakes an older one.
* **Acknowledged means published.** A PUBACK moves a change to the marks the
  adapter writes to the store (``puback``, or ``refused`` for a reason code >=
  0x80: not retried, counted and logged); until the mark is written the change
  stays known here, so a failed store write is retried and never republished.
* **Bounded.** The store keeps the pending changes; the adapter drops (marks
  ``dropped:age`` / ``dropped:over_bound``) those older than the age bound or beyond
  the newest ``max_pending``, counted by reason. ``depth`` and ``oldest_ns`` are the
  store's pending count and oldest change.

Delivery is at least once: a change whose PUBACK was lost to a dashboard crash (or
published by two dashboards on one store) is published again. Each message carries
its id, ``event.alarm_id`` + ``event.at_ns`` (unique per change): receivers dedupe on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cloud.store import AlarmEvent, AlarmRow

Key = tuple[str, int]  # (alarm_id, at_ns): a change's id
Entry = tuple[AlarmRow, AlarmEvent]


def key_of(event: AlarmEvent) -> Key:
    return (event.alarm_id, event.at_ns)


@dataclass(slots=True)
class OutboxStats:
    depth: int = 0  # pending in the store (last read)
    oldest_ns: int | None = None  # the oldest pending change's time
    in_flight: int = 0  # handed to the broker connection, not acknowledged
    handed: int = 0  # publishes handed over (a change handed again after a restart counts again)
    published: int = 0  # acknowledged by the broker (PUBACK success)
    refused: int = 0  # PUBACK with a failure reason code, or no topic could be built
    dropped: dict[str, int] = field(default_factory=dict)  # by reason: age, over_bound


class Outbox:
    """See the module docstring. Feed it the store's pending changes (:meth:`load`),
    connection changes (:meth:`connected`, :meth:`disconnected`) and PUBACKs
    (:meth:`acked`); ask it what to hand over (:meth:`take`) and what to mark
    (:meth:`marks`)."""

    def __init__(self, *, window: int = 20) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window=}")
        self.window = window
        self.stats = OutboxStats()
        self._queue: list[Entry] = []  # pending, not handed, in order
        self._in_flight: dict[int, Key] = {}  # packet id -> change
        self._carried = 0  # of those, handed on an earlier connection
        self._taken = 0  # taken, not yet reported handed, unhanded or refused
        self._connected = False
        self._marks: dict[Key, str] = {}  # acknowledged (or refused), not yet marked

    @property
    def connected_now(self) -> bool:
        return self._connected

    def _busy(self) -> set[Key]:
        return set(self._in_flight.values()) | set(self._marks)

    def handed_over(self, key: Key) -> bool:
        """Whether ``key`` is with the broker connection (in flight or acknowledged)."""
        return key in self._busy()

    def load(self, pending: Sequence[Entry], *, depth: int, oldest_ns: int | None) -> None:
        """The store's pending changes, oldest first (a prefix of them is enough): those not
        handed over or waiting for their mark are queued, in that order."""
        busy = self._busy()
        self._queue = [e for e in pending if key_of(e[1]) not in busy]
        self.stats.depth = depth
        self.stats.oldest_ns = oldest_ns

    def connected(self) -> None:
        """A (re)connection: what is in flight was carried over (paho sends it again)."""
        self._connected = True
        self._carried = len(self._in_flight)

    def disconnected(self) -> None:
        self._connected = False

    def take(self) -> list[Entry]:
        """The changes to hand over now, in order; report each with :meth:`handed` or
        :meth:`unhanded`."""
        if not self._connected or self._carried:
            return []
        room = max(self.window - len(self._in_flight) - self._taken, 0)
        out, self._queue = self._queue[:room], self._queue[room:]
        self._taken += len(out)
        return out

    def _report(self, n: int) -> None:
        self._taken = max(self._taken - n, 0)

    def handed(self, entry: Entry, mid: int) -> None:
        self._report(1)
        self._in_flight[mid] = key_of(entry[1])
        self.stats.handed += 1
        self.stats.in_flight = len(self._in_flight)

    def unhanded(self, entries: Sequence[Entry]) -> None:
        """Not handed over (the connection went): back to the front, in order."""
        self._report(len(entries))
        self._queue = [*entries, *self._queue]

    def refuse(self, entry: Entry) -> None:
        """A taken change that cannot be published at all (no topic for its names)."""
        self._report(1)
        self._marks[key_of(entry[1])] = "refused"
        self.stats.refused += 1

    def acked(self, mid: int, ok: bool) -> Key | None:
        """A PUBACK; the change it acknowledges (None: not ours)."""
        key = self._in_flight.pop(mid, None)
        if key is None:
            return None
        if self._carried:
            self._carried -= 1
        self.stats.in_flight = len(self._in_flight)
        if ok:
            self.stats.published += 1
        else:
            self.stats.refused += 1
        self._marks[key] = "puback" if ok else "refused"
        return key

    def marks(self) -> dict[str, list[Key]]:
        """The changes to mark in the store, by outcome (call :meth:`marked` once written)."""
        out: dict[str, list[Key]] = {}
        for k, outcome in self._marks.items():
            out.setdefault(outcome, []).append(k)
        return out

    def marked(self, keys: Sequence[Key]) -> None:
        for k in keys:
            self._marks.pop(k, None)

    def dropped(self, reason: str, n: int) -> None:
        if n:
            self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + n


__all__ = ["Entry", "Key", "Outbox", "OutboxStats", "key_of"]
