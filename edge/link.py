"""What the operator sees of the MQTT link: failures logged once per change, then with backoff.

Theory of operation
-------------------
A transport keeps reconnecting on its own (every ``reconnect_min_s`` ..
``reconnect_max_s``); a broker that is down, a wrong CA or a certificate the
broker refuses fails the same way on every attempt. Logging every attempt
floods the journal; logging none leaves the agent silent (start and stop lines
only). :class:`LinkLog` is the rule between the two, sans-IO (time passed in):

* a failure whose reason differs from the previous one (a *state change*:
  connected -> refused, refused -> TLS error) is logged at once, at WARNING;
* the same reason again is logged after ``first_repeat_s``, then after twice
  that, and so on up to ``max_repeat_s``, each line saying how many attempts
  failed since the last one;
* a successful connection ends the episode (logged at INFO with how many
  attempts failed and for how long), so the next failure is a change again.

``last_error`` and ``failures`` stay for the status (``link.last_error``,
``link.failures``) and the metrics after the link recovers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LinkLog:
    first_repeat_s: float = 10.0
    max_repeat_s: float = 600.0
    #: the reason of the latest failure (kept after a recovery: the status shows it)
    last_error: str | None = None
    last_error_at: float | None = None
    #: failed connection attempts and lost connections this run
    failures: int = 0
    _episode_start: float | None = None
    _episode_failures: int = 0
    _logged_reason: str | None = None
    _next_log: float = 0.0
    _repeat_s: float = 0.0
    _suppressed: int = 0

    def failure(self, reason: str, now: float) -> str | None:
        """A failed attempt or a lost connection; returns the line to log, or None."""
        self.failures += 1
        self._episode_failures += 1
        self.last_error, self.last_error_at = reason, now
        if self._episode_start is None:
            self._episode_start = now
        if reason != self._logged_reason:
            self._logged_reason = reason
            self._repeat_s = self.first_repeat_s
            self._next_log = now + self._repeat_s
            self._suppressed = 0
            return reason
        if now < self._next_log:
            self._suppressed += 1
            return None
        n = self._suppressed + 1
        self._suppressed = 0
        self._repeat_s = min(self.max_repeat_s, 2 * self._repeat_s)
        self._next_log = now + self._repeat_s
        return (f"{reason} (still failing: {n} attempts since the last report, "
                f"{now - self._episode_start:.0f} s since the first; next report in "
                f"{self._repeat_s:.0f} s unless it changes)")

    def connected(self, now: float) -> str | None:
        """The link is up; returns a line to log if failures preceded it."""
        n, start = self._episode_failures, self._episode_start
        self._episode_failures, self._episode_start = 0, None
        self._logged_reason, self._suppressed = None, 0
        if not n or start is None:
            return None
        return f"after {n} failed attempts over {now - start:.0f} s"


__all__ = ["LinkLog"]
