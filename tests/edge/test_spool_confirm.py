"""The spool's confirmation state: unconfirmed after PUBACK, settled by confirmations,
published again after the confirm timeout, bounded and dropped oldest-first like the rest."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from edge.spool import Spool


def _recs(epoch: int, seqs: range, size: int = 100) -> list[tuple[int, int, bytes]]:
    return [(epoch, s, bytes([s % 251]) * size) for s in seqs]


def test_puback_keeps_the_record_until_a_confirmation_covers_it(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=16 * 1024) as sp:
        sp.append(_recs(7, range(10)))
        keys = [r.key for r in sp.lease(10)]
        assert sp.delivered(keys, now=100.0) == 10
        assert (sp.stats.records, sp.stats.unconfirmed, sp.pending) == (10, 10, 0)
        assert sp.oldest_unconfirmed() == 100.0
        assert sp.confirm(7, [(0, 3), (8, 8)]) == 5
        assert sp.confirm(7, [(0, 3)]) == 0  # idempotent
        assert sp.confirm(8, [(0, 9)]) == 0  # another epoch
        assert (sp.stats.records, sp.stats.unconfirmed, sp.stats.confirmed) == (5, 5, 5)
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=16 * 1024) as sp:
        # after a restart the unconfirmed ones are pending: published again
        assert [r.seq for r in sp.peek(100)] == [4, 5, 6, 7, 9]


def test_timeout_puts_unconfirmed_back_oldest_first(tmp_path: Path) -> None:
    """Nothing confirmed for the timeout: a probe of the oldest (the next one waits twice
    as long); a confirmation ends the silence; late confirmations settle copies too."""
    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        sp.schedule.rng = lambda: 0.0  # no jitter: exact times
        sp.append(_recs(1, range(6)))
        a = [r.key for r in sp.lease(3)]
        sp.delivered(a, now=10.0)
        b = [r.key for r in sp.lease(3)]
        sp.delivered(b, now=20.0)
        assert sp.next_expiry(30.0) == 40.0
        assert sp.expire(39.9, 30.0) == 0
        assert sp.expire(45.0, 30.0) == 3 and sp.stats.republished == 3
        assert sp.next_expiry(30.0) == 105.0  # silent again: the next round at 2 x 30 s
        assert [r.seq for r in sp.lease(10)] == [0, 1, 2]
        # a confirmation for a record published again settles it while in flight
        assert sp.confirm(1, [(0, 0)], now=46.0) == 1
        assert sp.delivered([(1, 0), (1, 1), (1, 2)], now=50.0) == 2
        assert sp.stats.acks_unknown == 1
        assert sp.next_expiry(30.0) == 76.0  # the cloud spoke: silence counted afresh
        assert sp.expire(76.0, 30.0) == 3  # seq 3..5 (seq 1, 2 were PUBACKed at 50)
        # a late confirmation of an expired record not yet sent again settles it too
        assert sp.confirm(1, [(1, 5)], now=77.0) == 5
        assert sp.stats.records == 0 and sp.pending == 0 and sp.next_expiry(30.0) is None


def test_records_the_confirmations_pass_over_go_out_again_at_the_confirm_rate(
    tmp_path: Path,
) -> None:
    """Seq 5.. are confirmed, 0..4 are not (the broker lost them): they are published
    again a timeout after the confirmations passed them, one per confirmed report."""
    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        sp.schedule.rng = lambda: 0.0
        sp.append(_recs(1, range(10)))
        for q in range(10):
            sp.delivered([r.key for r in sp.lease(1)], now=float(q))
        for k, q in enumerate(range(5, 9)):
            assert sp.confirm(1, [(q, q)], now=12.0 + 3 * k) == 1
        assert sp.expire(21.9, 10.0) == 0  # passed at 12.0: not yet a timeout ago
        assert sp.expire(22.0, 10.0) == 4  # four confirmed: four credits
        assert [r.seq for r in sp.lease(10)] == [0, 1, 2, 3]
        assert sp.confirm(1, [(9, 9)], now=24.0) == 1
        assert sp.expire(24.5, 10.0) == 1 and [r.seq for r in sp.peek(10)] == [4]
        assert sp.schedule.stats.passed == 5 and sp.schedule.stats.rounds == 0


def test_full_spool_of_unconfirmed_drops_oldest_and_counts(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=64 * 1024, segment_bytes=16 * 1024) as sp:
        sp.append(_recs(3, range(100), size=1000))
        sp.delivered([r.key for r in sp.lease(100)], now=1.0)
        assert sp.stats.unconfirmed == sp.stats.records
        for k in range(100, 300, 20):  # a long cloud outage: nothing is confirmed
            sp.append(_recs(3, range(k, k + 20), size=1000))
            sp.delivered([r.key for r in sp.lease(100)], now=2.0)
        assert sp.stats.dropped > 0
        assert sp.stats.bytes <= 64 * 1024 + 16 * 1024
        assert sp.stats.records + sp.stats.dropped == 300
        assert sp.stats.unconfirmed == sp.stats.records
        # confirmations for dropped records are harmless; the kept ones settle
        kept = sp.stats.records
        assert sp.confirm(3, [(0, 299)]) == kept
        assert sp.expire(1e9, 1.0) == 0


@pytest.mark.parametrize("seed", range(8))
def test_random_confirmation_traffic_matches_a_model(tmp_path: Path, seed: int) -> None:
    """Leases, PUBACKs, releases, confirmations (in random splits, repeated) and timeouts:
    every record is settled exactly when the model says, and the counts agree."""
    rng = random.Random(seed)
    state: dict[int, str] = {}
    sp = Spool(tmp_path, max_bytes=1 << 24, segment_bytes=16 * 1024)
    seq = 0
    now = 0.0
    sent: set[int] = set()  # PUBACKed at least once
    for _ in range(400):
        op = rng.random()
        now += rng.random()
        if op < 0.25:
            n = rng.randrange(1, 20)
            sp.append(_recs(1, range(seq, seq + n)))
            state.update(dict.fromkeys(range(seq, seq + n), "pending"))
            seq += n
        elif op < 0.45:
            got = sp.lease(rng.randrange(1, 30))
            assert all(state[r.seq] == "pending" for r in got)
            # oldest first
            assert [r.seq for r in got] == sorted(s for s, v in state.items()
                                                  if v == "pending")[: len(got)]
            for r in got:
                state[r.seq] = "leased"
            if rng.random() < 0.8:
                sp.delivered([r.key for r in got], now)
                for r in got:
                    state[r.seq] = "unconfirmed"
                    sent.add(r.seq)
            else:
                sp.release([r.key for r in got])
                for r in got:
                    state[r.seq] = "pending"
        elif op < 0.75 and seq:
            a = rng.randrange(seq)
            b = min(seq - 1, a + rng.randrange(10))
            n = sp.confirm(1, [(a, b)])
            # settled: in flight, unconfirmed, or pending again after a timeout (it was
            # PUBACKed once); a record never sent is not waiting for a confirmation
            expect = [s for s in range(a, b + 1) if state.get(s) in ("unconfirmed", "leased")
                      or (state.get(s) == "pending" and s in sent)]
            assert n == len(expect)
            for s in expect:
                del state[s]
        else:
            n = sp.expire(now, 5.0)
            assert n >= 0
        assert sp.stats.records == len(state)
        assert sp.stats.unconfirmed <= sum(v == "unconfirmed" for v in state.values())
        # sync the model with expiries (the spool decides which timed out)
        pend = {r.seq for r in sp.peek(10_000)}
        for s, v in list(state.items()):
            if v == "unconfirmed" and s in pend:
                state[s] = "pending"
    sp.close()


def test_each_republication_doubles_the_timeout_up_to_a_cap(tmp_path: Path) -> None:
    """A silent cloud gets one probe per round: 30, 60, 120, ... s apart, at most x32."""
    from edge.spool import MAX_BACKOFF_LEVEL

    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        sp.schedule.rng = lambda: 0.0  # no jitter: exact times
        sp.append(_recs(1, range(1)))
        now, due = 0.0, []
        for _ in range(MAX_BACKOFF_LEVEL + 3):
            sp.delivered([r.key for r in sp.lease(1)], now)
            nxt = sp.next_expiry(30.0)
            assert nxt is not None
            due.append(nxt - now)
            assert sp.expire(nxt - 0.001, 30.0) == 0
            now = nxt
            assert sp.expire(now, 30.0) == 1
        assert due == [30.0 * 2 ** min(k, MAX_BACKOFF_LEVEL) for k in range(len(due))]
        assert sp.confirm(1, [(0, 0)]) == 1
        assert sp.stats.records == 0 and sp.schedule.level((1, 0)) is None
