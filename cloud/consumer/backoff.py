"""Jittered exponential backoff (sans-IO): the one retry policy of the consumer.

``delay()`` returns how long to wait before the next try and doubles the base
up to ``maximum``; the jitter (x0.5..x1.5, from the ``rng`` passed in) keeps a
fleet of consumers from retrying in lockstep. ``reset()`` after a success.
The caller sleeps; this object only counts.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(
        self, *, initial: float, maximum: float, rng: Callable[[], float] = random.random
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {initial=}, {maximum=}")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng
        self._base = initial
        self.attempts = 0  # failures since the last reset

    @property
    def base(self) -> float:
        """The un-jittered delay the next :meth:`delay` starts from (for logs)."""
        return self._base

    def delay(self) -> float:
        """Seconds to wait before the next try (jittered); advances the schedule."""
        d = self._base * (0.5 + self._rng())
        self._base = min(self._base * 2, self.maximum)
        self.attempts += 1
        return d

    def reset(self) -> None:
        self._base = self.initial
        self.attempts = 0
