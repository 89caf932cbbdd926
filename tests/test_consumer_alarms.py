"""Alarm hysteresis and zone alarms (sans-IO), their SQLite storage, and the result topics."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import msgspec
import pytest

from cloud.consumer.alarms import AlarmConfig, AlarmTracker, ZoneLimits, zone_of
from cloud.consumer.topics import PumpStates, alarm_message
from cloud.store import AlarmRow, Commit, ResultRow, SQLiteStore


def row(t: int, *, anomalous: bool = False, zone: str = "A", vel: float = 1.0,
        pump: str = "P1", channel: str = "x", condition: str = "healthy") -> ResultRow:
    # one device per channel: every (pump, channel, t) is a report of its own identity
    return ResultRow(
        device=f"d-{pump}-{channel}", epoch=1, seq=t, site="s", pump=pump, channel=channel,
        t0_ns=t * 10**9,
        condition=condition, probabilities={condition: 1.0}, anomaly_score=2.0 if anomalous
        else 0.5, anomaly_threshold=1.0, anomalous=anomalous, baseline="pump", iso_zone=zone,
        velocity_rms=vel, rpm=None, evidence=[], model_version="m", target="t",
        published_ns=None, received_ns=0,
    )


def flags(pattern: str, **kw: object) -> list[ResultRow]:
    return [row(i, anomalous=c == "1", **kw) for i, c in enumerate(pattern)]  # type: ignore[arg-type]


def test_k_of_n_raises_and_m_clean_clears() -> None:
    tr = AlarmTracker(AlarmConfig(raise_k=3, window_n=5, clear_m=4, zone_alarm_at=None))
    # 2 of 5 never raises; the third anomalous window within 5 does.
    out = tr.observe(flags("1001000100" "10101" "0001" "1" "0000"))
    assert [(a.state, a.raised_ns // 10**9) for a in out] == [
        ("raised", 14), ("cleared", 14)]
    assert out[1].cleared_ns == 23 * 10**9  # four clean windows after the last anomalous (19)
    assert out[0].id == "P1:x:anomaly:14000000000" == out[1].id


def test_chunking_and_order_do_not_change_alarms() -> None:
    cfg = AlarmConfig(raise_k=2, window_n=3, clear_m=3)
    rng = random.Random(4)
    pattern = "".join(rng.choice("0001") for _ in range(300))
    rows = flags(pattern)
    whole = AlarmTracker(cfg).observe(rows)
    tr = AlarmTracker(cfg)
    split: list[AlarmRow] = []
    i = 0
    while i < len(rows):
        n = rng.randint(1, 7)
        chunk = rows[i : i + n]
        rng.shuffle(chunk)  # within one commit the order is arbitrary
        split += tr.observe(chunk)
        i += n
    assert whole == split and len(whole) > 4


def test_zone_alarm_changes_and_asset_limits_override() -> None:
    tr = AlarmTracker(AlarmConfig(zone_alarm_at="C", zone_clear_m=2))
    zones = "ABCCDDCBBB"
    out = tr.observe([row(i, zone=z) for i, z in enumerate(zones)])
    assert [(a.state, a.reason.split(" (")[0]) for a in out] == [
        ("raised", "ISO 20816 zone B -> C"), ("raised", "ISO 20816 zone C -> D"),
        ("raised", "ISO 20816 zone D -> C"), ("cleared", "ISO 20816 zone D -> C")]
    assert len({a.id for a in out}) == 1
    # Consumer-side limits per pump recompute the zone from velocity RMS.
    cfg = AlarmConfig(zone_limits=[ZoneLimits(pump="P9", limits=(2.3, 4.5, 7.1))])
    tr = AlarmTracker(cfg)
    assert tr.observe([row(0, zone="C", vel=3.0, pump="P9")]) == []  # B under group 1 limits
    assert tr.observe([row(1, zone="C", vel=3.0, pump="P1")])[0].kind == "iso_zone"
    assert zone_of(7.2, (2.3, 4.5, 7.1)) == "D" and zone_of(float("nan"), (1, 2, 3)) == "?"


def test_an_open_episode_takes_the_diagnosis_its_windows_develop() -> None:
    """A fault leaves its baseline before the model names it: the episode raised with
    condition healthy is rewritten when raise_k of the last window_n windows name one
    fault class (not on a stray window), once per change, and the clearing keeps it."""
    cfg = AlarmConfig(raise_k=3, window_n=5, clear_m=3, zone_alarm_at=None)
    said = ["healthy"] * 3 + ["imbalance", "healthy", "misalignment", "imbalance",
                              "imbalance", "imbalance", "unknown"] + ["healthy"] * 3
    rows = [row(i, anomalous=i < 10, condition=c) for i, c in enumerate(said)]
    out = AlarmTracker(cfg).observe(rows)
    assert [(a.state, a.updated_ns, a.raised_ns // 10**9) for a in out] == [
        ("raised", 0, 2), ("raised", 0, 2), ("cleared", 0, 2)]
    assert len({a.id for a in out}) == 1
    assert out[0].reason.endswith("condition healthy)")
    # t7: imbalance in 3 of t3..t7 (t6 had only 2 of t2..t6; misalignment never 3)
    assert out[1].reason == out[0].reason + "; diagnosis imbalance (3 of the last 5 windows)"
    assert out[2].reason == out[1].reason + "; cleared after 3 clean windows"
    # the diagnosis state survives a restart: one fresh tracker per commit, state saved
    state: dict[tuple[str, str, str], str | None] = {("s", "P1", "x"): None}
    restarted: list[AlarmRow] = []
    for r in rows:
        saved, written = AlarmTracker(cfg).evaluate([r], state)
        state.update(saved)
        restarted += written
    assert restarted == out


def test_restore_clears_an_episode_raised_before_a_restart() -> None:
    cfg = AlarmConfig(raise_k=1, window_n=1, clear_m=2, zone_alarm_at=None)
    raised = AlarmTracker(cfg).observe(flags("1"))
    tr = AlarmTracker(cfg)
    tr.restore(raised)
    out = tr.observe([row(5), row(6)])
    assert [(a.id, a.state) for a in out] == [(raised[0].id, "cleared")]


def test_sqlite_store_writes_the_alarms_the_dashboard_reads(tmp_path: Path) -> None:
    async def go() -> tuple[list[AlarmRow], list[AlarmRow], dict[str, int]]:
        store = SQLiteStore(f"sqlite:///{tmp_path / 'a.db'}")
        await store.open()
        try:
            tr = AlarmTracker(AlarmConfig(raise_k=1, window_n=1, clear_m=1, zone_alarm_at=None))
            a1 = tr.observe(flags("1"))
            o1 = await store.commit(Commit(alarms=a1))
            a2 = tr.observe(flags("10"))
            o2 = await store.commit(Commit(alarms=a2))
            assert o2.alarms[-1].updated_ns > o1.alarms[0].updated_ns
            active = await store.active_alarms()
            return await store.alarms(), await store.alarms(order="raised_desc"), active
        finally:
            await store.close()

    alarms, newest_first, active = asyncio.run(go())
    # a second, read-only store (the dashboard's) reads the same rows
    async def read() -> list[AlarmRow]:
        ro = SQLiteStore(f"sqlite:///{tmp_path / 'a.db'}", readonly=True)
        await ro.open()
        try:
            return await ro.alarms(state="cleared")
        finally:
            await ro.close()

    rows = asyncio.run(read())
    # the pump's asset alarm groups the episode and stays raised until an operator closes it
    (asset,) = [a for a in alarms if a.kind == "asset"]
    alarms = [a for a in alarms if a.kind != "asset"]
    assert asset.state == "raised" and asset.lifecycle is not None
    assert asset.lifecycle.status == "open" and asset.channel is None
    assert [a.state for a in alarms] == ["cleared"] and len(rows) == 1
    assert len(newest_first) == 2 and alarms[0].parent == asset.id
    assert rows[0].id == alarms[0].id and rows[0].state == "cleared"
    assert rows[0].evidence[0].name == "anomaly_score"
    assert active == {}


def test_condition_state_keeps_the_newest_window_per_channel() -> None:
    ps = PumpStates()
    assert ps.update([row(5), row(3, channel="y")], stored_ns=1) == [("s", "P1")]
    ps.update([row(4)], stored_ns=2)  # late: ignored
    msg = msgspec.json.decode(ps.message("s", "P1"))
    assert msg["v"] == 1 and msg["channels"]["x"]["seq"] == 5 and msg["channels"]["y"]["seq"] == 3
    a = AlarmTracker(AlarmConfig(raise_k=1, window_n=1)).observe(flags("1"))[0]
    assert msgspec.json.decode(alarm_message(a))["alarm"]["id"] == a.id


@pytest.mark.parametrize("bad", [{"raise_k": 6, "window_n": 5}])
def test_alarm_config_validation(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="raise_k"):
        msgspec.convert(bad, AlarmConfig)


async def _shared_state_scenario(url: str) -> list[AlarmRow]:
    """Two consumers (stores + trackers) take turns with one channel's windows, and a
    redelivery of already-stored windows comes in between: one state machine still."""
    from cloud.store import make_store

    cfg = AlarmConfig(raise_k=3, window_n=5, clear_m=3, zone_alarm_at=None)
    stores = [make_store(url), make_store(url)]
    trackers = [AlarmTracker(cfg), AlarmTracker(cfg)]
    for s in stores:
        await s.open()
    try:
        rows = flags("0110" "1" "000" "0")  # third anomalous window at 4; 3 clean by 7
        written: list[AlarmRow] = []
        for i, r in enumerate(rows):
            k = i % 2  # round-robin, as a shared subscription deals messages
            out = await stores[k].commit(Commit(results=[r]), alarms=trackers[k].evaluate)
            written += out.alarms
            if i == 2:  # a redelivered window changes nothing
                again = await stores[1 - k].commit(Commit(results=[rows[1]]),
                                                   alarms=trackers[1 - k].evaluate)
                assert again.results_inserted == 0 and again.alarms == []
        return written
    finally:
        for s in stores:
            await s.close()


def _check_shared(written: list[AlarmRow]) -> None:
    # the pump's asset alarm is written (and published) with each of its episodes
    assets = {a.id for a in written if a.kind == "asset"}
    written = [a for a in written if a.kind != "asset"]
    assert len(assets) == 1 and {a.parent for a in written} == assets
    assert [(a.state, a.raised_ns // 10**9, (a.cleared_ns or 0) // 10**9) for a in written] == [
        ("raised", 4, 0), ("cleared", 4, 7)]


async def test_alarm_state_is_shared_through_the_sqlite_store(tmp_path: Path) -> None:
    _check_shared(await _shared_state_scenario(f"sqlite:///{tmp_path / 's.db'}"))


async def test_alarm_state_is_shared_through_postgresql(postgres_url: str) -> None:
    _check_shared(await _shared_state_scenario(postgres_url))


async def test_concurrent_consumers_on_postgresql_raise_each_episode_once(
    postgres_url: str,
) -> None:
    """Four writers commit interleaved windows of the same 8 channels at once."""
    from cloud.store import make_store

    cfg = AlarmConfig(raise_k=2, window_n=3, clear_m=2, zone_alarm_at=None)
    stores = [make_store(postgres_url) for _ in range(4)]
    for s in stores:
        await s.open()
    try:
        pattern = "0110001100110000"

        async def writer(k: int) -> None:
            tr = AlarmTracker(cfg)
            for t in range(k, len(pattern), 4):
                batch = [row(t, anomalous=pattern[t] == "1", pump=f"P{p}") for p in range(8)]
                await stores[k].commit(Commit(results=batch), alarms=tr.evaluate)
                await asyncio.sleep(0)

        await asyncio.gather(*(writer(k) for k in range(4)))
        alarms = await stores[0].alarms()
    finally:
        for s in stores:
            await s.close()
    # Per pump: whatever the interleaving, episodes never overlap and each is stored once.
    for p in range(8):
        # channel episodes in the order they were raised (asset alarms group them; the
        # store's "updated" order ties when two writers commit in the same nanosecond)
        mine = sorted((a for a in alarms if a.pump == f"P{p}" and a.kind != "asset"),
                      key=lambda a: a.raised_ns)
        assert mine and len({a.id for a in mine}) == len(mine)
        assert all(a.state == "cleared" for a in mine[:-1]), [
            (a.state, a.raised_ns, a.cleared_ns) for a in mine]


def test_sensor_fault_windows_neither_raise_nor_clear() -> None:
    import msgspec

    tr = AlarmTracker(AlarmConfig(raise_k=3, window_n=5, clear_m=3, zone_alarm_at="C",
                                  zone_clear_m=3))
    raised = tr.observe(flags("111", zone="D", vel=9.0))
    assert {a.kind for a in raised} == {"anomaly", "iso_zone"}
    # the sensor dies: its windows read quiet (zone A, not anomalous) but say nothing
    dead = [msgspec.structs.replace(r, condition="sensor_fault", t0_ns=r.t0_ns + 10**10,
                                    seq=r.seq + 10) for r in flags("000000", vel=0.0)]
    assert tr.observe(dead) == []
    # nor do saturated windows that would read as anomalous, zone D
    loud = [msgspec.structs.replace(r, condition="sensor_fault", pump="P2")
            for r in flags("11111", zone="D", vel=50.0)]
    assert tr.observe(loud) == []
    # a live channel still clears as before
    cleared = tr.observe([msgspec.structs.replace(r, t0_ns=r.t0_ns + 10**11, seq=r.seq + 100)
                          for r in flags("000", vel=1.0)])
    assert {(a.kind, a.state) for a in cleared} == {("anomaly", "cleared"),
                                                    ("iso_zone", "cleared")}
