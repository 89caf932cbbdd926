"""When to publish an unconfirmed report again: the edge's re-publish schedule, sans-IO.

Theory of operation
-------------------
A PUBACKed report waits for the cloud's confirmation. Re-publishing every report
unconfirmed for ``timeout`` seconds floods a cloud that is merely behind: its
queue holds every report it has not reached yet, and each copy joins that queue
again (a 100,000-message soak re-published 3.87 million reports and the broker
grew to 5 GB). The schedule tells a lost report from a late one with two signals,
time passed in (``now``, monotonic seconds), no clock reads:

* **The confirmation frontier** ``F``: the latest PUBACK time of a report the
  cloud has confirmed (of the report's *first* PUBACK: whichever copy the cloud
  confirmed, it got at least that far). The cloud's queue is first in, first out
  per consumer, so an unconfirmed report PUBACKed *before* the frontier (strictly:
  the other reports of its own message share its PUBACK time) was
  passed over: the broker lost it (a SIGKILL's autosave window, an expired
  session, a reader the ACL drops) or its confirmation was lost. Such a report is
  due once the frontier passed it at least ``timeout`` ago (slack for consumers
  committing out of order) and its own timeout ran out; reports *after* the
  frontier are held however long they wait: the cloud is alive and will reach
  them. Each re-publication doubles a report's own timeout (x2 per copy, at most
  ``2**MAX_LEVEL``), so a slow member of a consumer group does not draw copy after
  copy.
* **Silence**: no confirmation has settled anything for ``timeout`` (doubling
  per silent round, at most ``2**MAX_LEVEL``, jittered by up to +50 % so devices
  do not all probe together). The cloud is down, its queue is gone, or nothing
  after the lost reports moves the frontier. Then one *probe* goes out: the
  oldest unconfirmed reports, at most ``probe`` of them (the publisher passes one
  in-flight window's worth). Any confirmation ends the silence and resets its
  backoff; so does a reconnect (:meth:`RepublishSchedule.reconnected`: the
  broker may have restarted without its queues) -- still at most one probe per
  ``timeout``.

Bounded: re-publications over the frontier spend *credit*, one per report, earned
one per report the cloud confirms (at most ``4 * probe`` saved): the edge
re-publishes at most as fast as the cloud commits, plus one probe per silent
round. What becomes due goes back to the spool's pending queue and out through
the normal drain's rate limit and in-flight window, oldest first.

Memory: one dict entry and one FIFO entry per unconfirmed report (O(1) per
report and event); frontier history is coalesced to 16 entries per ``timeout``.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from dataclasses import dataclass

Key = tuple[int, int]  # (epoch, seq): the report identity within one device

MAX_LEVEL = 5  # timeouts double per re-publication / silent round, up to x32
CREDIT_PROBES = 4  # credit saved up: at most this many probes' worth
_NEVER = float("-inf")
_INF = float("inf")


@dataclass(slots=True)
class ScheduleStats:
    """Counters since the schedule was made."""

    passed: int = 0  # reports due because the frontier passed them (lost by the broker)
    probed: int = 0  # reports re-published by silent-round probes
    rounds: int = 0  # silent rounds that sent a probe
    held_credit: int = 0  # due reports held back for want of credit (summed per call)


class RepublishSchedule:
    """The unconfirmed reports' re-publish schedule (see the module docstring).

    The owner (:class:`edge.spool.Spool`) tells it :meth:`delivered` (PUBACK),
    :meth:`settled` (a confirmation covered the report) and :meth:`forget`
    (dropped); :meth:`due` names the reports to publish again.
    """

    def __init__(self, rng: Callable[[], float] = random.random) -> None:
        self.rng = rng
        self.stats = ScheduleStats()
        # waiting for a confirmation: key -> (PUBACK time, first PUBACK time, level)
        self._wait: dict[Key, tuple[float, float, int]] = {}
        # due and handed back (pending or in flight again): key -> (first PUBACK, level)
        self._again: dict[Key, tuple[float, int]] = {}
        # per level, (PUBACK time, key) in PUBACK order; stale entries skipped lazily
        self._fifo: list[collections.deque[tuple[float, Key]]] = [
            collections.deque() for _ in range(MAX_LEVEL + 1)
        ]
        self.frontier = _NEVER  # latest first-PUBACK time the cloud confirmed
        self._hist: collections.deque[tuple[float, float]] = collections.deque()
        self._passed = _NEVER  # the frontier as it was ``timeout`` ago
        self.last_progress = _NEVER  # when a confirmation last settled a report
        self._round_base = _NEVER  # silence is counted from max(last progress, this)
        self._silent_level = 0
        self._jitter = 1.0  # drawn again per round and reconnect
        self.credit = 0.0
        self._credit_cap = float(CREDIT_PROBES * 1024)
        self._bucket_s = 0.0  # frontier history granularity (timeout / 16)
        self._now = _NEVER  # the latest time passed in

    # -- events ---------------------------------------------------------------------

    def delivered(self, key: Key, now: float) -> None:
        """``key``'s PUBACK arrived at ``now``: it waits for a confirmation."""
        self._now = max(self._now, now)
        t0, level = self._again.pop(key, (now, 0))
        old = self._wait.get(key)
        if old is not None:  # PUBACKed twice (a transport resend): keep the first time
            t0 = min(t0, old[1])
        self._wait[key] = (now, t0, level)
        self._fifo[level].append((now, key))

    def settled(self, keys: list[Key], now: float | None = None) -> None:
        """A confirmation covered ``keys`` (waiting, due again, or never PUBACKed here);
        ``now`` defaults to the latest time passed in."""
        if not keys:
            return
        now = self._now if now is None else max(self._now, now)
        self._now = now
        f = self.frontier
        for key in keys:
            ent = self._wait.pop(key, None)
            if ent is not None:
                f = max(f, ent[1])
                continue
            again = self._again.pop(key, None)
            if again is not None:
                f = max(f, again[0])
        self.last_progress = now
        self._silent_level = 0
        self.credit = min(self._credit_cap, self.credit + len(keys))
        if f > self.frontier:
            self.frontier = f
            if self._hist and now - self._hist[-1][0] < self._bucket_s:
                self._hist[-1] = (self._hist[-1][0], f)  # coalesce: one entry per bucket
            else:
                self._hist.append((now, f))

    def forget(self, key: Key) -> None:
        """``key`` left the spool unconfirmed (dropped to stay under the byte bound)."""
        self._wait.pop(key, None)
        self._again.pop(key, None)

    def reconnected(self, now: float) -> None:
        """The link is up again: the broker may have restarted without its queues, so
        silence backs off from the first level again (the next probe at most one
        ``timeout`` after the last probe or confirmation; a link that keeps reconnecting
        cannot postpone probes for ever, nor send more than one per ``timeout``)."""
        self._now = max(self._now, now)
        self._silent_level = 0
        self._jitter = 1.0 + 0.5 * self.rng()

    def clear(self) -> None:
        """Nothing waits any more (settled without confirmations)."""
        self._wait.clear()
        self._again.clear()
        for q in self._fifo:
            q.clear()

    # -- decisions ------------------------------------------------------------------

    def _head(self, level: int) -> float | None:
        q = self._fifo[level]
        while q:
            t, key = q[0]
            ent = self._wait.get(key)
            if ent is not None and ent[0] == t and ent[2] == level:
                return t
            q.popleft()  # settled, dropped, or PUBACKed again since
        return None

    def _advance(self, now: float, timeout: float) -> None:
        self._bucket_s = timeout / 16.0
        while self._hist and self._hist[0][0] <= now - timeout:
            self._passed = max(self._passed, self._hist.popleft()[1])

    def silent_round_at(self, timeout: float) -> float:
        """When the next silent round may probe (monotonic s), if nothing is confirmed."""
        base = max(self.last_progress, self._round_base)
        return base + timeout * (1 << self._silent_level) * self._jitter

    def _take(self, limit: int, ok: Callable[[int, float], bool]) -> list[Key]:
        """Oldest-first waiting keys whose level head passes ``ok``, at most ``limit``."""
        out: list[Key] = []
        while len(out) < limit:
            best = -1
            best_t = 0.0
            for lv in range(MAX_LEVEL + 1):
                t = self._head(lv)
                if t is not None and ok(lv, t) and (best < 0 or t < best_t):
                    best, best_t = lv, t
            if best < 0:
                break
            _t, key = self._fifo[best].popleft()
            _now, t0, _lv = self._wait.pop(key)
            self._again[key] = (t0, min(best + 1, MAX_LEVEL))
            out.append(key)
        return out

    def due(self, now: float, timeout: float, probe: int) -> list[Key]:
        """The reports to publish again now, oldest first; they leave the waiting set
        (:meth:`delivered` again when their next PUBACK arrives)."""
        self._now = max(self._now, now)
        probe = max(1, probe)
        self._credit_cap = float(CREDIT_PROBES * probe)
        self.credit = min(self.credit, self._credit_cap)
        self._advance(now, timeout)
        passed = self._passed
        # 1. passed over by the frontier: lost (or their confirmation was)
        avail = int(self.credit)
        out = self._take(avail, lambda lv, t: t < passed and now - t >= timeout * (1 << lv))
        self.credit -= len(out)
        self.stats.passed += len(out)
        if len(out) == avail and self._frontier_due_at(timeout) <= now:
            self.stats.held_credit += 1
        # 2. silence: one probe of the oldest, whatever their level
        if now >= self.silent_round_at(timeout):
            probed = self._take(probe, lambda _lv, t: now - t >= timeout)
            if probed:
                out += probed
                self.stats.probed += len(probed)
                self.stats.rounds += 1
                self._round_base = now
                self._silent_level = min(self._silent_level + 1, MAX_LEVEL)
                self._jitter = 1.0 + 0.5 * self.rng()
        return out

    def _frontier_due_at(self, timeout: float) -> float:
        """When the oldest frontier-passed report's own timeout runs out (inf: none is
        passed; frontier history that has not aged yet counts from when it will)."""
        best = _INF
        for lv in range(MAX_LEVEL + 1):
            t = self._head(lv)
            if t is None:
                continue
            own = t + timeout * (1 << lv)
            if t < self._passed:
                best = min(best, own)
                continue
            for at, f in self._hist:  # ages into ``passed`` at ``at + timeout``
                if f > t:
                    best = min(best, max(own, at + timeout))
                    break
        return best

    def next_due(self, timeout: float) -> float | None:
        """The earliest time something may become due without a new event (monotonic s;
        a confirmation or reconnect can change it), if anything waits."""
        oldest = self.oldest()
        if oldest is None:
            return None
        probe_at = max(self.silent_round_at(timeout), oldest + timeout)
        if self.credit >= 1.0:
            return min(probe_at, self._frontier_due_at(timeout))
        return probe_at

    def oldest(self) -> float | None:
        """PUBACK time of the longest-waiting report, if any."""
        heads = [t for lv in range(MAX_LEVEL + 1) if (t := self._head(lv)) is not None]
        return min(heads) if heads else None

    def level(self, key: Key) -> int | None:
        """``key``'s re-publication level (copies sent after the first), if known."""
        ent = self._wait.get(key)
        if ent is not None:
            return ent[2]
        again = self._again.get(key)
        return again[1] if again is not None else None

    def __len__(self) -> int:
        """Reports waiting for a confirmation."""
        return len(self._wait)
