"""Message validation: every report accepted or dead-lettered with a reason; decoder fuzzing."""

from __future__ import annotations

import hashlib
import os
import random
from collections import Counter

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dsp
from cloud.consumer import Parsed, RemoteError, parse_message, topic_device
from tests.infra.pipeline import encoded_reports

ROOT = "pw"
TOPIC = "pw/devices/dev1/reports"
MAX = 128 * 1024


def parse(payload: bytes, topic: str = TOPIC, max_payload: int = MAX) -> Parsed:
    return parse_message(topic, payload, root=ROOT, max_payload=max_payload, received_ns=123)


def good(n: int = 4, device: str = "dev1", seq0: int = 0) -> list[bytes]:
    return encoded_reports(device, 99, range(seq0, seq0 + n))


def test_topic_device() -> None:
    assert topic_device("pw/devices/abc/reports", "pw") == "abc"
    for bad in ["pw/devices//reports", "pw/devices/a/b/reports", "pw/devices/a/status",
                "other/devices/a/reports"]:
        with pytest.raises(RemoteError) as exc:
            topic_device(bad, "pw")
        assert exc.value.kind == "topic"


def test_good_message_is_accepted_with_raw_bytes_untouched() -> None:
    reports = good(5)
    p = parse(dsp.encode_batch("dev1", reports))
    assert p.dead == []
    assert [a.raw for a in p.accepted] == reports
    assert [a.identity for a in p.accepted] == [("dev1", 99, i) for i in range(5)]
    assert p.parts == 5


@pytest.mark.parametrize(
    ("payload", "topic", "kind", "reason"),
    [
        (dsp.encode_batch("dev1", good(1))[:40], TOPIC, "malformed", "truncated"),
        (b"\xc1", TOPIC, "malformed", "malformed"),
        (msgspec.msgpack.encode({"v": 2, "device": "dev1", "reports": []}), TOPIC, "schema",
         "version"),
        (msgspec.msgpack.encode({"v": 1, "device": "dev1"}), TOPIC, "schema", "reports"),
        (msgspec.msgpack.encode([1, 2, 3]), TOPIC, "schema", "Expected"),
        (dsp.encode_batch("evil", []), TOPIC, "spoofed", "evil"),
        (dsp.encode_batch("dev1", []), "pw/devices/dev1/status", "topic", "topic"),
        (b"\x00" * (MAX + 1), TOPIC, "oversize", "max_payload"),
    ],
)
def test_whole_message_dead_letters(payload: bytes, topic: str, kind: str, reason: str) -> None:
    p = parse(payload, topic)
    assert p.accepted == []
    assert len(p.dead) == 1
    (d,) = p.dead
    assert (d.kind, d.part, d.topic, d.received_ns) == (kind, -1, topic, 123)
    assert reason in d.reason
    if len(payload) <= 4096:
        assert d.payload == payload
    else:  # capped: the first 4096 bytes, with the whole one's size and digest named
        assert d.payload == payload[:4096]
        assert f"payload {len(payload)} bytes" in d.reason
        assert hashlib.blake2b(payload, digest_size=16).hexdigest() in d.reason
    assert len(d.key) == 16


def test_bad_reports_inside_a_good_envelope_are_dead_lettered_individually() -> None:
    ok = good(3)
    # Reports are inline msgpack: a truncated one breaks the envelope, so the bad
    # reports inside a good envelope are well-formed values of the wrong shape.
    truncated = msgspec.msgpack.encode(ok[0][: len(ok[0]) // 2])  # bin, not a report
    spoofed = encoded_reports("intruder", 5, [7])[0]
    wrong_v = msgspec.msgpack.encode([2, "dev1", 1, 2])
    payload = dsp.encode_batch("dev1", [ok[0], truncated, ok[1], spoofed, wrong_v, ok[2], ok[1]])
    p = parse(payload)
    assert [a.index for a in p.accepted] == [0, 2, 5]
    assert p.duplicates == 1  # ok[1] twice: accounted for by the first copy
    assert sorted((d.part, d.kind) for d in p.dead) == [
        (1, "schema"), (3, "spoofed"), (4, "schema"),
    ]
    spoof = next(d for d in p.dead if d.kind == "spoofed")
    assert (spoof.device, spoof.epoch, spoof.seq) == ("intruder", 5, 7)
    assert spoof.payload == spoofed
    assert p.parts == 7
    # keys are per message, parts distinguish reports
    assert len({(d.key, d.part) for d in p.dead}) == 3


def test_integers_a_store_cannot_hold_are_dead_lettered() -> None:
    base = dsp.decode_report(good(1)[0])
    huge = [
        msgspec.structs.replace(base, seq=1 << 63),
        msgspec.structs.replace(base, t0_ns=1 << 63),
        msgspec.structs.replace(base, t0_ns=(1 << 64) - 1),
        msgspec.structs.replace(base, epoch=(1 << 64) - 1, seq=3),  # fine: unsigned epoch
    ]
    p = parse(dsp.encode_batch("dev1", [dsp.encode_report(r) for r in huge]))
    assert [(d.part, d.kind) for d in p.dead] == [(0, "schema"), (1, "schema"), (2, "schema")]
    # the schema bounds seq/t0_ns to int64 (epoch is uint64 and mapped by the store)
    assert "64-bit" in p.dead[0].reason or "9223372036854775807" in p.dead[0].reason
    assert [a.index for a in p.accepted] == [3]


def _check_accounted(payload: bytes, p: Parsed) -> str:
    """Every case lands in exactly one bucket, and the parts add up."""
    try:
        batch = dsp.decode_batch(payload) if len(payload) <= MAX else None
    except Exception:  # the codec lets UnicodeDecodeError through
        batch = None
    if batch is None or batch.device != "dev1":
        assert p.accepted == []
        assert len(p.dead) == 1
        assert p.dead[0].part == -1
        assert p.dead[0].reason
        assert p.dead_pumps == [None]  # usage counts it once, pump unknown
        return "message:" + p.dead[0].kind
    assert p.parts == len(batch.reports)
    # usage counts every dead-lettered report before the model, with its pump if known
    assert len(p.dead_pumps) == p.dead_parts
    expected = set(range(len(batch.reports))) - _dup_indices(batch)
    if len(p.dead) == 1 and p.dead[0].part == -1:
        # more than max_dead_per_message bad reports collapse into one message-level letter
        assert p.dead_parts > 8
        assert f"{p.dead_parts} of {len(batch.reports)} reports rejected" in p.dead[0].reason
        accepted = {a.index for a in p.accepted}
        assert accepted <= expected
        assert len(accepted) + p.dead_parts == len(expected)
        return "collapsed"
    assert sorted([a.index for a in p.accepted] + [d.part for d in p.dead]) == sorted(expected)
    for a in p.accepted:
        assert dsp.decode_report(a.raw).device == "dev1"
    for d in p.dead:
        assert d.reason
    if p.dead and p.accepted:
        return "mixed"
    return "accepted" if p.accepted else "reports:dead" if p.dead else "empty"


def _dup_indices(batch: dsp.ReportBatch) -> set[int]:
    """Reports that repeat the identity of an earlier *valid* report of the message: a
    report that is malformed (it would be a dead letter in a message of its own, e.g. a
    corrupt spectrum under a repeated identity) is not a duplicate but a dead letter."""
    seen: set[tuple[str, int, int]] = set()
    dups = set()
    for i, raw in enumerate(batch.reports):
        try:
            r = dsp.decode_report(bytes(raw))
        except Exception:  # noqa: S112
            continue
        if r.device != "dev1" or not parse(dsp.encode_batch("dev1", [bytes(raw)])).accepted:
            continue
        if r.identity in seen:
            dups.add(i)
        seen.add(r.identity)
    return dups


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    op = rng.randrange(7)
    if op == 0 and b:  # flip bits
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif op == 1:  # truncate
        del b[rng.randrange(len(b) + 1) :]
    elif op == 2:  # insert junk
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.randbytes(rng.randint(1, 16))
    elif op == 3 and b:  # overwrite a byte with a msgpack type marker
        b[rng.randrange(len(b))] = rng.choice([0xC0, 0xC1, 0xC2, 0xCF, 0xD3, 0xDB, 0xDD, 0xDF,
                                              0x90, 0x80, 0xA0, 0xFF])
    elif op == 4:  # splice two halves
        i, j = sorted(rng.randrange(len(b) + 1) for _ in range(2))
        b = b[:i] + b[j:] + b[i:j]
    elif op == 5:  # append trailing data
        b += rng.randbytes(rng.randint(1, 8))
    else:  # delete a range
        i = rng.randrange(len(b) + 1)
        del b[i : i + rng.randint(1, 64)]
    return bytes(b)


def test_fuzz_random_and_mutated_payloads_never_crash_and_are_accounted_for() -> None:
    seed = int(os.environ.get("PUMPWATCH_FUZZ_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    reports = good(6)
    seeds = [
        dsp.encode_batch("dev1", reports[:1]),
        dsp.encode_batch("dev1", reports[:4]),
        dsp.encode_batch("dev1", reports),
        dsp.encode_batch("dev1", []),
    ]
    buckets: Counter[str] = Counter()
    n = 12_000
    try:
        for i in range(n):
            if i % 10 == 0:
                payload = rng.randbytes(rng.randint(0, 300))
            elif i % 10 == 1:  # a good envelope around one mutated report
                k = rng.randrange(len(reports))
                payload = dsp.encode_batch(
                    "dev1", [*reports[:k], _mutate(rng, reports[k]), *reports[k + 1 :]]
                )
            else:
                payload = rng.choice(seeds)
                for _ in range(rng.randint(1, 3)):
                    payload = _mutate(rng, payload)
            p = parse(payload)
            buckets[_check_accounted(payload, p)] += 1
    except Exception:
        print(f"fuzz seed {seed}, case {i}")
        raise
    assert sum(buckets.values()) == n
    print(f"fuzz seed {seed}: {dict(buckets)}")
    # The corpus must actually exercise the interesting paths.
    assert buckets["mixed"] > 60
    assert sum(v for k, v in buckets.items() if k.startswith("message:")) > 1000


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats() | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=6)
    | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(reports=st.lists(msgpack_values, max_size=5), v=st.sampled_from([1, 1, 2, "1", None]))
def test_fuzz_structured_wrong_schema(reports: list[object], v: object) -> None:
    """Well-formed msgpack of the wrong shape inside a plausible envelope."""
    payload = msgspec.msgpack.encode({"v": v, "device": "dev1", "reports": reports})
    p = parse(payload)
    _check_accounted(payload, p)
    if v == 1:
        assert p.parts == len(reports)
