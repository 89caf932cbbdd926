"""DSP throughput and wire-format benchmark.

    python -m bench.dsp [--json] [--channels 64] [--seconds 4] [--runs 5]

Project path: ``dsp.analyze`` on each interval, handed over as a view of the
samples as the edge agent hands it views of its sample ring (until 2026-12-04
this path copied 0.1 s blocks through ``dsp.Framer``, which the agent no longer
uses: ~0.7 ms per 64-channel interval the baselines never paid): Welch PSD +
every scalar feature (moments, velocity RMS, band RMS, running speed, order
lines) + quality counts + spectrum quantization and zstd, float32, all channels
vectorized. Baselines, in the same run on
the same data:

* ``speedup_vs_batched`` (the honest one): what a user who knows numpy writes
  to get every number of the project's report, per report interval for all
  channels at once (:func:`batched_features`): one batched
  ``scipy.signal.welch(..., axis=-1)``, numpy/``scipy.stats`` moments, one
  batched ``scipy.fft.rfft`` of the Hann-windowed interval for velocity, speed
  and order lines, the quality counts, and the spectrum's wire encoding (dB,
  8-bit codes, delta + zstd: the project's own calls, so the bytes are the same).
  The same work on both sides, except that the project also builds its
  per-channel result structs (about 1 ms per 64-channel interval). Until
  2026-12-04 22:50 UTC the baseline did not encode its spectrum (about 1 ms more
  on the project's side);
* ``speedup_vs_welch_moments``: the baseline this benchmark used until
  2026-12-04, Welch + RMS/peak/kurtosis/skew only (less work than the report:
  no velocity, bands, speed or orders), kept for the history;
* ``speedup_vs_loop`` (``speedup``, kept for the history): Welch + moments per
  channel and per interval in a Python loop;
* ``envelope_speedup_vs_batched``: the project's envelope path (band chosen
  by spectral kurtosis and tracked, lines clipped) against a batched scipy
  envelope at the band the project chose and its resolution (the whole
  interval: fs/n Hz lines up to 500 Hz): a 4th-order Butterworth band-pass with
  ``sosfiltfilt``, ``scipy.signal.hilbert``, the squared envelope's
  ``scipy.fft.rfft``, all ``axis=-1``. The baseline does no band search and no
  line clipping.
Both sides run pinned to one core with BLAS/FFT threads at one, in one
process with the edge agent's malloc tuning (``edge.memory``), and are timed
in process CPU time (as bench.edge), so other work on a shared core does not
count against either side. Figures are medians over ``--runs``. The last line
printed is one JSON object.

Envelope: ``envelope_msps`` is the envelope path as the agent runs it, over
the stream's intervals with each channel's band tracked (dsp.bandtrack: the
candidate search on one report in eight once warmed up; the warm-up is not
timed); ``envelope_search_msps`` is one report with the full band search
(a stream's first report, and what every report cost before tracking).
"""

from __future__ import annotations

from . import _pin  # first: pins BLAS/FFT threads before numpy loads

import argparse
import json
import os
import statistics
import time

import numpy as np
import scipy.signal
import scipy.stats

import dsp
from dsp import quantize
from pumpwatch.commands.selftest import demo_signal


def _stream(channels: int, seconds: int, fs: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * fs)
    t = np.arange(n) / fs
    rpm = rng.uniform(1400, 3000, size=(channels, 1)) / 60.0
    x = 2.0 * np.sin(2 * np.pi * rpm * t) + 0.5 * np.sin(2 * np.pi * 6 * rpm * t)
    x += 0.5 * rng.standard_normal((channels, n))
    return x.astype(np.float32)


def _project(x: np.ndarray, cfg: dsp.ReportConfig, specs: list[dsp.ChannelSpec]) -> int:
    """Every interval of the stream through ``dsp.analyze``, each handed over as a view
    of the samples: the edge agent frames straight from its sample ring
    (``edge.ring.SampleRing.take`` hands ``dsp.analyze`` views), no copy, as the
    baselines slice ``x``."""
    n = cfg.interval_samples
    reports = 0
    for start in range(0, x.shape[1] - n + 1, n):
        reports += len(dsp.analyze(x[:, start : start + n], cfg, specs))
    return reports


def _baseline(x: np.ndarray, cfg: dsp.ReportConfig) -> int:
    n = cfg.interval_samples
    reports = 0
    for start in range(0, x.shape[1] - n + 1, n):
        for c in range(x.shape[0]):
            seg = x[c, start : start + n]
            scipy.signal.welch(
                seg, cfg.fs, window="hann", nperseg=cfg.nfft, noverlap=cfg.nfft - cfg.hop,
                detrend=False, scaling="density",
            )
            np.sqrt(np.mean(seg**2))
            np.max(np.abs(seg))
            scipy.stats.kurtosis(seg)
            scipy.stats.skew(seg)
            reports += 1
    return reports


def _welch_moments(x: np.ndarray, cfg: dsp.ReportConfig) -> int:
    """The baseline before 2026-12-04: batched Welch + RMS, peak, kurtosis and skewness
    only (less work than the project's report: no velocity, bands, speed or orders)."""
    n = cfg.interval_samples
    reports = 0
    for start in range(0, x.shape[1] - n + 1, n):
        seg = x[:, start : start + n]
        scipy.signal.welch(
            seg, cfg.fs, window="hann", nperseg=cfg.nfft, noverlap=cfg.nfft - cfg.hop,
            detrend=False, scaling="density", axis=-1,
        )
        np.sqrt(np.mean(seg * seg, axis=-1))
        np.max(np.abs(seg), axis=-1)
        scipy.stats.kurtosis(seg, axis=-1)
        scipy.stats.skew(seg, axis=-1)
        reports += seg.shape[0]
    return reports


def batched_features(seg: np.ndarray, cfg: dsp.ReportConfig) -> dict[str, np.ndarray]:
    """Every number of the project's report (envelope off), as a user who knows numpy
    computes them for all channels at once: the baseline of ``speedup_vs_batched``.

    One batched ``scipy.signal.welch`` (PSD, band RMS); ``numpy``/``scipy.stats``
    moments; one batched Hann-windowed ``scipy.fft.rfft`` of the whole interval
    (float32 window, as the data) for the velocity RMS, the running speed (largest
    line in ``rpm_range``, interpolated), its 10x-floor check and the 1x/2x/3x lines;
    quality: non-finite samples, constant channels, equal-neighbour counts; the
    spectrum's first ``cfg.lines`` lines encoded for the wire as the project encodes
    them (``dsp.quantize``: dB, 8-bit codes at ``cfg.step_db``, delta + zstd per
    channel), since a report carries them so. It builds no per-channel structs.
    """
    fs, n = cfg.fs, seg.shape[-1]
    freqs, psd = scipy.signal.welch(
        seg, fs, window="hann", nperseg=cfg.nfft, noverlap=cfg.nfft - cfg.hop,
        detrend=False, scaling="density", axis=-1,
    )
    df = freqs[1] - freqs[0]
    band_rms = np.stack(
        [np.sqrt(psd[:, (freqs >= lo) & (freqs < hi)].sum(axis=-1) * df) for lo, hi in cfg.bands],
        axis=-1,
    )
    nonfinite = n - np.isfinite(seg).sum(axis=-1)
    stuck = np.count_nonzero(seg[:, 1:] == seg[:, :-1], axis=-1)
    mean = seg.mean(axis=-1, keepdims=True)
    rms = np.sqrt(np.mean(seg * seg, axis=-1))
    hi, lo = seg.max(axis=-1), seg.min(axis=-1)
    peak = np.maximum(np.abs(hi), np.abs(lo))
    crest = peak / np.where(rms > 0, rms, 1.0)
    constant = hi == lo
    kurt = scipy.stats.kurtosis(seg, axis=-1, fisher=False)
    skew = scipy.stats.skew(seg, axis=-1)
    # the fine spectrum: 1/T Hz lines up to the velocity band's top
    w = scipy.signal.get_window("hann", n).astype(seg.dtype)
    f = np.fft.rfftfreq(n, 1.0 / fs)
    k = int(np.searchsorted(f, cfg.velocity_band[1], side="right")) + 3
    spec = scipy.fft.rfft((seg - mean) * w, axis=-1)[:, :k]
    power = np.abs(spec) ** 2 * (2.0 / (n * np.sum(w.astype(np.float64) ** 2)))
    f = f[:k]
    omega = 2 * np.pi * np.where(f > 0, f, np.inf)
    vpower = power * (1e6 / omega**2)
    vband = (f >= cfg.velocity_band[0]) & (f <= cfg.velocity_band[1])
    velocity = np.sqrt(vpower[:, vband].sum(axis=-1))
    k0 = int(np.ceil(cfg.rpm_range[0] / 60 / (fs / n)))
    k1 = int(np.floor(cfg.rpm_range[1] / 60 / (fs / n)))
    rows = np.arange(seg.shape[0])
    kk = k0 + np.argmax(power[:, k0 : k1 + 1], axis=-1)
    la, lb, lg = (np.log(power[rows, kk + d] + 1e-300) for d in (-1, 0, 1))
    den = la - 2 * lb + lg
    delta = np.where(den < 0, 0.5 * (la - lg) / np.where(den < 0, den, -1.0), 0.0)
    fr = (kk + np.clip(delta, -0.5, 0.5)) * fs / n
    around = np.clip(kk[:, None] + np.arange(-50, 51), 1, k - 1)
    clear = vpower[rows, kk] >= 10 * np.median(vpower[rows[:, None], around], axis=-1)
    lines = []
    for order in (1, 2, 3):
        kc = np.clip(np.rint(order * fr / (fs / n)).astype(int), 3, k - 3)
        idx = kc[:, None] + np.arange(-2, 3)
        lines.append(np.sqrt(vpower[rows[:, None], idx].sum(axis=-1)))
    codes, offset_db = quantize.quantize_db(quantize.to_db(psd[:, : cfg.lines]), cfg.step_db)
    return {
        "psd": psd, "wire": quantize.pack_rows(codes), "offset_db": offset_db,
        "band_rms": band_rms, "rms": rms, "peak": peak, "crest": crest,
        "kurtosis": kurt, "skewness": skew, "velocity_rms": velocity, "speed_hz": fr,
        "speed_clear": clear, "v1x": lines[0], "v2x": lines[1], "v3x": lines[2],
        "nonfinite": nonfinite, "stuck": stuck, "constant": constant,
    }


def _batched(x: np.ndarray, cfg: dsp.ReportConfig) -> int:
    n = cfg.interval_samples
    reports = 0
    for start in range(0, x.shape[1] - n + 1, n):
        reports += batched_features(x[:, start : start + n], cfg)["rms"].shape[0]
    return reports


def _envelope_batched(x: np.ndarray, cfg: dsp.ReportConfig, band: tuple[float, float]) -> float:
    """Seconds per interval of the batched scipy envelope (see the module doc)."""
    n = cfg.interval_samples
    sos = scipy.signal.butter(4, band, btype="bandpass", fs=cfg.fs, output="sos")
    lines = int(500.0 * n / cfg.fs) + 1
    spent, count = 0.0, 0
    for start in range(0, x.shape[1] - n + 1, n):
        seg = x[:, start : start + n]
        t0 = time.process_time()
        y = scipy.signal.sosfiltfilt(sos, seg, axis=-1)
        z = scipy.signal.hilbert(y, axis=-1)
        e = z.real * z.real + z.imag * z.imag
        e -= e.mean(axis=-1, keepdims=True)
        np.abs(scipy.fft.rfft(e, axis=-1)[:, :lines])
        spent += time.process_time() - t0
        count += 1
    return spent / count


def _envelope_stream(x: np.ndarray, cfg: dsp.ReportConfig) -> float:
    """Seconds of envelope work per interval, bands tracked, after an untimed warm-up."""
    n = cfg.interval_samples
    warm = dsp.BandTracking().warmup
    state: tuple[dsp.BandState, ...] | None = None
    spent, timed = 0.0, 0
    # the stream's intervals again and again: long enough for the search schedule
    for k in range(warm + 16):
        i = k % (x.shape[1] // n)
        t0 = time.process_time()
        r = dsp.envelope_spectrum(x[:, i * n : (i + 1) * n], cfg.fs, state=state)
        if k >= warm:
            spent += time.process_time() - t0
            timed += 1
        state = r.state
    _LAST_BANDS[:] = [tuple(b) for b in r.band]
    return spent / timed


_LAST_BANDS: list[tuple[float, float]] = []


def _project_band() -> tuple[float, float]:
    """The band the project chose most often in the last tracked stream (Hz)."""
    return statistics.mode(_LAST_BANDS)


def _timed(fn: object, *args: object) -> float:
    t0 = time.process_time()
    fn(*args)  # type: ignore[operator]
    return time.process_time() - t0


def _wire(cfg: dsp.ReportConfig, seeds: range) -> tuple[int, float]:
    """Largest encoded default report over several realistic signals, and the dB error."""
    asset = dsp.Asset(
        bearings=[dsp.Bearing(n_balls=9, ball_d_mm=7.94, pitch_d_mm=39.04, designation="6205")],
        vanes=6,
    )
    spec = dsp.ChannelSpec(asset=asset)
    sizes, errors = [], []
    for seed in seeds:
        rpm = 1480.0 if seed % 2 else 2950.0
        x = demo_signal(cfg.fs, cfg.interval_samples, rpm, seed)
        (res,) = dsp.analyze(x, cfg, [spec])
        report = dsp.make_report(
            res, cfg, spec, device="gateway-0001", epoch=2**63 + seed, seq=10_000 + seed,
            site="plant-north", pump="P-101", channel="DE-H", t0_ns=1_790_000_000_000_000_000,
        )
        wire = dsp.encode_report(report)
        sizes.append(len(wire))
        _, psd = dsp.welch_psd(x, cfg.fs, nfft=cfg.nfft, hop=cfg.hop)
        truth = quantize.to_db(psd[0, : cfg.lines])
        got = dsp.decode_report(wire).spectrum.db()
        near = truth >= truth.max() - 60.0
        errors.append(float(np.abs(got[near] - truth[near]).max()))
    return max(sizes), max(errors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    cpu = _pin.pin_to_core(0)
    malloc_tuned = _pin.tune_memory()  # as the edge agent runs; both sides share it
    cfg = dsp.ReportConfig()  # 25.6 kHz, nfft 4096, hop 2048 (50 %), 1 s reports
    proj_cfg = dsp.ReportConfig(envelope=False)
    specs = [dsp.ChannelSpec()] * args.channels
    x = _stream(args.channels, args.seconds, cfg.fs, seed=1)
    samples = x.size
    _project(x[:, : cfg.interval_samples], proj_cfg, specs)  # warm caches and plans
    proj, base, batched, welch_mom, env, env_base, search = [], [], [], [], [], [], []
    one = x[:, : cfg.interval_samples]
    _batched(one, cfg)  # the baselines' plans and caches warm too
    _welch_moments(one, cfg)
    for run in range(args.runs):
        proj.append(samples / _timed(_project, x, proj_cfg, specs) / 1e6)
        base.append(samples / _timed(_baseline, x, cfg) / 1e6)
        batched.append(samples / _timed(_batched, x, cfg) / 1e6)
        welch_mom.append(samples / _timed(_welch_moments, x, cfg) / 1e6)
        search.append(one.size / _timed(dsp.envelope_spectrum, one, cfg.fs) / 1e6)
        env.append(one.size / _envelope_stream(x, cfg) / 1e6)
        env_base.append(one.size / _envelope_batched(x, cfg, _project_band()) / 1e6)
        if not args.json:
            print(f"run {run + 1}/{args.runs}: project {proj[-1]:.2f} Msps, "
                  f"loop {base[-1]:.2f} Msps, batched {batched[-1]:.2f} Msps, envelope "
                  f"{env[-1]:.2f} Msps (with the band search {search[-1]:.2f}), batched "
                  f"scipy envelope {env_base[-1]:.2f} Msps")
    report_bytes, max_db_error = _wire(cfg, range(1, 9))
    raw = 2 * cfg.interval_samples
    p, b = statistics.median(proj), statistics.median(base)
    # Each run times both sides back to back, so a ratio per run cancels slow drifts
    # of a shared machine; the speedup is the median of those ratios.
    speedup = statistics.median(pi / bi for pi, bi in zip(proj, base, strict=True))

    def ratio(a: list[float], b: list[float]) -> float:
        return round(statistics.median(x / y for x, y in zip(a, b, strict=True)), 2)
    result = {
        "channels": args.channels,
        "fs": cfg.fs,
        "nfft": cfg.nfft,
        "hop": cfg.hop,
        "interval_s": cfg.interval_s,
        "cpu": cpu,
        "malloc_tuned": malloc_tuned,
        "runs": args.runs,
        "project_msps": round(p, 3),
        "baseline_msps": round(b, 3),
        "speedup": round(speedup, 2),
        "speedup_vs_loop": round(speedup, 2),
        "speedup_runs": [round(pi / bi, 2) for pi, bi in zip(proj, base, strict=True)],
        "batched_msps": round(statistics.median(batched), 3),
        "speedup_vs_batched": ratio(proj, batched),
        "speedup_vs_batched_runs": [round(a / b, 2) for a, b in zip(proj, batched, strict=True)],
        "welch_moments_msps": round(statistics.median(welch_mom), 3),
        "speedup_vs_welch_moments": ratio(proj, welch_mom),
        "envelope_msps": round(statistics.median(env), 3),
        "envelope_batched_msps": round(statistics.median(env_base), 3),
        "envelope_batched_band_hz": list(_project_band()),
        "envelope_speedup_vs_batched": ratio(env, env_base),
        "envelope_search_msps": round(statistics.median(search), 3),
        "report_bytes": report_bytes,
        "raw_int16_bytes": raw,
        "wire_ratio": round(raw / report_bytes, 1),
        "max_db_error": round(max_db_error, 5),
        "step_db": cfg.step_db,
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
