"""Model usage per version, bundle and pump (cloud/monitor/usage.py): the latency histogram's
quantiles, cells that merge across consumers in a real store, and the consumer counting
calls, reports, errors and dead letters end to end (real Mosquitto, the model server behind
a fault-injecting proxy, SQLite)."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

import dsp
from cloud.monitor.usage import (
    ALL_PUMPS,
    LATENCY_EDGES_S,
    PRE_MODEL,
    UNKNOWN_PUMP,
    Invocation,
    Usage,
    latency_bin,
    merge_cells,
    quantile,
    summarize,
)
from cloud.store import Commit, make_store
from cloud.store.records import UsageCell
from tests.infra.fault_proxy import FaultProxy
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto
from tests.infra.pipeline import Publisher, chunks, encoded_reports
from tests.test_consumer_faults import fault_config, until
from tests.test_consumer_pipeline import await_rows, running_consumer, stored

HOUR = 3600 * 1_000_000_000
T0 = 1_780_000_000 * 1_000_000_000 // HOUR * HOUR


def test_latency_bins_are_fixed_log_edges() -> None:
    assert latency_bin(0.0) == 0 and latency_bin(5e-5) == 0
    assert latency_bin(LATENCY_EDGES_S[0] * 1.0001) == 1
    assert latency_bin(1e3) == len(LATENCY_EDGES_S)  # above 100 s: the overflow bin
    for k in (1, 17, 40):  # an edge opens its bin
        assert latency_bin(LATENCY_EDGES_S[k] * 1.000001) == k + 1


def test_quantiles_from_the_histogram_match_the_samples_within_a_bin() -> None:
    rng = np.random.default_rng(3)
    lat = rng.lognormal(np.log(0.02), 0.8, 20_000)  # ~20 ms median, a long tail
    counts = collections.Counter(latency_bin(x) for x in lat)
    width = 10 ** (1 / 10)  # one bin: a factor 1.26
    for q in (0.5, 0.95, 0.99):
        got = quantile(counts, q)
        assert got is not None
        exact = float(np.quantile(lat, q))
        assert exact / width <= got <= exact * width, (q, got, exact)
    assert quantile({}, 0.5) is None
    with pytest.raises(ValueError, match="q must be"):
        quantile(counts, 1.5)


def test_usage_counts_per_batch_and_summarizes_per_version_target_and_pump() -> None:
    u = Usage()
    u.invocation(target="ep/a", latency_s=0.010, reports={("m/1", "p1"): 3, ("m/1", "p2"): 1},
                 now_ns=T0)
    u.invocation(target="ep/a", latency_s=0.030, reports={("m/1", "p1"): 2}, now_ns=T0 + 5)
    u.invocation(target="ep/b", latency_s=0.5, reports={("m/2", "p3"): 4}, now_ns=T0 + HOUR)
    u.error(model_version="m/1", target="ep/a", outcome="unavailable", now_ns=T0)
    u.error(model_version="m/1", target="ep/a", outcome="rejected", now_ns=T0)
    u.dead_letter(model_version="m/1", target="ep/a", pump="p2", now_ns=T0)
    with pytest.raises(ValueError, match="outcome"):
        u.error(model_version="m/1", target="ep/a", outcome="teapot")
    s = summarize(u.cells())
    m1 = s["m/1"]
    assert (m1["invocations"], m1["reports"], m1["dead_letters"]) == (2, 6, 1)
    assert m1["errors"] == {"unavailable": 1, "rejected": 1} and m1["errors_total"] == 2
    assert m1["error_rate"] == pytest.approx(0.5)
    assert m1["pumps"] == {"p1": {"reports": 5, "dead_letters": 0},
                           "p2": {"reports": 1, "dead_letters": 1}}
    assert 10 <= m1["latency_ms"]["p50"] <= 30 * 1.26 and m1["latency_calls"] == 2
    assert set(m1["targets"]) == {"ep/a"}
    assert s["m/2"]["targets"]["ep/b"]["latency_ms"]["p99"] == pytest.approx(500, rel=0.26)
    buckets = {c[3] for c in u.cells()}
    assert buckets == {T0, T0 + HOUR}
    assert all(c[2] == ALL_PUMPS for c in u.cells() if c[4] in ("invocations", "latency"))
    assert u.take() and not u


def test_a_batch_invocation_merged_counts_as_the_call_itself() -> None:
    # What a batch carries to its commit (Invocation) counts, once merged, exactly as the
    # call counted at once, in the bucket of when it was answered.
    reports = {("m/1", "p1"): 3, ("m/1", "p2"): 1, ("m/2", "p1"): 2}
    direct = Usage()
    direct.invocation(target="ep/a", latency_s=0.02, reports=reports, now_ns=T0 + HOUR)
    held = Usage()
    held.invocation(target="ep/a", latency_s=0.5, reports={("m/1", "p1"): 1}, now_ns=T0)
    held.merge(Invocation(target="ep/a", latency_s=0.02, reports=reports, now_ns=T0 + HOUR))
    assert [c for c in held.cells() if c[3] == T0 + HOUR] == direct.cells()
    assert len([c for c in held.cells() if c[3] == T0]) == 3  # invocation, latency, reports


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_two_consumers_usage_adds_up_in_the_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Each commit adds its cells to the stored ones: what two consumers counted is their sum,
    whatever the order, and quantiles read from the merged latency histogram."""
    url = (f"sqlite:///{tmp_path / 'u.db'}" if backend == "sqlite"
           else request.getfixturevalue("postgres_url"))
    rng = np.random.default_rng(5)
    parts = []
    for _consumer in range(2):
        for _commit in range(3):
            u = Usage()
            for _batch in range(5):
                u.invocation(target="ep", latency_s=float(rng.lognormal(np.log(0.02), 0.5)),
                             reports={("m/1", f"p{rng.integers(4)}"): int(rng.integers(1, 9))},
                             now_ns=T0 + int(rng.integers(2)) * HOUR)
            u.error(model_version="m/1", target="ep", outcome="unavailable", now_ns=T0)
            parts.append(u.cells())
    store = make_store(url)
    await store.open()
    try:
        await asyncio.gather(*(store.commit(Commit(usage=p)) for p in parts))
        got = await store.usage(since_ns=T0, until_ns=T0 + 2 * HOUR)
        assert got == merge_cells(parts)
        assert await store.usage(since_ns=T0 + HOUR, until_ns=T0 + 2 * HOUR, model_version="x") \
            == []
    finally:
        await store.close()
    s = summarize(got)["m/1"]
    assert s["invocations"] == 30 and s["errors"]["unavailable"] == 6
    assert s["latency_calls"] == 30 and s["latency_ms"]["p50"] is not None


async def usage_cells(db: Path) -> list[UsageCell]:
    store = make_store(f"sqlite:///{db}")
    await store.open()
    try:
        return list(await store.usage(since_ns=0, until_ns=1 << 62))
    finally:
        await store.close()


@pytest.fixture(scope="module")
def model_server() -> Iterator[ModelServerProcess]:
    with ModelServerProcess() as srv:
        yield srv


async def test_consumer_counts_usage_in_its_commits(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory(max_inflight_messages=1000).start()
    db = tmp_path / "r.db"
    root = "usage"
    reports = encoded_reports("devU", 9, range(240))  # pumps p1, p2, p3 in turn
    reports_pump = {seq: ("p1", "p2", "p3")[seq % 3] for seq in range(240)}
    poison = ("devU", 9, 40)  # seq 40: pump p2
    with FaultProxy(model_server.url) as proxy:
        proxy.poison(poison)
        cfg = fault_config(broker.port, proxy.url, db, root,
                           batch={"max_size": 32, "max_delay_ms": 50},
                           monitor={"flush_s": 3600.0})  # held: written on errors, at the stop
        async with running_consumer(cfg) as consumer:
            with Publisher("127.0.0.1", broker.port, "pub-usage") as pub:
                await asyncio.to_thread(
                    pub.publish_all, f"{root}/devices/devU/reports",
                    [dsp.encode_batch("devU", b) for b in chunks(reports[:120], 8)])
                await await_rows(db, 119, 30)
                proxy.fault("503", seconds=0.5)  # an outage: errors while nothing commits
                await asyncio.to_thread(
                    pub.publish_all, f"{root}/devices/devU/reports",
                    [dsp.encode_batch("devU", b) for b in chunks(reports[120:], 8)])
                await await_rows(db, 239, 30)
            # while it runs: the outage's errors are stored (each failed call queues a
            # commit of what is held), the reports scored since the last one are held
            during = summarize(await usage_cells(db))
            assert sum(x["errors"]["unavailable"] for x in during.values()) >= 1
            assert sum(x["reports"] for x in during.values()) < 239
            counters = consumer.counters
    store = make_store(f"sqlite:///{db}")
    await store.open()
    try:
        cells = await store.usage(since_ns=0, until_ns=1 << 62)
    finally:
        await store.close()
    (version,) = {c[0] for c in cells if c[4] == "reports"}
    s = summarize(cells)
    u = s[version]
    per_pump = collections.Counter(reports_pump[i[2]] for i in stored(db))
    assert u["reports"] == sum(per_pump.values()) == 239
    assert {p: x["reports"] for p, x in u["pumps"].items()} == dict(per_pump)
    # A failure before the target's first answer is attributed to version "" (unknown yet).
    assert set(s) <= {version, ""}
    total = {k: sum(x[k] for x in s.values()) for k in ("invocations", "errors_total",
                                                        "dead_letters", "latency_calls")}
    assert sum(x["pumps"].get("p2", {}).get("dead_letters", 0) for x in s.values()) == 1
    assert total["dead_letters"] == 1
    assert total["invocations"] + total["errors_total"] == counters.invocations
    assert total["invocations"] == total["latency_calls"] == u["invocations"]
    rejected = sum(x["errors"]["rejected"] for x in s.values())
    assert rejected == counters.bisections + 1  # each bisected batch, and the poison alone
    assert sum(x["errors"]["unavailable"] for x in s.values()) >= 1 <= proxy.stats["503"]
    assert u["latency_ms"]["p50"] is not None and u["latency_ms"]["p99"] >= u["latency_ms"]["p50"]
    assert set(u["targets"]) == {"pumpwatch"}


async def test_dashboard_serves_usage_in_the_api_and_as_series(tmp_path: Path) -> None:
    from tests.infra.scrape import assert_documented, parse
    from tests.test_dashboard_api import checked, served

    url = f"sqlite:///{tmp_path / 'r.db'}"
    u = Usage()
    for k in range(10):
        u.invocation(target="pumpwatch", latency_s=0.01 * (k + 1), reports={("m/1", "p1"): 4})
    u.error(model_version="m/1", target="pumpwatch", outcome="rejected")
    u.dead_letter(model_version="m/1", target="pumpwatch", pump="p1")
    old = Usage()  # two days ago: outside the 24 h window
    old.invocation(target="pumpwatch", latency_s=1.0, reports={("m/1", "p1"): 99},
                   now_ns=time.time_ns() - 2 * 86400 * 10**9)
    s = make_store(url, synchronous="normal")
    await s.open()
    await s.commit(Commit(usage=u.cells() + old.cells()))
    await s.close()
    async with served(url) as c:
        async with c.get("/api/monitoring") as resp:
            body = await checked(resp, "/api/monitoring")
        async with c.get("/metrics") as resp:
            text = await resp.text()
    m = body["usage"]["versions"]["m/1"]
    assert (m["invocations"], m["reports"], m["dead_letters"]) == (10, 40, 1)
    assert m["errors"] == {"unavailable": 0, "rejected": 1}
    assert m["pumps"] == {"p1": {"reports": 40, "dead_letters": 1}} and m["pumps_total"] == 1
    assert 40 <= m["latency_ms"]["p50"] <= 70
    assert 'pumpwatch_model_invocations{model_version="m/1",target="pumpwatch"} 10.0' in text
    assert 'pumpwatch_model_scored_reports{model_version="m/1",target="pumpwatch"} 40.0' in text
    assert ('pumpwatch_model_invocation_errors{model_version="m/1",outcome="rejected",'
            'target="pumpwatch"} 1.0') in text
    assert 'pumpwatch_model_dead_letters{model_version="m/1",target="pumpwatch"} 1.0' in text
    p99 = next(x for x in text.splitlines() if x.startswith(
        'pumpwatch_model_latency_seconds{model_version="m/1",quantile="0.99"'))
    assert 0.08 <= float(p99.split()[-1]) <= 0.13
    scrape = parse(text)
    assert_documented(scrape, "pumpwatch_model_")
    assert_documented(scrape, "pumpwatch_feature_")


def test_monitor_status_shows_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pumpwatch.cli import main

    url = f"sqlite:///{tmp_path / 'r.db'}"
    u = Usage()
    for k in range(4):
        u.invocation(target="pumpwatch", latency_s=0.02, reports={("pumps/7", f"p{k}"): 5})
    u.error(model_version="pumps/7", target="pumpwatch", outcome="unavailable")

    async def seed() -> None:
        s = make_store(url, synchronous="normal")
        await s.open()
        await s.commit(Commit(usage=u.cells()))
        await s.close()

    asyncio.run(seed())
    reg = ["monitor", "--registry", str(tmp_path / "reg")]
    assert main([*reg, "--json", "status", "--store", url]) == 0
    shown = json.loads(capsys.readouterr().out)["usage_unregistered"]["pumps/7"]
    assert (shown["invocations"], shown["reports"], shown["errors_total"]) == (4, 20, 1)
    assert shown["pumps_total"] == 4
    assert main([*reg, "status", "--store", url]) == 0
    text = capsys.readouterr().out
    assert "pumps/7" in text and "usage (24 h): 4 calls, 20 reports, 1 errors (1 unavailable" \
        in text


async def test_dead_letters_before_the_model_count_under_pre_model_per_pump(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Reports rejected by validation reach no model version: they are counted under the
    version "pre-model" (target ""), per pump where the report decoded and came from the
    device it names, else pump "?"; the scored version's dead letters stay the model's."""
    broker = mosquitto_factory(max_inflight_messages=1000).start()
    db = tmp_path / "r.db"
    root = "premodel"
    topic = f"{root}/devices/devP/reports"
    good = encoded_reports("devP", 4, range(30))  # p1, p2, p3 in turn

    def nonfinite(seq: int, pump: str) -> bytes:  # decodes, fails check_report
        rep = dsp.decode_report(good[0])
        features = msgspec.structs.replace(rep.features, kurtosis=float("nan"))
        rep = msgspec.structs.replace(rep, seq=100 + seq, pump=pump, features=features)
        return dsp.encode_report(rep)

    spoof = encoded_reports("devQ", 4, range(1))  # a report naming another device
    messages = [
        dsp.encode_batch("devP", [*good[:10], nonfinite(1, "p2")]),
        dsp.encode_batch("devP", [nonfinite(2, "p2"), *good[10:20]]),
        dsp.encode_batch("devP", [*good[20:25], *spoof]),
        dsp.encode_batch("devP", good[25:])[:-40],  # truncated: the whole message, no pump
        dsp.encode_batch("devP", good[25:]),
    ]
    cfg = fault_config(broker.port, model_server.url, db, root)
    async with running_consumer(cfg) as consumer:
        with Publisher("127.0.0.1", broker.port, "pub-premodel") as pub:
            await asyncio.to_thread(pub.publish_all, topic, messages)
        await await_rows(db, 30, 30)
        assert await until(lambda: consumer.counters.dead_letters == 4, 10)
    store = make_store(f"sqlite:///{db}")
    await store.open()
    try:
        cells = await store.usage(since_ns=0, until_ns=1 << 62)
    finally:
        await store.close()
    s = summarize(cells)
    assert PRE_MODEL in s, s.keys()
    pre = s[PRE_MODEL]
    assert pre["dead_letters"] == 4
    assert pre["pumps"] == {"p2": {"reports": 0, "dead_letters": 2},
                            UNKNOWN_PUMP: {"reports": 0, "dead_letters": 2}}
    assert set(pre["targets"]) == {""} and pre["invocations"] == pre["reports"] == 0
    (version,) = set(s) - {PRE_MODEL}
    assert s[version]["reports"] == 30 and s[version]["dead_letters"] == 0

    from pumpwatch.cli import main

    reg = ["monitor", "--registry", str(tmp_path / "reg")]
    # the command runs its own event loop: off this one
    assert await asyncio.to_thread(main, [*reg, "status", "--store", f"sqlite:///{db}"]) == 0
    text = capsys.readouterr().out
    assert "pre-model" in text and "dead letters before the model" in text
    assert "4 dead letters" in text
