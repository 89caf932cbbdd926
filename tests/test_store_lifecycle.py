"""Asset alarms in the store, on SQLite and PostgreSQL: the commit groups a pump's channel
episodes into one asset alarm; operators' changes (cloud.store.lifecycle) are stored with
who and when; a closed alarm is final, kept by retention, and the next episode opens a new
one."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from cloud.consumer.alarms import AlarmConfig, AlarmTracker
from cloud.store import AlarmChange, Commit, Lifecycle, LifecycleError, make_store
from cloud.store.lifecycle import apply
from tests.test_consumer_alarms import row


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'a.db'}"
    return str(request.getfixturevalue("postgres_url"))


def change(action: str, at: int, **kw: object) -> AlarmChange:
    return AlarmChange(action=action, actor="ann", at_ns=at, **kw)  # type: ignore[arg-type]


async def test_episodes_group_per_asset_and_a_closed_alarm_is_final(url: str) -> None:
    evaluate = AlarmTracker(AlarmConfig(raise_k=1, window_n=1, clear_m=1,
                                        zone_alarm_at=None)).evaluate
    s = make_store(url)
    await s.open()
    try:
        # two channels of P1 raise (one named a condition), P2 one channel
        rows = [row(1, anomalous=True, channel="x"), row(2, anomalous=True, channel="y"),
                row(1, anomalous=True, pump="P2")]
        rows[1] = msgspec.structs.replace(rows[1], condition="bearing_outer")
        await s.commit(Commit(results=rows), alarms=evaluate)
        (a1,) = await s.alarms(kind="asset", pump="P1")
        assert a1.lifecycle is not None and a1.lifecycle.condition == "bearing_outer"
        eps = await s.alarms(parent=a1.id)
        assert sorted(e.channel or "" for e in eps) == ["x", "y"]
        assert len(await s.alarms(kind="asset")) == 2
        assert await s.active_alarms() == {"P1": 2, "P2": 1}  # episodes, not the asset

        ack = await s.change_alarm(a1.id, change("ack", 10))
        assert ack.lifecycle is not None and ack.lifecycle.status == "acknowledged"
        with pytest.raises(LifecycleError, match="action_taken"):
            await s.change_alarm(a1.id, change("close", 11, verdict="bearing_outer"))
        closed = await s.change_alarm(a1.id, change("close", 12, verdict="bearing_outer",
                                                    action_taken="replaced"))
        assert closed.state == "cleared" and closed.cleared_ns == 12
        assert closed.updated_ns > ack.updated_ns
        with pytest.raises(LifecycleError, match="closed"):
            await s.change_alarm(a1.id, change("assign", 13, assignee="bob"))
        with pytest.raises(KeyError):
            await s.change_alarm("nope", change("ack", 13))
        events = await s.alarm_events(a1.id)
        assert [(e.action, e.actor) for e in events] == [("ack", "ann"), ("close", "ann")]

        # the channels clear and raise again: a new asset alarm, the closed one untouched
        await s.commit(Commit(results=[row(3, channel="x"), row(3, channel="y")]),
                       alarms=evaluate)
        await s.commit(Commit(results=[row(4, anomalous=True, channel="x")]), alarms=evaluate)
        assets = await s.alarms(kind="asset", pump="P1", order="raised_desc")
        assert len(assets) == 2 and assets[1].id == a1.id
        assert assets[1].lifecycle == closed.lifecycle
        assert assets[0].lifecycle is not None and assets[0].lifecycle.status == "open"
        assert [e.channel for e in await s.alarms(parent=assets[0].id)] == ["x"]
        # retention drops cleared episodes, never closed asset alarms (they are labels)
        await s.prune(before_ns=2**62)
        assert [a.id for a in await s.alarms(kind="asset", state="cleared")] == [a1.id]
        assert await s.alarms(kind="episode", state="cleared") == []
    finally:
        await s.close()


def test_lifecycle_rules() -> None:
    lc = Lifecycle(model_version="m")
    assigned = apply(lc, change("assign", 5, assignee="bob"), ["healthy"])
    assert (assigned.status, assigned.assignee, assigned.acknowledged_by) == (
        "acknowledged", "bob", "ann")
    with pytest.raises(LifecycleError, match="assignee"):
        apply(lc, change("assign", 5), [])
    with pytest.raises(LifecycleError, match="neither no_fault_found nor a class"):
        apply(lc, change("close", 5, verdict="gremlins", action_taken="x"), ["healthy"])
    with pytest.raises(LifecycleError, match="onset is in the future"):
        apply(lc, change("close", 5, verdict="no_fault_found", action_taken="x", onset_ns=9),
              [])
    # no manifest known: any verdict name is taken; closing acknowledges
    done = apply(lc, change("close", 5, verdict="cavitation", action_taken="x"), [])
    assert (done.status, done.verdict, done.acknowledged_ns) == ("closed", "cavitation", 5)
