"""The re-publish schedule (sans-IO, time passed in): a cloud that is behind but confirming
gets no copies; what the confirmations pass over is re-published, at most as fast as the
cloud confirms; silence sends bounded probes with a doubling, capped, jittered spacing."""

from __future__ import annotations

import itertools
import random

import pytest

from edge.republish import CREDIT_PROBES, MAX_LEVEL, RepublishSchedule

T = 10.0  # confirm timeout


def _sched() -> RepublishSchedule:
    return RepublishSchedule(rng=lambda: 0.0)  # no jitter: exact times


def test_a_backlogged_cloud_that_keeps_confirming_gets_no_copies() -> None:
    """One report a second for 1000 s; the cloud confirms them in order at half that rate
    (its backlog grows to 500 s, 50 timeouts): nothing is ever due (a fixed timeout
    re-published nearly all of them, again and again)."""
    s = _sched()
    due: list[tuple[int, int]] = []
    for now in range(1000):
        s.delivered((1, now), float(now))
        if now >= 5 and now % 2:
            s.settled([(1, (now - 5) // 2)], float(now))
        due += s.due(float(now) + 0.5, T, probe=50)
    assert due == []
    assert len(s) == 1000 - 498 and s.stats.rounds == 0


def test_what_the_confirmations_pass_over_is_republished_once_oldest_first() -> None:
    """The broker lost every third report of 300..449 (a reader the ACL drops took its
    share): once later reports are confirmed for a timeout, exactly those go out again,
    oldest first, each once. (A lost block with nothing confirmed behind it is silence:
    probes, below.)"""
    s = _sched()
    lost = set(range(300, 450, 3))
    due: list[tuple[int, int]] = []
    confirm_at: list[tuple[float, tuple[int, int]]] = []  # the cloud is 5 s behind
    for now in range(700):
        if now < 600:
            s.delivered((1, now), float(now))
            if now not in lost:
                confirm_at.append((now + 5.0, (1, now)))
        confirm_at.sort()
        while confirm_at and confirm_at[0][0] <= now:
            s.settled([confirm_at.pop(0)[1]], float(now))
        got = s.due(float(now) + 0.5, T, probe=50)
        assert all(q in lost for _e, q in got)
        due += got
        for k in got:  # published again: PUBACKed, confirmed 5 s later
            s.delivered(k, float(now) + 0.6)
            confirm_at.append((now + 5.6, k))
    assert [q for _e, q in due] == sorted(lost)
    assert s.stats.passed == 50 and s.stats.rounds == 0 and len(s) == 0
    # each went out only after the frontier had passed it for a timeout
    assert s.frontier == 599.0


def test_republication_over_the_frontier_is_bounded_by_what_the_cloud_confirms() -> None:
    """A reader the broker drops steals every other report: copies go out no faster than
    the cloud confirms (one credit per confirmed report, at most 4 probes saved up)."""
    s = _sched()
    n = 2000
    for q in range(n):
        s.delivered((1, q), q / 100)
    evens = [(1, q) for q in range(0, n, 2)]
    s.settled(evens[:500], 20.0)
    s.settled(evens[500:], 29.0)  # still confirming: no silent round before 39.0
    assert s.credit == 1000
    got = s.due(31.0, T, probe=100)
    # 499 odd reports are passed (the frontier of 21.0 is at 9.98), 400 credits
    assert len(got) == CREDIT_PROBES * 100 and got == sorted(got)
    assert all(q % 2 for _e, q in got)
    assert s.due(31.5, T, probe=100) == [] and s.stats.held_credit >= 1
    s.settled([(1, 1), (1, 3)], 32.0)  # two more confirmations: two more copies
    assert s.due(32.0, T, probe=100) == [(1, got[-1][1] + 2), (1, got[-1][1] + 4)]


def test_silence_probes_the_oldest_with_doubling_capped_spacing() -> None:
    s = _sched()
    for q in range(1000):
        s.delivered((1, q), 0.0)
    rounds: list[float] = []
    now = 0.0
    while now < 5000:
        nxt = s.next_due(T)
        assert nxt is not None and nxt > now
        assert s.due(nxt - 0.01, T, probe=7) == []
        now = nxt
        got = s.due(now, T, probe=7)
        assert len(got) == 7 and got == sorted(got)
        rounds.append(now)
        for k in got:
            s.delivered(k, now)
    gaps = [b - a for a, b in zip([0.0, *rounds], rounds, strict=False)]
    assert gaps[: MAX_LEVEL + 3] == [T * 2 ** min(k, MAX_LEVEL) for k in range(MAX_LEVEL + 3)]
    assert s.stats.probed == 7 * len(rounds)
    # the oldest go first; once probed they wait behind the rest (they are newer now)
    assert s.level((1, 0)) == 1


def test_a_confirmation_or_a_reconnect_ends_the_silence_backoff() -> None:
    s = _sched()
    for q in range(100):
        s.delivered((1, q), 0.0)
    assert len(s.due(10.0, T, probe=5)) == 5
    assert s.next_due(T) == 30.0  # the second round waits twice as long
    s.reconnected(12.0)  # the broker may have restarted: back to the first level
    assert s.next_due(T) == 20.0  # one timeout after the last probe, not after 12.0
    assert len(s.due(20.0, T, probe=5)) == 5 and s.next_due(T) == 40.0
    s.settled([(1, 50)], 25.0)  # alive: silence counted from now, first level
    assert s.next_due(T) == 35.0
    at = []
    for k in range(20):  # a link reconnecting every second neither stops probes nor
        s.reconnected(36.0 + k)  # sends more than one per timeout
        if s.due(36.0 + k, T, probe=5):
            at.append(36.0 + k)
    assert at == [36.0, 46.0]


def test_jitter_spreads_devices_out_and_never_probes_early() -> None:
    rng = random.Random(1)
    times = []
    for _ in range(50):
        s = RepublishSchedule(rng=rng.random)
        s.delivered((1, 0), 0.0)
        s.delivered((1, 1), 0.0)
        s.settled([(1, 1)], 0.0)  # the cloud spoke at 0.0, then fell silent (an outage)
        s.reconnected(0.0)
        nxt = s.next_due(T)
        assert nxt is not None
        times.append(nxt)
        assert s.due(nxt - 1e-6, T, probe=1) == [] and s.due(nxt, T, probe=1) == [(1, 0)]
    assert min(times) >= T and max(times) <= 1.5 * T and len(set(times)) > 40


def test_a_slow_consumer_draws_copies_at_doubling_intervals() -> None:
    """Confirmations pass a report whose consumer is slow: its copies' own timeouts double
    (the frontier keeps passing it: 10, 20, 40, 80 s after each PUBACK, not every 10 s)."""
    s = _sched()
    s.delivered((1, 0), 0.0)
    sent = [0.0]
    now = 0.0
    q = 1
    while now < 300:
        now += 1.0
        s.delivered((1, q), now)
        s.settled([(1, q)], now + 0.1)  # everything else is confirmed at once
        q += 1
        for k in s.due(now + 0.2, T, probe=10):
            assert k == (1, 0)
            s.delivered(k, now + 0.3)
            sent.append(now + 0.3)
    # the frontier passes it at once; the own timeout doubles per copy (polled each second)
    gaps = [round(b - a) for a, b in itertools.pairwise(sent)]
    assert gaps[:4] == [11, 21, 41, 81], gaps


def test_forget_and_clear() -> None:
    s = _sched()
    s.delivered((1, 0), 0.0)
    s.delivered((1, 1), 0.0)
    s.forget((1, 0))
    assert len(s) == 1 and s.oldest() == 0.0
    s.clear()
    assert len(s) == 0 and s.oldest() is None and s.next_due(T) is None


@pytest.mark.parametrize("seed", range(6))
def test_no_busy_wait_and_nothing_forgotten(seed: int) -> None:
    """Random PUBACKs, confirmations (some lost) and polls: after a poll that returns
    nothing, the next due time is in the future (no busy loop); every report that is
    never confirmed keeps coming back (none is forgotten)."""
    rng = random.Random(seed)
    s = RepublishSchedule(rng=rng.random)
    now = 0.0
    waiting: set[tuple[int, int]] = set()
    doomed: set[tuple[int, int]] = set()  # the cloud never confirms these
    q = 0
    for _ in range(3000):
        now += rng.random()
        if rng.random() < 0.4:
            k = (1, q)
            q += 1
            s.delivered(k, now)
            waiting.add(k)
            if rng.random() < 0.05:
                doomed.add(k)
        if rng.random() < 0.3 and waiting:
            ks = [k for k in rng.sample(sorted(waiting), min(5, len(waiting)))
                  if k not in doomed]
            s.settled(ks, now)
            waiting -= set(ks)
        got = s.due(now, T, probe=3)
        for k in got:
            s.delivered(k, now)
        if not got:
            nxt = s.next_due(T)
            assert nxt is None or nxt > now
    # stop confirming anything but keep polling: every doomed report is probed again
    seen: set[tuple[int, int]] = set()
    for _ in range(400):
        nxt = s.next_due(T)
        assert nxt is not None
        now = max(now, nxt)
        for k in s.due(now, T, probe=3):
            seen.add(k)
            s.delivered(k, now)
    assert doomed <= seen
