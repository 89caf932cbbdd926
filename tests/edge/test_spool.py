"""The spool: FIFO with lease/ack/release, bounded, crash-safe (kill -9 many times)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.spool import HEADER_BYTES, Spool, SpoolError

from ._spool_writer import payload

ROOT = Path(__file__).resolve().parents[2]


def _recs(epoch: int, seqs: range, size: int = 100) -> list[tuple[int, int, bytes]]:
    return [(epoch, s, bytes([s % 251]) * size) for s in seqs]


def test_fifo_lease_ack_release(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        sp.append(_recs(7, range(10)), stamp_ns=123)
        assert sp.stats.records == 10
        assert [r.seq for r in sp.peek(3)] == [0, 1, 2]
        got = sp.lease(4)
        assert [r.seq for r in got] == [0, 1, 2, 3]
        assert got[0].payload == bytes([0]) * 100 and got[0].stamp_ns == 123
        assert [r.seq for r in sp.lease(2)] == [4, 5]
        assert sp.release([(7, 1), (7, 2)]) == 2
        assert [r.seq for r in sp.lease(3)] == [1, 2, 6]  # released go out again, oldest first
        assert sp.ack([(7, 0), (7, 1), (7, 99)]) == 2
        assert sp.stats.acks_unknown == 1
        assert sp.stats.records == 8
        assert sp.pending == 3  # 7, 8, 9


def test_lease_respects_byte_budget_but_always_gives_one(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        sp.append(_recs(1, range(5), size=1000))
        assert len(sp.lease(10, max_bytes=2500)) == 2
        assert len(sp.lease(10, max_bytes=10)) == 1


def test_reopen_keeps_unacked_and_forgets_leases(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=16 * 1024) as sp:
        sp.append(_recs(1, range(100)))
        sp.append(_recs(1, range(100, 300)))
        leased = sp.lease(150)
        sp.ack([r.key for r in leased[:120]])
        sp.lease(10)
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=16 * 1024) as sp:
        assert sp.stats.recovered == 180
        seqs = [r.seq for r in sp.peek(1000)]
        assert seqs == list(range(120, 300))
        # an agent restart draws a new epoch; the old records keep theirs
        sp.append(_recs(2, range(3)))
        keys = [r.key for r in sp.lease(1000)]
        assert keys[0] == (1, 120) and keys[-1] == (2, 2)
        sp.ack(keys)
        assert sp.stats.records == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len([n for n in names if n.endswith(".log")]) <= 2


def test_fully_acked_segments_are_deleted(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=16 * 1024) as sp:
        for i in range(20):
            sp.append(_recs(1, range(i * 50, i * 50 + 50)))
            sp.ack([r.key for r in sp.lease(1000)])
        assert sp.stats.segments <= 2
        assert sp.stats.bytes <= 2 * 16 * 1024 + 50 * (100 + HEADER_BYTES)


def test_full_spool_drops_oldest_and_counts(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=64 * 1024, segment_bytes=16 * 1024) as sp:
        for i in range(100):
            sp.append(_recs(1, range(i * 10, i * 10 + 10)))
        assert sp.stats.bytes <= 64 * 1024
        assert sp.stats.dropped > 0
        assert sp.stats.records + sp.stats.dropped == 1000
        seqs = [r.seq for r in sp.peek(10_000)]
        assert seqs == list(range(1000 - len(seqs), 1000))  # newest kept, contiguous


def test_torn_tail_is_truncated_and_earlier_records_survive(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        sp.append(_recs(1, range(5)))
    seg = sorted(tmp_path.glob("seg-*.log"))[-1]
    full = seg.read_bytes()
    # a record cut mid-payload, as a killed write leaves it
    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        pass
    seg.write_bytes(full + full[: HEADER_BYTES + 40])
    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        assert [r.seq for r in sp.peek(100)] == [0, 1, 2, 3, 4]
        assert sp.stats.torn_tails == 1
        assert sp.stats.corrupt_bytes == HEADER_BYTES + 40
    assert seg.read_bytes() == full


def test_damage_inside_a_segment_skips_only_that_record(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        sp.append(_recs(1, range(5)))
    seg = sorted(tmp_path.glob("seg-*.log"))[0]
    data = bytearray(seg.read_bytes())
    rec = HEADER_BYTES + 100
    data[2 * rec + HEADER_BYTES + 5] ^= 0xFF  # flip a payload byte of record 2
    seg.write_bytes(bytes(data))
    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        assert [r.seq for r in sp.peek(100)] == [0, 1, 3, 4]
        assert sp.stats.corrupt_bytes == rec


def test_torn_ack_file_is_tolerated(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        sp.append(_recs(1, range(5)))
        sp.ack([r.key for r in sp.lease(2)])
    ack = sorted(tmp_path.glob("seg-*.ack"))[0]
    ack.write_bytes(ack.read_bytes() + b"\x01\x02\x03")
    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        assert [r.seq for r in sp.peek(100)] == [2, 3, 4]


def test_second_process_cannot_open_a_spool_in_use(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1 << 20), pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path, max_bytes=1 << 20)


def test_random_operations_match_a_model(tmp_path: Path) -> None:
    """Random appends, leases, acks, releases and reopens against a plain list model."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    model: dict[tuple[int, int], bytes] = {}  # unacked
    leased: set[tuple[int, int]] = set()
    seq = 0
    sp = Spool(tmp_path, max_bytes=1 << 24, segment_bytes=20_000)
    try:
        for _ in range(400):
            op = rng.random()
            if op < 0.35:
                recs = [
                    (1, seq + i, os.urandom(rng.randint(0, 3000))) for i in range(rng.randint(1, 9))
                ]
                seq += len(recs)
                sp.append(recs)
                model.update({(e, s): p for e, s, p in recs})
            elif op < 0.6:
                got = sp.lease(rng.randint(1, 20))
                expect = sorted(k for k in model if k not in leased)[: len(got)]
                assert [r.key for r in got] == expect, f"seed={seed}"
                assert all(model[r.key] == r.payload for r in got), f"seed={seed}"
                leased.update(r.key for r in got)
            elif op < 0.8 and leased:
                some = rng.sample(sorted(leased), rng.randint(1, len(leased)))
                assert sp.ack(some) == len(some), f"seed={seed}"
                for k in some:
                    leased.discard(k)
                    del model[k]
            elif op < 0.95 and leased:
                some = rng.sample(sorted(leased), rng.randint(1, len(leased)))
                sp.release(some)
                leased.difference_update(some)
            else:
                sp.close()
                sp = Spool(tmp_path, max_bytes=1 << 24, segment_bytes=20_000)
                leased.clear()
            assert sp.stats.records == len(model), f"seed={seed}"
        assert {r.key: r.payload for r in sp.peek(10**6)} == {
            k: v for k, v in model.items() if k not in leased
        }, f"seed={seed}"
    finally:
        sp.close()


@pytest.mark.parametrize("kills", [int(os.environ.get("PUMPWATCH_SPOOL_KILLS", "20"))])
def test_spool_survives_kill_9_at_random_points(tmp_path: Path, kills: int) -> None:
    """A writer process is SIGKILLed at random moments, again and again; after every
    kill the spool opens clean, and every record the writer was told is durable
    (and did not start acking) is there, byte for byte."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    spool_dir = tmp_path / "spool"
    durable: dict[tuple[int, int], bytes] = {}
    maybe_gone: set[tuple[int, int]] = set()
    total_appended = 0
    torn = 0  # kills that landed mid-write (informational: timing decides)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_ in range(kills):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.edge._spool_writer",
                str(spool_dir),
                str(rng.getrandbits(30)),
            ],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        assert proc.stdout is not None
        head = proc.stdout.readline()  # the writer is up and has appended once
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        out = head + out
        for line in out.decode().splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] == "A":
                e, a, b = int(parts[1]), int(parts[2]), int(parts[3])
                for s in range(a, b + 1):
                    durable[(e, s)] = payload(e, s)
                total_appended += b - a + 1
            elif len(parts) == 3 and parts[0] == "K":
                maybe_gone.add((int(parts[1]), int(parts[2])))
        with Spool(spool_dir, max_bytes=1 << 34, segment_bytes=512 * 1024) as sp:
            present = {r.key: r.payload for r in sp.peek(10**7)}
            torn += sp.stats.torn_tails
        reported: dict[int, int] = {}
        for e, s in durable:
            reported[e] = max(reported.get(e, -1), s)
        for key, data in present.items():
            # every record is intact; one the writer had not yet reported must be
            # from the append the kill interrupted (after the last reported seq)
            assert data == payload(*key), f"seed={seed} round={round_}: {key} corrupted"
            if key not in durable:
                assert key[1] > reported.get(key[0], -1), f"seed={seed}: stray record {key}"
                durable[key] = data
        missing = [k for k in durable if k not in present and k not in maybe_gone]
        assert not missing, f"seed={seed} round={round_}: lost {len(missing)} e.g. {missing[:3]}"
        for k in [k for k in maybe_gone if k not in present]:
            durable.pop(k, None)
    assert total_appended > kills  # the writer really wrote between kills
    print(f"spool kill test: {kills} kills, {total_appended} appended, {torn} torn tails repaired")


def test_failed_append_leaves_no_half_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full mid-write: SpoolError, the partial bytes are cut off, the spool goes on."""
    import errno

    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        sp.append(_recs(1, range(3)))
        real_write = os.write

        def half_then_full(fd: int, data: object) -> int:
            mv = memoryview(data)  # type: ignore[arg-type]
            real_write(fd, mv[: len(mv) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", half_then_full)  # the os.write edge.spool calls
        with pytest.raises(SpoolError, match="No space left"):
            sp.append(_recs(1, range(3, 6)))
        monkeypatch.setattr(os, "write", real_write)
        sp.append(_recs(1, range(6, 8)))
        assert [r.seq for r in sp.peek(100)] == [0, 1, 2, 6, 7]
    with Spool(tmp_path, max_bytes=1 << 20) as sp:
        assert [r.seq for r in sp.peek(100)] == [0, 1, 2, 6, 7]
        assert sp.stats.corrupt_bytes == 0
