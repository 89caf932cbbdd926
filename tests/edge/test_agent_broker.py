"""The agent against a real Mosquitto: delivery, broker outages, full spool, bad samples,
refused publishes. Outage lengths come from PUMPWATCH_OUTAGE_S (default 1 s)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import dsp
from edge.agent import Agent
from edge.sources import synthetic_source

from ..infra.mosquitto import Mosquitto
from ._helpers import Collector, build, edge_config

OUTAGE_S = float(os.environ.get("PUMPWATCH_OUTAGE_S", "1.0"))


class Running:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.stop = threading.Event()
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.acked: list[tuple[float, tuple[int, int]]] = []  # (time, key) of every spool ack
        orig = agent.spool.ack

        def ack(keys: Any) -> int:
            keys = list(keys)
            now = time.monotonic()
            self.acked += [(now, k) for k in keys]
            return orig(keys)

        agent.spool.ack = ack  # type: ignore[method-assign]

    def _run(self) -> None:
        self.code = self.agent.run(self.stop)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(20)

    def wait(self, timeout: float) -> int | None:
        self.thread.join(timeout)
        return self.code


@pytest.fixture
def collector_for(mosquitto: Mosquitto) -> Iterator[Callable[[str], Collector]]:
    made: list[Collector] = []

    def make(device: str) -> Collector:
        c = Collector(mosquitto, device).start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


def test_reports_arrive_intact_and_in_sequence(
    tmp_path: Path, mosquitto: Mosquitto, collector_for: Callable[[str], Collector]
) -> None:
    d = edge_config(tmp_path, mosquitto.port, channels=4, source={"duration_s": 6})
    d["pipeline"] = {"chunk_channels": 3}  # two channel groups, framed and analyzed apart
    cfg = build(d)
    col = collector_for(cfg.device)
    agent = Agent(cfg, synthetic_source(cfg), exit_when_drained=True, overflow="block")
    with Running(agent) as run:
        assert run.wait(30) == 0
    col.wait_for(24, 10)  # delivery to the subscriber may trail the agent's last PUBACK
    keys = col.identities()
    assert keys == [(agent.epoch, s) for s in range(24)]  # 6 intervals x 4 channels, in order
    r = col.reports[5]
    assert (r.device, r.site, r.pump, r.channel) == (cfg.device, "lab", "p1", "c1")
    assert r.asset.bearings[0].designation == "6205" and r.asset.bearings[0].n_balls == 9
    assert r.t0_ns - col.reports[1].t0_ns == 1_000_000_000
    assert r.spectrum.n == cfg.report.lines and r.envelope is not None
    assert col.reports[0].quality.flags & dsp.report.Q_RESTART
    assert not r.quality.flags & dsp.report.Q_RESTART
    # status: online while running, retained offline goodbye at the end
    time.sleep(0.3)
    assert col.status and col.status[-1]["state"] == "offline"
    assert any(s["state"] == "online" for s in col.status)
    assert col.status[-1]["acked"] == 24 and col.status[-1]["spool"]["reports"] == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_broker_restart_mid_stream(
    tmp_path: Path,
    mosquitto: Mosquitto,
    collector_for: Callable[[str], Collector],
    sig: signal.Signals,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every report arrives (duplicates allowed, identified by identity). With SIGKILL the
    broker may lose what it acknowledged since its last autosave; that loss is measured,
    must be confined to reports PUBACKed before the kill, and is printed."""
    caplog.set_level(logging.INFO)
    d = edge_config(tmp_path, mosquitto.port, channels=8, source={"pace": 4.0, "duration_s": 16})
    cfg = build(d)
    col = collector_for(cfg.device)
    mosquitto.save()  # the collector's session is on disk before any kill
    time.sleep(0.3)
    agent = Agent(cfg, synthetic_source(cfg), exit_when_drained=True, overflow="block")
    total = 16 * 8
    with Running(agent) as run:
        assert col.wait_for(16, 10)
        t_kill = time.monotonic()
        mosquitto.stop(sig)
        time.sleep(OUTAGE_S)
        mosquitto.start()
        assert run.wait(60) == 0, "agent did not drain after the outage"
        col.wait_for(total, 10)
    keys = col.identities()
    got = set(keys)
    expected = {(agent.epoch, s) for s in range(total)}
    assert got <= expected
    lost = expected - got
    acked_before_kill = {k for t, k in run.acked if t <= t_kill}
    dups = len(keys) - len(got)
    print(
        f"broker {sig.name}: outage {OUTAGE_S} s, {total} reports, {len(lost)} lost by the "
        f"broker, {dups} duplicates, {agent.publisher.stats.acked_messages} PUBACKs"
    )
    if sig == signal.SIGTERM:
        assert not lost
    else:
        assert lost <= acked_before_kill, "lost reports that the broker never acknowledged"
    assert agent.disconnects >= 1 and agent.connects >= 2


def test_full_spool_drops_oldest_counts_and_keeps_running(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()  # not started yet: the link is down
    d = edge_config(
        tmp_path,
        broker.port,
        channels=4,
        source={"duration_s": 40},
        spool_extra={"max_bytes": 65536, "segment_bytes": 16384},
    )
    cfg = build(d)
    agent = Agent(cfg, synthetic_source(cfg), exit_when_drained=True, overflow="block")
    with Running(agent) as run:
        deadline = time.monotonic() + 30
        while not agent._compute_done.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent._compute_done.is_set(), "computation stalled while the link was down"
        st = agent.status()
        assert st["spool"]["dropped"] > 0
        assert st["spool"]["bytes"] <= 65536
        assert st["link"]["state"] != "connected"
        broker.start()
        col = Collector(broker, cfg.device).start()  # may miss the first drain: check after
        try:
            assert run.wait(30) == 0
        finally:
            col.stop()
    total = 40 * 4
    sp = agent.spool.stats
    assert sp.dropped + agent.publisher.stats.acked_reports == total
    # what survived is the newest, contiguous run of reports
    assert agent.publisher.stats.acked_reports == total - sp.dropped


def test_bad_samples_give_flagged_reports(
    tmp_path: Path, mosquitto: Mosquitto, collector_for: Callable[[str], Collector]
) -> None:
    d = edge_config(tmp_path, mosquitto.port, channels=5, source={"duration_s": 3})
    cfg = build(d)
    col = collector_for(cfg.device)
    faults = {"p1.c0": "nan", "p1.c1": "inf", "p1.c2": "clip", "p1.c3": "constant"}
    src = synthetic_source(cfg, faults=faults)
    agent = Agent(cfg, src, exit_when_drained=True, overflow="block")
    with Running(agent) as run:
        assert run.wait(30) == 0
    col.wait_for(15, 10)  # delivery to the subscriber may trail the agent's last PUBACK
    assert len(set(col.identities())) == 15
    by_channel = {r.channel: r.quality for r in col.reports if r.seq >= 5}
    assert "nonfinite" in by_channel["c0"].names() and by_channel["c0"].nonfinite > 0
    assert "nonfinite" in by_channel["c1"].names()
    assert "clipped" in by_channel["c2"].names() and by_channel["c2"].clipped > 0
    assert "constant" in by_channel["c3"].names()
    assert not {"nonfinite", "clipped", "constant"} & set(by_channel["c4"].names())


def test_refused_puback_keeps_reports_spooled_without_hot_retry(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = mosquitto_factory(extra_conf="acl_file {run_dir}/acl")
    # anonymous may not write pumpwatch/...
    (broker.run_dir / "acl").write_text("topic readwrite elsewhere/#\n")
    broker.start()
    d = edge_config(
        tmp_path,
        broker.port,
        channels=2,
        source={"duration_s": 2},
        mqtt_extra={"failure_backoff_s": 0.5},
    )
    cfg = build(d)
    agent = Agent(cfg, synthetic_source(cfg), overflow="block")
    with caplog.at_level(logging.ERROR, logger="edge.publisher"), Running(agent):
        time.sleep(2.5)
        st = agent.status()
    assert 1 <= agent.publisher.stats.failed_messages <= 4  # backoff 0.5, 1, 2 s: no hot loop
    assert agent.publisher.stats.acked_reports == 0
    assert agent.spool.stats.dropped == 0
    assert st["spool"]["reports"] == 4
    assert "Not authorized" in (st["last_error"] or "")
    assert any("0x87" in r.getMessage() for r in caplog.records)


def test_sigkilled_broker_loses_unsaved_messages_of_an_offline_consumer(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Measures the broker's loss window: Mosquitto PUBACKs at once but persists every
    ``autosave_interval`` s, so messages it queued for an *offline* persistent consumer
    since its last save die with a SIGKILL. The agent cannot see this (the PUBACK came);
    the loss is bounded by what was PUBACKed in the last autosave interval."""
    d = edge_config(tmp_path, mosquitto.port, channels=8, source={"pace": 4.0, "duration_s": 8})
    cfg = build(d)
    cid = f"col-{cfg.device}"
    col = Collector(mosquitto, cfg.device, client_id=cid).start()
    col.stop()  # offline, its session (and subscription) kept by the broker
    mosquitto.save()
    time.sleep(0.3)
    agent = Agent(cfg, synthetic_source(cfg), exit_when_drained=True, overflow="block")
    with Running(agent) as run:
        deadline = time.monotonic() + 10
        while len(run.acked) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        t_kill = time.monotonic()
        mosquitto.stop(signal.SIGKILL)
        time.sleep(OUTAGE_S)
        mosquitto.start()
        assert run.wait(60) == 0
    col = Collector(mosquitto, cfg.device, client_id=cid).start()
    try:
        col.wait_for(64, 2)
        got = set(col.identities())
    finally:
        col.stop()
    expected = {(agent.epoch, s) for s in range(64)}
    lost = expected - got
    window = {k for t, k in run.acked if t_kill - mosquitto.autosave_interval - 0.5 <= t <= t_kill}
    print(
        f"SIGKILL with the consumer offline: {len(lost)} of 64 reports lost by the broker "
        f"(PUBACKed within its last {mosquitto.autosave_interval} s autosave window: "
        f"{len(window)})"
    )
    assert lost <= window


def test_simulated_source_with_a_fault(
    tmp_path: Path, mosquitto: Mosquitto, collector_for: Callable[[str], Collector]
) -> None:
    from edge.sources import simulated_source

    d = edge_config(
        tmp_path, mosquitto.port, channels=2, source={"kind": "simulated", "duration_s": 3}
    )
    d["pumps"][0]["bearings"] = ["6308"]
    d["pumps"][0]["simulate"] = {"faults": [{"kind": "outer_race", "severity": 0.8}]}
    cfg = build(d)
    col = collector_for(cfg.device)
    agent = Agent(cfg, simulated_source(cfg), exit_when_drained=True)
    with Running(agent) as run:
        assert run.wait(30) == 0
    # The agent exits on its last PUBACK; delivery to the subscriber may trail it.
    assert col.wait_for(6, 10)
    reps = col.reports
    assert len({r.identity for r in reps}) == 6
    assert all(r.asset.bearings[0].designation == "6308" for r in reps)
    assert all(r.features.env_bpfo is not None for r in reps)


def test_messages_stay_under_the_brokers_maximum_packet_size(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    """A broker announcing Maximum Packet Size in CONNACK would drop the connection on a
    bigger message (again on every resend); the agent packs its batches under it."""
    broker = mosquitto_factory(max_packet_size=6000).start()
    d = edge_config(tmp_path, broker.port, channels=8, source={"duration_s": 3})
    cfg = build(d)
    col = Collector(broker, cfg.device).start()
    agent = Agent(cfg, synthetic_source(cfg), exit_when_drained=True)
    try:
        with Running(agent) as run:
            assert run.wait(30) == 0
        assert col.wait_for(24, 5)
    finally:
        col.stop()
    assert agent.disconnects == 0
    assert col.messages >= 24 * 1300 // 6000


def test_drain_after_outage_respects_rate_and_window(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    """A backlog goes out at publish_rate messages/s with at most `inflight` unacknowledged,
    not as one burst (AWS IoT would throttle or drop the connection)."""
    rate, window = 8.0, 2
    broker = mosquitto_factory().start()
    d = edge_config(
        tmp_path,
        broker.port,
        channels=4,
        source={"duration_s": 10},
        mqtt_extra={"publish_rate": rate, "inflight": window, "max_message_bytes": 8192},
    )
    cfg = build(d)
    col = Collector(broker, cfg.device).start()  # its persistent session outlives the outage
    broker.stop()  # down while the backlog builds
    agent = Agent(cfg, synthetic_source(cfg), exit_when_drained=True)
    try:
        with Running(agent) as run:
            deadline = time.monotonic() + 20
            while not agent._compute_done.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert agent.spool.stats.records == 40
            broker.start()
            assert run.wait(30) == 0
            col.wait_for(40, 5)
    finally:
        col.stop()
    n = col.messages
    assert n >= 40 * 1300 // 8192
    span = col.arrivals[-1] - col.arrivals[0]
    burst = max(1.0, rate / 10)
    assert span >= (n - burst - 1) / rate * 0.8, (
        f"{n} messages in {span:.2f} s: faster than {rate}/s"
    )
    assert agent.publisher.stats.inflight_peak <= window
    assert len(set(col.identities())) == 40
