"""Validation before the model, the name rule, and bounded dead letters (pure, no sockets),
plus one run against the real model server: a report the model could not use never
reaches it, so no batch is bisected for it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

import dsp
from cloud.consumer import parse_message
from cloud.consumer.deadletters import DeadLetterBudget
from cloud.consumer.topics import topic_safe
from cloud.store import DeadLetter
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto
from tests.infra.pipeline import Publisher, consumer_config, encoded_reports
from tests.test_consumer_pipeline import (
    assert_exactly_once,
    await_rows,
    dead_letters,
    running_consumer,
)

ROOT = "pw"
TOPIC = "pw/devices/dev1/reports"


def _report(seq: int = 0) -> dsp.Report:
    return dsp.decode_report(encoded_reports("dev1", 5, range(seq, seq + 1))[0])


def _bad(kind: str, seq: int = 0) -> bytes:
    r = _report(seq)
    rep = msgspec.structs.replace
    if kind == "name":
        return dsp.encode_report(rep(r, pump="p\x12"))
    if kind == "lengths":
        return dsp.encode_report(rep(r, features=rep(r.features,
                                                     band_rms=r.features.band_rms[:-1])))
    if kind == "blob":
        return dsp.encode_report(rep(r, spectrum=rep(r.spectrum, data=b"\x00corrupt")))
    if kind == "nonfinite":
        return dsp.encode_report(rep(r, fs=float("inf")))
    if kind == "nonfinite_rpm":
        return dsp.encode_report(rep(r, speed=rep(r.speed, rpm=float("inf"))))
    if kind == "nyquist":
        return dsp.encode_report(rep(r, spectrum=rep(r.spectrum, df=r.fs)))
    raise AssertionError(kind)


@pytest.mark.parametrize(("bad", "kind", "words"), [
    ("name", "name", "name rule"),
    ("lengths", "lengths", "band_rms"),
    ("blob", "blob", "spectrum"),
    ("nonfinite", "nonfinite", "fs=inf"),
    ("nonfinite_rpm", "nonfinite", "rpm=inf"),
    ("nyquist", "lengths", "Nyquist"),
])
def test_a_report_the_model_cannot_use_is_a_named_dead_letter(
    bad: str, kind: str, words: str
) -> None:
    good = encoded_reports("dev1", 5, range(1, 4))
    p = parse_message(TOPIC, dsp.encode_batch("dev1", [_bad(bad), *good]), root=ROOT,
                      max_payload=1 << 20, received_ns=1)
    assert [a.identity[2] for a in p.accepted] == [1, 2, 3]
    (d,) = p.dead
    assert (d.kind, d.part) == (kind, 0), d.reason
    assert words in d.reason
    assert (d.device, d.epoch, d.seq) == ("dev1", 5, 0)
    assert p.confirmable == [("dev1", 5, 0)]  # committed as a dead letter: confirmed too


def test_names_that_break_the_rule_never_become_topics() -> None:
    for bad in ["p\x12", "a/b", "+", "x#", "", "a" * 65, "a\x00b", "../x", "<b>"]:
        assert not topic_safe(bad)
    for ok in ["p1", "pump-7.a:b_c", "A" * 64]:
        assert topic_safe(ok)
    with pytest.raises(dsp.ReportDecodeError) as exc:
        dsp.decode_batch(dsp.encode_batch("dev\x01", []))
    assert exc.value.kind == "name"
    p = parse_message("pw/devices/d+x/reports", dsp.encode_batch("d+x", []), root=ROOT,
                      max_payload=1 << 20, received_ns=1)
    assert [d.kind for d in p.dead] == ["name"]


def test_a_message_of_many_bad_reports_is_one_dead_letter_with_a_count() -> None:
    nil = msgspec.msgpack.encode(None)
    payload = dsp.encode_batch("dev1", [nil] * 5001)
    p = parse_message(TOPIC, payload, root=ROOT, max_payload=1 << 20, received_ns=1)
    (d,) = p.dead
    assert d.part == -1 and "5001 of 5001 reports rejected" in d.reason
    assert len(d.payload) <= 4096 and p.parts == 5001


def test_dead_letter_budget_per_device_drops_and_counts() -> None:
    b = DeadLetterBudget(rate=1.0, burst=3.0, bytes_per_s=1e6)

    def dl(i: int) -> DeadLetter:
        return DeadLetter(key=bytes(16), part=i, received_ns=0, topic="t", kind="schema",
                          reason="r", payload=b"x")

    assert len(b.admit("a", [dl(i) for i in range(10)], now=0.0)) == 3
    assert len(b.admit("b", [dl(0)], now=0.0)) == 1  # another device has its own budget
    assert len(b.admit("a", [dl(0), dl(1)], now=1.0)) == 1  # refilled at 1/s
    assert b.stats.dropped == 8 and b.stats.dropped_by_device == {"a": 8}
    small = DeadLetterBudget(rate=100.0, burst=100.0, bytes_per_s=10.0)
    assert small.admit("a", [dl(0)] * 50, now=0.0) != []
    assert small.stats.dropped > 0  # the byte budget bites before the row budget


@pytest.fixture(scope="module")
def model_server() -> Iterator[ModelServerProcess]:
    with ModelServerProcess() as srv:
        yield srv


async def test_bad_reports_never_reach_the_endpoint_and_never_bisect(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory().start()
    db = tmp_path / "r.db"
    root = "valid"
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root, batch={"max_size": 32, "max_delay_ms": 50})
    kinds = ["name", "lengths", "blob", "nonfinite", "nyquist"]
    messages = []
    good: set[tuple[str, int, int]] = set()
    for m in range(20):
        raws = encoded_reports("dev1", 5, range(10 * m + 1, 10 * m + 10))
        good |= {("dev1", 5, s) for s in range(10 * m + 1, 10 * m + 10)}
        messages.append(dsp.encode_batch("dev1", [_bad(kinds[m % 5], 10 * m), *raws]))
    async with running_consumer(cfg) as consumer:
        with Publisher("127.0.0.1", broker.port, "pub-valid") as pub:
            await asyncio.to_thread(pub.publish_all, f"{root}/devices/dev1/reports", messages)
        await await_rows(db, len(good), 30)
        await asyncio.sleep(0.3)
        c = consumer.counters
        assert (c.bisections, c.model_dead_letters) == (0, 0)
        assert c.invoked_reports == len(good)
        assert c.result_names_refused == 0
    assert_exactly_once(db, good)
    # every bad report is one dead letter with its named reason ("nyquist" is a lengths one)
    assert Counter(k for k, _, _ in dead_letters(db)) == Counter(
        {"name": 4, "lengths": 8, "blob": 4, "nonfinite": 4})
