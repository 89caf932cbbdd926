"""The report wire format: budget, round trip, strict decoding."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

import dsp
from dsp import quantize
from dsp.analyze import MAX_REPORT_BYTES
from pumpwatch.commands.selftest import demo_signal

ASSET = dsp.Asset(
    bearings=[dsp.Bearing(n_balls=9, ball_d_mm=7.94, pitch_d_mm=39.04, designation="6205")],
    vanes=6,
    rated_rpm=2950.0,
)


def _report(cfg: dsp.ReportConfig, x: np.ndarray, **ident: object) -> dsp.Report:
    spec = dsp.ChannelSpec(asset=ASSET)
    (res,) = dsp.analyze(x, cfg, [spec])
    kw: dict[str, object] = {
        "device": "gw-01", "epoch": 2**64 - 1, "seq": 123456, "site": "plant-a",
        "pump": "p-101", "channel": "de-x", "t0_ns": 1_790_000_000_123_456_789,
    }
    kw.update(ident)
    return dsp.make_report(res, cfg, spec, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_default_report_fits_the_wire_budget(seed: int) -> None:
    cfg = dsp.ReportConfig()
    r = _report(cfg, demo_signal(cfg.fs, cfg.interval_samples, 2950.0, seed))
    wire = dsp.encode_report(r)
    assert r.spectrum.n == 1600 and r.envelope is not None
    assert len(wire) <= 1700, f"seed={seed}: {len(wire)} bytes"
    assert 2 * cfg.interval_samples / len(wire) >= 30


def test_no_configuration_exceeds_5120_bytes() -> None:
    # Worst case: the most lines allowed, finest steps, white noise, longest names.
    cfg = dsp.ReportConfig(
        nfft=8192, hop=1024, lines=3500, step_db=0.05, env_lines=500, env_step_db=0.05,
        env_fmax=500.0,
    )
    x = np.random.default_rng(0).standard_normal((1, cfg.interval_samples)).astype(np.float32)
    r = _report(cfg, x, device="d" * 128, site="s" * 64, pump="p" * 64, channel="c" * 64)
    assert len(dsp.encode_report(r)) <= MAX_REPORT_BYTES
    with pytest.raises(ValueError, match="lines \\+ env_lines"):
        dsp.ReportConfig(nfft=16384, lines=6400)


def test_round_trip_restores_db_within_half_a_step() -> None:
    cfg = dsp.ReportConfig()
    x = demo_signal(cfg.fs, cfg.interval_samples, 1480.0, 9)
    r = _report(cfg, x)
    back = dsp.decode_report(dsp.encode_report(r))
    assert back == r
    _, psd = dsp.welch_psd(x, cfg.fs, nfft=cfg.nfft, hop=cfg.hop)
    truth = quantize.to_db(psd[0, : cfg.lines])
    got = back.spectrum.db()
    near = truth >= truth.max() - 60
    assert np.abs(got[near] - truth[near]).max() <= cfg.step_db / 2 + 1e-9
    np.testing.assert_allclose(back.spectrum.freqs()[:3], [0.0, 6.25, 12.5])


def test_quantize_clips_below_the_range_and_handles_silence() -> None:
    db = np.array([0.0, -10.0, -500.0, np.nan])
    codes, off = quantize.quantize_db(db, 0.5)
    assert codes[0] == 255 and float(off) == pytest.approx(-127.5)
    assert codes[2] == 0 and codes[3] == 0
    codes, off = quantize.quantize_db(np.full(10, -300.0), 0.5)
    np.testing.assert_allclose(quantize.dequantize_db(codes, 0.5, float(off)), -300.0)
    for n in (0, 1, 1600):
        c = np.random.default_rng(n).integers(0, 256, n).astype(np.uint8)
        np.testing.assert_array_equal(quantize.unpack_codes(quantize.pack_codes(c), n), c)
    with pytest.raises(ValueError, match="header says"):
        quantize.unpack_codes(quantize.pack_codes(np.zeros(10, np.uint8)), 11)
    with pytest.raises(ValueError, match="not valid"):
        quantize.unpack_codes(b"garbage", 10)


def test_a_batch_carries_reports_as_their_own_bytes() -> None:
    cfg = dsp.ReportConfig()
    x = demo_signal(cfg.fs, cfg.interval_samples, 2950.0, 1)
    wires = [dsp.encode_report(_report(cfg, x, seq=i)) for i in range(3)]
    batch = dsp.decode_batch(dsp.encode_batch("gw-01", wires))
    assert batch.device == "gw-01"
    assert [bytes(r) for r in batch.reports] == wires
    assert [dsp.decode_report(r).seq for r in batch.reports] == [0, 1, 2]


def test_unknown_schema_version_is_rejected_by_name() -> None:
    cfg = dsp.ReportConfig()
    r = _report(cfg, demo_signal(cfg.fs, cfg.interval_samples, 2950.0, 1))
    future = msgspec.structs.replace(r, v=99)
    with pytest.raises(dsp.ReportDecodeError, match="schema version v=99") as err:
        dsp.decode_report(dsp.encode_report(future))
    assert err.value.identity == r.identity
    bad_batch = msgspec.msgpack.encode({"v": 7, "device": "gw", "reports": []})
    with pytest.raises(dsp.ReportDecodeError, match="v=7"):
        dsp.decode_batch(bad_batch)


def test_wrong_types_and_truncation_name_the_problem() -> None:
    cfg = dsp.ReportConfig()
    r = _report(cfg, demo_signal(cfg.fs, cfg.interval_samples, 2950.0, 1))
    fields = list(msgspec.msgpack.decode(dsp.encode_report(r)))
    fields[3] = "not-a-seq"  # seq
    with pytest.raises(dsp.ReportDecodeError, match=r"Expected `int`, got `str` - at `\$\[3\]`"):
        dsp.decode_report(msgspec.msgpack.encode(fields))
    wire = dsp.encode_report(r)
    with pytest.raises(dsp.ReportDecodeError, match="truncated"):
        dsp.decode_report(wire[: len(wire) // 2])
    with pytest.raises(dsp.ReportDecodeError, match="invalid report batch"):
        dsp.decode_batch(b"\x93\x01")


def test_json_form_names_every_field() -> None:
    cfg = dsp.ReportConfig()
    r = _report(cfg, demo_signal(cfg.fs, cfg.interval_samples, 2950.0, 1))
    d = dsp.report_to_builtins(r)
    assert d["device"] == "gw-01" and d["seq"] == 123456
    spec = d["spectrum"]
    assert isinstance(spec, dict) and len(spec["db"]) == 1600


def test_decode_errors_say_what_kind_of_bad_they_are() -> None:
    cfg = dsp.ReportConfig()
    r = _report(cfg, demo_signal(cfg.fs, cfg.interval_samples, 2950.0, 1))
    wire = dsp.encode_report(r)
    with pytest.raises(dsp.ReportDecodeError) as e1:
        dsp.decode_report(wire[:40])
    assert e1.value.kind == "malformed"
    fields = list(msgspec.msgpack.decode(wire))
    fields[3] = 2**63  # seq beyond int64: rejected, not stored
    with pytest.raises(dsp.ReportDecodeError) as e2:
        dsp.decode_report(msgspec.msgpack.encode(fields))
    assert e2.value.kind == "schema" and "$[3]" in e2.value.reason
    with pytest.raises(dsp.ReportDecodeError) as e3:
        dsp.decode_report(dsp.encode_report(msgspec.structs.replace(r, v=2)))
    assert e3.value.kind == "version"
    # Invalid UTF-8 in a string field is a malformed payload, not a crash.
    bad_utf8 = wire.replace(b"gw-01", b"gw-\xff\xfe", 1)
    with pytest.raises(dsp.ReportDecodeError):
        dsp.decode_report(bad_utf8)
    bad_batch = dsp.encode_batch("gw-01", []).replace(b"gw-01", b"gw-\xff\xfe", 1)
    with pytest.raises(dsp.ReportDecodeError):
        dsp.decode_batch(bad_batch)


def test_a_name_with_a_trailing_newline_is_refused_by_the_codec() -> None:
    """``$`` in the name pattern would let ``"p1\\n"`` through; the rule is anchored with \\Z."""
    import msgspec as _m

    from dsp.report import Name

    assert _m.json.decode(b'"p-01:a.b_c"', type=Name) == "p-01:a.b_c"
    for bad in (b'"p1\\n"', b'"p\\u00121"', b'"a/b"', b'"x#"', b'""'):
        with pytest.raises(_m.ValidationError):
            _m.json.decode(bad, type=Name)


def test_a_spectrum_frame_declaring_a_huge_size_is_refused_not_allocated() -> None:
    """A zstd header may declare its content size, and the library would allocate it:
    a corrupt blob declaring 1 TiB is a ValueError (a dead letter), never a MemoryError."""
    from dsp import quantize

    magic = bytes.fromhex("28b52ffd")
    header = bytes([0xE0]) + (1 << 40).to_bytes(8, "little")  # single segment, 8-byte size
    block = bytes([0x01, 0x00, 0x00])  # one empty raw last block
    forged = magic + header + block
    with pytest.raises(ValueError, match="declares"):
        quantize.unpack_codes(forged, 1600)
    with pytest.raises(ValueError, match="declares"):
        quantize.check_codes(forged, 1600)
    good = quantize.pack_codes(np.arange(1600, dtype=np.uint8))
    assert quantize.unpack_codes(good, 1600).size == 1600


def test_decoded_reports_and_result_rows_are_not_tracked_by_the_garbage_collector() -> None:
    # A consumer holds thousands of reports in flight and every collection traversed each
    # of them (and its asset, features): gc=False on these acyclic structs cut the
    # consumer's collector time by about a third. Their lists stay tracked (acyclic too).
    import gc

    from cloud.store.records import ArchivedReport, EvidenceRow, ResultRow

    cfg = dsp.ReportConfig()
    rep = dsp.decode_report(dsp.encode_report(_report(cfg, demo_signal(cfg.fs, 25600, 2950.0, 1))))
    assert rep.asset.bearings and rep.features.band_rms
    for obj in (rep, rep.asset, rep.asset.bearings[0], rep.features, rep.spectrum, rep.speed,
                rep.quality):
        assert not gc.is_tracked(obj), type(obj).__name__
    row = ResultRow(device="d", epoch=1, seq=2, site="s", pump="p", channel="c", t0_ns=0,
                    condition="healthy", probabilities={"healthy": 1.0}, anomaly_score=0.1,
                    anomaly_threshold=1.0, anomalous=False, baseline="fleet", iso_zone="A",
                    velocity_rms=1.0, rpm=None, evidence=[EvidenceRow("n", 1.0, "x")],
                    model_version="m", target="t", published_ns=None, received_ns=0)
    arch = ArchivedReport(device="d", epoch=1, seq=2, site="s", pump="p", channel="c",
                          t0_ns=0, received_ns=0, report=b"x")
    for record in (row, row.evidence[0], arch):
        assert not gc.is_tracked(record), type(record).__name__
