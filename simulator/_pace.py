"""Pacing a stream against a clock: real time, a speed factor, or as fast as possible."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

Pace = Literal["realtime", "fast"] | float | None


def pace_speed(pace: Pace) -> float | None:
    """Stream seconds per wall second; None = as fast as possible."""
    if pace is None or pace == "fast":
        return None
    if pace == "realtime":
        return 1.0
    speed = float(pace)
    if not speed > 0:
        raise ValueError(
            f"pace must be 'realtime', 'fast', None or a speed factor > 0, got {pace!r}"
        )
    return speed


class Pacer:
    """Sleeps until stream time ``s`` is due: ``start + s / speed`` on the monotonic clock.

    The clock starts at the first :meth:`wait`; a consumer that falls behind is
    not made to sleep (the schedule does not slip, so it catches up).
    """

    def __init__(
        self,
        pace: Pace,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.speed = pace_speed(pace)
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None

    def wait(self, stream_s: float) -> None:
        if self.speed is None:
            return
        now = self._clock()
        if self._start is None:
            self._start = now
        delay = self._start + stream_s / self.speed - now
        if delay > 0:
            self._sleep(delay)
