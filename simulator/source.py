"""The hardware stand-in's interface: a source yields blocks of samples for one device."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class Block:
    """Consecutive samples of every channel of a device.

    ``samples`` is ``(channels, n)`` float32 in m/s^2; ``t0_ns`` the time of the
    first sample (ns since the epoch, or since the stream start for replays);
    ``fs`` the sample rate in Hz. ``truth`` carries simulator ground truth
    (fault labels, severities, true rpm per pump, characteristic frequencies),
    empty for real sensors and recordings.
    """

    samples: NDArray[np.float32]
    t0_ns: int
    fs: float
    channels: tuple[str, ...]
    rpm: NDArray[np.float64] | None = None  # measured speed per channel (tachometer), if any
    truth: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    """Anything that yields :class:`Block` objects; iteration ends when the source does."""

    @property
    def channels(self) -> tuple[str, ...]: ...

    @property
    def fs(self) -> float: ...

    def blocks(self) -> Iterator[Block]: ...
