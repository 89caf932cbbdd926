"""The in-flight byte budget (sans-IO): report bytes parsed and not yet committed.

A parsed report costs far more memory than its bytes on the wire: its raw copy
plus the decoded :class:`~dsp.report.Report` (Python objects: about 3.5 times
the raw size, measured), then its result row and archive row until the commit.
``consumer.max_unacked_bytes`` bounds the payload bytes *read*; this budget
bounds the bytes *parsed*: the ingest loop parses the next chunk of deliveries
only while :attr:`InFlightBytes.full` is false, and everything beyond waits in
the handoff as payload bytes (or at the broker). Each report's raw size is
added when it goes in flight and removed when its commit (result or dead
letter) returned, so batches waiting for the endpoint, for a breaker slot or
for the writer all count. The ingest takes from the handoff no more payload
bytes than :attr:`InFlightBytes.room` (always at least one message), so the
limit is overshot by less than one message; nothing waits for ever: a full
budget means at least one report is on its way to a commit.
"""

from __future__ import annotations


class InFlightBytes:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit=}")
        self.limit = limit
        self.held = 0
        self.reports = 0
        self.peak = 0
        self.waits = 0  # times the ingest found the budget full

    def add(self, nbytes: int) -> None:
        self.held += nbytes
        self.reports += 1
        self.peak = max(self.peak, self.held)

    def remove(self, nbytes: int) -> None:
        if nbytes > self.held or self.reports <= 0:
            raise ValueError(f"removing {nbytes} bytes of {self.held} held")
        self.held -= nbytes
        self.reports -= 1

    @property
    def room(self) -> int:
        """Bytes that may go in flight now (the next chunk's size; one message always may)."""
        return max(0, self.limit - self.held)

    @property
    def full(self) -> bool:
        """Parse nothing more now (something is held, and at least the limit)."""
        return self.reports > 0 and self.held >= self.limit
