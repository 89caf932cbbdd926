"""Ack bookkeeping without sockets: the handoff's backpressure, in-order and per-connection acks."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from cloud.consumer import Consumer, Delivery, Handoff, config_from_dict
from cloud.consumer.ledger import Ticket


async def test_handoff_blocks_the_producer_when_full_and_reports_itself() -> None:
    loop = asyncio.get_running_loop()
    q: Handoff[int] = Handoff(3, loop)
    done = threading.Event()

    def produce() -> None:
        for i in range(5):
            assert q.put(i)
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    await asyncio.sleep(0.3)
    assert not done.is_set()  # blocked on the 4th item: backpressure, not a drop
    s = q.stats()
    assert (s.depth, s.capacity, s.drops) == (3, 3, 0)
    assert s.oldest_age_s > 0.2
    assert await q.get_batch(10) == [0, 1, 2]
    await asyncio.to_thread(done.wait, 5)
    assert await q.get_batch(10) == [3, 4]
    t.join()
    s = q.stats()
    assert (s.depth, s.peak, s.total) == (0, 3, 5)
    assert s.blocked_s > 0.1
    q.close()
    assert q.put(9) is False


class FakeMqtt:
    def __init__(self) -> None:
        self.generation = 1
        self.acked: list[int] = []

    def ack(self, d: Delivery) -> bool:
        if d.generation != self.generation:
            return False
        self.acked.append(d.mid)
        return True


def delivery(mid: int, generation: int = 1) -> Delivery:
    return Delivery(topic="t", payload=b"", mid=mid, qos=1, generation=generation,
                    received_ns=time.time_ns(), published_ns=None)


def test_acks_go_out_in_arrival_order_and_only_on_their_connection(tmp_path: Path) -> None:
    c = Consumer(config_from_dict({"store": {"url": f"sqlite:///{tmp_path / 'x.db'}"}}))
    mq = FakeMqtt()
    c._mqtt = mq  # type: ignore[assignment]
    led = c._ledger

    def ticket(
        mid: int, generation: int = 1, parts: int = 0, sealed: bool = True
    ) -> Ticket[Delivery]:
        d = delivery(mid, generation)
        t = led.open(d, generation=generation, nbytes=10, received_ns=d.received_ns)
        for _ in range(parts):
            led.part(t)
        if sealed:
            led.seal(t)
        return t

    t1, t2, t3 = (ticket(m, parts=1) for m in (1, 2, 3))
    led.done(t2)
    led.done(t3)
    c._ack_ready()
    assert mq.acked == []  # 1 still pending holds 2 and 3 back
    led.done(t1)
    c._ack_ready()
    assert mq.acked == [1, 2, 3]
    # an unsealed ticket (parts still being counted) is never acked at zero
    ticket(4, sealed=False)
    c._ack_ready()
    assert mq.acked == [1, 2, 3]
    # reconnect: deliveries of the old connection are dropped, never acked
    mq.generation = 2
    ticket(5, generation=2)
    c._ack_ready()
    assert mq.acked == [1, 2, 3, 5]
    assert not led and led.nbytes == 0


async def test_handoff_byte_budget_blocks_the_producer_until_bytes_are_released() -> None:
    loop = asyncio.get_running_loop()
    q: Handoff[int] = Handoff(100, loop, max_bytes=1000)
    done = threading.Event()

    def produce() -> None:
        for i in range(3):
            assert q.put(i, 400)
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    got: list[int] = []
    while len(got) < 2:  # the producer may have put both before the first get
        got += await q.get_batch(10)
    assert got == [0, 1]
    # taking items out does not free bytes: only release does (after the ack)
    assert not await asyncio.to_thread(done.wait, 0.3)
    assert q.held_bytes == 800
    q.release_bytes(400)
    assert await asyncio.to_thread(done.wait, 5)
    assert await q.get_batch(10) == [2]
    t.join()
    assert q.stats().blocked_s > 0.2
    # one message larger than the whole budget still passes when nothing else is held
    q.release_bytes(800)
    assert q.put(9, 5000)
