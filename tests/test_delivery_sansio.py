"""The sans-IO pieces of delivery: ranges, confirmations, the ack ledger, backoff, queues.

Chunking never changes the answer: ranges are fed whole, in random splits and
one at a time, in random order and twice, and must give the same set.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from cloud.consumer._queue import JobQueue
from cloud.consumer.backoff import Backoff
from cloud.consumer.confirm import Confirmer
from cloud.consumer.ledger import AckLedger
from dsp.confirm import (
    ConfirmDecodeError,
    RangeSet,
    decode_confirmation,
    encode_confirmation,
)


def _as_set(rs: RangeSet) -> set[int]:
    return {x for a, b in rs.ranges() for x in range(a, b + 1)}


@pytest.mark.parametrize("seed", range(20))
def test_rangeset_is_the_same_set_whole_split_shuffled_and_repeated(seed: int) -> None:
    rng = random.Random(seed)
    truth = {x for x in range(300) if rng.random() < 0.7}
    one = RangeSet()
    for x in sorted(truth):
        one.add(x)
    shuffled = RangeSet()
    items = list(truth) * 2
    rng.shuffle(items)
    for x in items:
        shuffled.add(x)
    merged = RangeSet()
    for part in (one, shuffled):  # merging is idempotent
        merged.update(part)
    assert one == shuffled == merged
    assert _as_set(one) == truth
    assert one.count() == len(truth)
    # compact: no two ranges touch
    r = list(one.ranges())
    assert all(b + 1 < c for (_, b), (c, _) in itertools.pairwise(r))
    for x in range(-2, 303):
        assert (x in one) == (x in truth)
    missing = {x for a, b in one.missing(0, 299) for x in range(a, b + 1)}
    assert missing == set(range(300)) - truth


def test_rangeset_merges_adjacent_and_overlapping_ranges() -> None:
    rs = RangeSet([(5, 9), (0, 3)])
    assert list(rs.ranges()) == [(0, 3), (5, 9)]
    rs.add(4)
    assert list(rs.ranges()) == [(0, 9)]
    rs.add(20, 30)
    rs.add(8, 22)
    assert list(rs.ranges()) == [(0, 30)]
    assert rs.missing(0, 40) == [(31, 40)]
    with pytest.raises(ValueError, match="empty range"):
        rs.add(3, 2)


def test_confirmation_round_trip_and_errors() -> None:
    payload = encode_confirmation("dev-1", [(7, RangeSet([(0, 9), (12, 12)]))])
    msg = decode_confirmation(payload)
    assert msg.device == "dev-1" and msg.v == 1
    assert [(e.epoch, e.ranges) for e in msg.epochs] == [(7, [(0, 9), (12, 12)])]
    assert msg.count() == 11
    import msgspec

    for bad in [b"\xc1", msgspec.msgpack.encode([2, "dev-1", []]),
                msgspec.msgpack.encode([1, "dev-1", [[7, [[5, 1]]]]]),
                msgspec.msgpack.encode([1, "a/b", []])]:
        with pytest.raises(ConfirmDecodeError):
            decode_confirmation(bad)


@pytest.mark.parametrize("seed", range(5))
def test_confirmer_messages_cover_exactly_what_was_added(seed: int) -> None:
    rng = random.Random(seed)
    c = Confirmer(max_ranges=7)
    truth: dict[tuple[str, int], set[int]] = {}
    for _ in range(500):
        dev, epoch, seq = rng.choice("ab"), rng.randrange(3), rng.randrange(200)
        c.add(dev, epoch, seq)
        truth.setdefault((dev, epoch), set()).add(seq)
    got: dict[tuple[str, int], RangeSet] = {}
    msgs = c.take()
    for dev, payload in msgs:
        m = decode_confirmation(payload)
        assert m.device == dev
        assert sum(len(e.ranges) for e in m.epochs) <= 7
        for e in m.epochs:
            got.setdefault((dev, e.epoch), RangeSet()).update(e.ranges)
    assert {k: _as_set(v) for k, v in got.items()} == truth
    assert c.take() == []


def test_ledger_acks_in_arrival_order_only_when_sealed_and_done() -> None:
    led: AckLedger[str] = AckLedger()
    a = led.open("a", generation=1, nbytes=10, received_ns=1)
    b = led.open("b", generation=1, nbytes=20, received_ns=2)
    led.part(a)
    led.part(a)
    led.seal(b)  # b has no parts: ready, but behind a
    assert led.ready(1) == []
    led.seal(a)
    led.done(a)
    assert led.ready(1) == []
    led.done(a)
    assert led.ready(1) == ["a", "b"]
    assert led.nbytes == 0 and len(led) == 0
    with pytest.raises(ValueError):
        led.done(a)


def test_ledger_drops_tickets_of_an_older_connection_without_acking() -> None:
    led: AckLedger[str] = AckLedger()
    for i, gen in enumerate([1, 1, 2]):
        t = led.open(str(i), generation=gen, nbytes=5, received_ns=i)
        led.seal(t)
    assert led.nbytes == 15
    assert led.ready(2) == ["2"]
    assert led.dropped_stale == 2 and led.nbytes == 0


@pytest.mark.parametrize("seed", range(5))
def test_ledger_one_at_a_time_equals_all_at_once(seed: int) -> None:
    """Parts completing in any order: the ack sequence is arrival order, each acked once."""
    rng = random.Random(seed)
    led: AckLedger[int] = AckLedger()
    tickets = []
    for i in range(50):
        t = led.open(i, generation=1, nbytes=1, received_ns=i)
        for _ in range(rng.randrange(4)):
            led.part(t)
        led.seal(t)
        tickets.append(t)
    parts = [t for t in tickets for _ in range(t.remaining)]
    rng.shuffle(parts)
    acked = led.ready(1)
    for t in parts:
        led.done(t)
        acked += led.ready(1)
    assert acked == list(range(50))


def test_backoff_doubles_to_the_maximum_with_jitter_and_resets() -> None:
    vals = iter([0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    b = Backoff(initial=1.0, maximum=4.0, rng=lambda: next(vals))
    assert b.delay() == 0.5  # 1 * (0.5 + 0)
    assert b.delay() == 3.0  # 2 * 1.5
    assert [b.delay() for _ in range(3)] == [4.0, 4.0, 4.0]
    assert b.attempts == 5
    b.reset()
    assert b.delay() == 1.0 and b.attempts == 1
    with pytest.raises(ValueError):
        Backoff(initial=2.0, maximum=1.0)


def test_job_queue_is_bounded_and_reports_itself() -> None:
    async def main() -> None:
        q: JobQueue[int] = JobQueue(2)
        await q.put(1)
        await q.put(2)
        blocked = asyncio.create_task(q.put(3))
        await asyncio.sleep(0)
        assert not blocked.done() and q.qsize() == 2
        assert await q.get() == 1
        await blocked
        s = q.stats()
        assert (s.depth, s.peak, s.capacity, s.total) == (2, 2, 2, 1)
        assert s.blocked_s > 0
        assert [q.get_nowait(), q.get_nowait()] == [2, 3]
        assert q.empty() and q.stats().oldest_age_s == 0.0

    asyncio.run(main())
