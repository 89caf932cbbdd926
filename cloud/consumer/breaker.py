"""Circuit breaker and concurrency limit for endpoint calls (sans-IO: time is passed in).

Theory of operation
-------------------
``closed``
    calls run, at most ``limit`` at once. Each success raises ``limit`` by one
    up to ``max_concurrency`` (additive increase); each failure halves it
    (multiplicative decrease), so a throttling endpoint gets fewer concurrent
    calls rather than more retries. ``failure_threshold`` consecutive failures
    open the breaker.
``open``
    no call starts until ``open_until``. Batches wait in memory, their
    messages unacknowledged at the broker, and the broker stops sending once
    our Receive Maximum of unacknowledged messages is reached: the outage
    becomes a backlog at the broker (bounded by its queue settings), never a
    crash and never a loss. The open interval starts at ``open_s`` and doubles
    (jittered by the caller) with every failed probe, up to ``open_max_s``.
``half_open``
    exactly one call (the probe) may run. Success closes the breaker with
    ``limit`` = 1, so the backlog drains through a ramp (1, 2, 3 ... calls at
    once) instead of hitting a just-recovered endpoint with everything;
    failure opens it again for longer.

A rejected batch (ModelError) is a *success* here: the endpoint is up and
answered; the consumer bisects the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class BreakerStats:
    opened: int = 0
    probes: int = 0
    closed_again: int = 0
    failures: int = 0
    successes: int = 0
    open_s_total: float = 0.0


class CircuitBreaker:
    """See the module docstring. ``now`` is any monotonic clock in seconds."""

    def __init__(
        self,
        *,
        max_concurrency: int,
        failure_threshold: int = 5,
        open_s: float = 1.0,
        open_max_s: float = 30.0,
    ) -> None:
        if max_concurrency < 1 or failure_threshold < 1 or not 0 < open_s <= open_max_s:
            raise ValueError(
                f"bad breaker settings: {max_concurrency=}, {failure_threshold=}, "
                f"{open_s=}, {open_max_s=}"
            )
        self.max_concurrency = max_concurrency
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self.open_max_s = open_max_s
        self.state: BreakerState = "closed"
        self.limit = max_concurrency
        self.running = 0
        self.consecutive_failures = 0
        self.open_until = 0.0
        self._interval = open_s
        self._opened_at = 0.0
        self.stats = BreakerStats()

    def try_start(self, now: float) -> bool:
        """Take a call slot if one is free now (the caller must then report the outcome)."""
        if self.state == "open":
            if now < self.open_until:
                return False
            self.state = "half_open"
        if self.state == "half_open":
            if self.running:
                return False
            self.stats.probes += 1
        elif self.running >= self.limit:
            return False
        self.running += 1
        return True

    def wait_hint(self, now: float) -> float | None:
        """Seconds until a slot may free by time alone (open interval), else None (wait for
        a running call to finish)."""
        if self.state == "open":
            return max(0.0, self.open_until - now)
        return None

    def success(self, now: float) -> None:
        self.running -= 1
        self.stats.successes += 1
        self.consecutive_failures = 0
        if self.state == "half_open":
            self.state = "closed"
            self.limit = 1
            self._interval = self.open_s
            self.stats.closed_again += 1
            self.stats.open_s_total += now - self._opened_at
        elif self.limit < self.max_concurrency:
            self.limit += 1

    def failure(self, now: float, *, jitter: float = 1.0) -> None:
        """A call failed (retryably). ``jitter`` scales the open interval (e.g. 0.5..1.5)."""
        self.running -= 1
        self.stats.failures += 1
        self.consecutive_failures += 1
        self.limit = max(1, self.limit // 2)
        if self.state == "half_open":
            self._interval = min(self._interval * 2, self.open_max_s)
            self.state = "open"
            self.open_until = now + self._interval * jitter
        elif self.state == "closed" and self.consecutive_failures >= self.failure_threshold:
            self.state = "open"
            self.stats.opened += 1
            self._opened_at = now
            self.open_until = now + self._interval * jitter
