"""The ack ledger (sans-IO): which deliveries may be acknowledged, in which order.

Rules (MQTT 5 section 4.6 and the consumer's durability promise):

* Every delivery gets a :class:`Ticket` when it is read (:meth:`AckLedger.open`).
  A ticket counts its outstanding *parts*: one per report on its way to a
  commit, one for its dead letters together (:meth:`part`). Once all parts
  are counted the ticket is *sealed* (:meth:`seal`); each commit that makes a
  part durable calls :meth:`done`.
* A ticket is ready when sealed with no part outstanding. :meth:`ready`
  returns the deliveries to acknowledge now, in arrival order: a ready ticket
  behind one that is not waits.
* A delivery remembers the connection (*generation*) it arrived on. After a
  reconnect the broker redelivers everything unacknowledged, so tickets of an
  older generation are dropped from the front without an ack.
* The ledger counts the payload bytes of everything not yet acknowledged:
  the consumer stops reading when :attr:`nbytes` is over its budget.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Generic, TypeVar

D = TypeVar("D")


@dataclass(slots=True, eq=False)
class Ticket(Generic[D]):
    delivery: D
    generation: int
    nbytes: int
    received_ns: int
    remaining: int = 0
    sealed: bool = False


class AckLedger(Generic[D]):
    def __init__(self) -> None:
        self._order: collections.deque[Ticket[D]] = collections.deque()
        self.nbytes = 0  # payload bytes of tickets not yet acked or dropped
        self.dropped_stale = 0  # tickets of a gone connection (the broker redelivers)

    def open(self, delivery: D, *, generation: int, nbytes: int, received_ns: int) -> Ticket[D]:
        t = Ticket(delivery, generation, nbytes, received_ns)
        self._order.append(t)
        self.nbytes += nbytes
        return t

    @staticmethod
    def part(ticket: Ticket[D]) -> None:
        ticket.remaining += 1

    @staticmethod
    def seal(ticket: Ticket[D]) -> None:
        ticket.sealed = True

    @staticmethod
    def done(ticket: Ticket[D]) -> None:
        if ticket.remaining <= 0:
            raise ValueError("ticket has no outstanding part")
        ticket.remaining -= 1

    def ready(self, generation: int) -> list[D]:
        """Deliveries to acknowledge now on connection ``generation`` (arrival order)."""
        out: list[D] = []
        order = self._order
        while order:
            t = order[0]
            if t.generation != generation:
                order.popleft()
                self.nbytes -= t.nbytes
                self.dropped_stale += 1
                continue
            if t.remaining > 0 or not t.sealed:
                break
            order.popleft()
            self.nbytes -= t.nbytes
            out.append(t.delivery)
        return out

    def __len__(self) -> int:
        return len(self._order)

    def oldest_received_ns(self) -> int | None:
        return self._order[0].received_ns if self._order else None
