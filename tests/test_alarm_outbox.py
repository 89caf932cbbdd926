"""The alarm-change outbox: the sans-IO rules (order, window, reconnects, PUBACKs, marks) and
the store's side on SQLite and PostgreSQL (pending with the alarm as it was after each
change, oldest first, marked once, bounded by age and size). The dashboard and a real
Mosquitto going down and up: tests/test_alarm_events.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.consumer.alarms import AlarmConfig, AlarmTracker
from cloud.dashboard.outbox import Entry, Outbox, key_of
from cloud.store import AlarmChange, AlarmEvent, AlarmRow, Commit, Store, make_store
from tests.test_consumer_alarms import row


def entry(i: int) -> Entry:
    alarm = AlarmRow(
        id=f"a{i}", site="s", pump="p", kind="asset", state="raised", raised_ns=1, reason=""
    )
    return alarm, AlarmEvent(alarm_id=f"a{i}", at_ns=100 + i, actor="ann", action="ack")


def test_outbox_hands_over_in_order_within_the_window_and_only_while_connected() -> None:
    ob = Outbox(window=2)
    pending = [entry(i) for i in range(5)]
    ob.load(pending, depth=5, oldest_ns=100)
    assert ob.take() == []  # not connected
    ob.connected()
    first = ob.take()
    assert first == pending[:2] and ob.take() == []  # the window is full
    for mid, e in enumerate(first, start=1):
        ob.handed(e, mid)
    ob.load(pending, depth=5, oldest_ns=100)  # a re-read never queues what is in flight
    assert ob.take() == []
    assert ob.acked(1, True) == key_of(pending[0][1])
    assert ob.acked(99, True) is None  # not ours
    assert ob.take() == [pending[2]]
    ob.handed(pending[2], 3)
    assert ob.marks() == {"puback": [key_of(pending[0][1])]}
    # the mark is not written yet: a re-read still does not queue the acknowledged change
    ob.load(pending, depth=5, oldest_ns=100)
    assert ob.take() == []
    ob.marked([key_of(pending[0][1])])
    assert ob.marks() == {}
    assert ob.stats.published == 1 and ob.stats.in_flight == 2


def test_after_a_reconnect_nothing_new_overtakes_what_paho_sends_again() -> None:
    ob = Outbox(window=3)
    pending = [entry(i) for i in range(4)]
    ob.load(pending, depth=4, oldest_ns=100)
    ob.connected()
    for mid, e in enumerate(ob.take(), start=1):
        ob.handed(e, mid)
    ob.disconnected()
    ob.load(pending, depth=4, oldest_ns=100)
    assert ob.take() == []
    ob.connected()  # paho sends 1..3 again: entry 3 waits for all three PUBACKs
    assert ob.take() == []
    ob.acked(1, True)
    ob.acked(2, False)  # refused: counted, marked, not retried
    assert ob.take() == []
    ob.acked(3, True)
    assert ob.take() == [pending[3]]
    assert ob.marks() == {
        "puback": [key_of(pending[0][1]), key_of(pending[2][1])],
        "refused": [key_of(pending[1][1])],
    }
    assert (ob.stats.published, ob.stats.refused) == (2, 1)


def test_unhanded_changes_go_back_to_the_front() -> None:
    ob = Outbox(window=4)
    pending = [entry(i) for i in range(3)]
    ob.load(pending, depth=3, oldest_ns=100)
    ob.connected()
    batch = ob.take()
    ob.handed(batch[0], 1)
    ob.unhanded(batch[1:])
    assert ob.take() == pending[1:]
    with pytest.raises(ValueError, match="window"):
        Outbox(window=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'o.db'}"
    return str(request.getfixturevalue("postgres_url"))


async def test_the_store_is_the_outbox(url: str) -> None:
    evaluate = AlarmTracker(
        AlarmConfig(raise_k=1, window_n=1, clear_m=1, zone_alarm_at=None)
    ).evaluate
    s = make_store(url)
    await s.open()
    try:
        await s.commit(
            Commit(results=[row(1, anomalous=True), row(1, anomalous=True, pump="P2")]),
            alarms=evaluate,
        )
        a1 = (await s.alarms(kind="asset", pump="P1"))[0].id
        a2 = (await s.alarms(kind="asset", pump="P2"))[0].id
        assert await s.alarm_outbox_depth() == (0, None)
        ack = await s.change_alarm(a1, AlarmChange(action="ack", actor="ann", at_ns=10))
        await s.change_alarm(
            a2, AlarmChange(action="assign", actor="bob", at_ns=11, assignee="dan")
        )
        await s.change_alarm(
            a1,
            AlarmChange(
                action="close", actor="cy", at_ns=12, verdict="no_fault_found", action_taken="none"
            ),
        )
        depth, oldest = await s.alarm_outbox_depth()
        assert (depth, oldest) == (3, ack.updated_ns)
        pending = await s.alarm_outbox(limit=10)
        assert [(e.alarm_id, e.action) for _a, e in pending] == [
            (a1, "ack"),
            (a2, "assign"),
            (a1, "close"),
        ]
        # each change carries the alarm as it was right after it, not as it is now
        first, _e = pending[0]
        assert first == ack and first.lifecycle is not None
        assert first.lifecycle.status == "acknowledged" and first.state == "raised"
        assert pending[2][0].lifecycle is not None
        assert pending[2][0].lifecycle.status == "closed"
        assert [e.at_ns for _a, e in pending] == sorted(e.at_ns for _a, e in pending)
        assert await s.alarm_outbox(limit=1) == pending[:1]

        keys = [key_of(pending[0][1])]
        assert await s.mark_alarm_events(keys, outcome="puback", at_ns=20) == 1
        assert await s.mark_alarm_events(keys, outcome="puback", at_ns=21) == 0  # once
        assert (await s.alarm_outbox_depth())[0] == 2
        # bounded: beyond the newest 1 pending, and older than a cutoff
        newest = pending[2][1].at_ns
        assert await s.drop_alarm_outbox(older_than_ns=0, max_pending=1, at_ns=30) == (0, 1)
        assert [e.at_ns for _a, e in await s.alarm_outbox(limit=10)] == [newest]
        assert await s.drop_alarm_outbox(older_than_ns=newest + 1, max_pending=5, at_ns=31) == (
            1,
            0,
        )
        assert await s.alarm_outbox_depth() == (0, None)
        # the history is unchanged by the outbox's marks
        assert [e.action for e in await s.alarm_events(a1)] == ["ack", "close"]
    finally:
        await s.close()


async def test_the_publisher_bounds_the_outbox_and_counts_its_drops(tmp_path: Path) -> None:
    """The adapter's round without a broker: the pending changes beyond the bound and past
    the age limit are dropped, counted by reason, and the depth is what is left."""
    from cloud.consumer.config import MqttConfig
    from cloud.dashboard.publish import AlarmPublisher

    evaluate = AlarmTracker(AlarmConfig(raise_k=1, window_n=1, clear_m=1,
                                        zone_alarm_at=None)).evaluate
    s = make_store(f"sqlite:///{tmp_path / 'b.db'}")
    await s.open()
    try:
        await s.commit(Commit(results=[row(1, anomalous=True, pump=p) for p in "ABC"]),
                       alarms=evaluate)
        stamps = []
        for p in "ABC":
            (a,) = await s.alarms(kind="asset", pump=p)
            stamps.append((await s.change_alarm(a.id, AlarmChange(
                action="ack", actor="ann", at_ns=5))).updated_ns)

        async def store() -> Store:
            return s

        pub = AlarmPublisher(MqttConfig(), store, max_pending=2, max_age_s=3600)
        await pub.step(now_ns=stamps[-1])
        assert pub.stats.dropped == {"over_bound": 1}
        assert (pub.stats.depth, pub.stats.oldest_ns) == (2, stamps[1])
        await pub.step(now_ns=stamps[-1])  # nothing more to drop, nothing handed (no broker)
        assert pub.stats.dropped == {"over_bound": 1} and pub.stats.handed == 0
        await pub.step(now_ns=stamps[-1] + 3601 * 10**9)
        assert pub.stats.dropped == {"over_bound": 1, "age": 2}
        assert pub.stats.depth == 0 and await s.alarm_outbox_depth() == (0, None)
    finally:
        await s.close()
