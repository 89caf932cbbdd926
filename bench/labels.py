"""What the user sees: the condition label the endpoint returns for replayed recordings.

Theory of operation. A maintenance engineer acts on the label in each
result, so this measures that label, end to end as deployed:

1. **Reports exactly as ``pumpwatch replay`` builds them.** A recording (one
   channel, m/s^2) plays through :class:`simulator.replay.ReplaySource` in the
   edge's block size; the pump's edge config is the edge's defaults
   (``dsp.ReportConfig()``) narrowed by :func:`edge.run.replay_config` (the
   report config at the recording's own rate, ``ReportConfig.at_rate``: no
   resampling); :class:`dsp.Framer` cuts report intervals as the agent does
   (hop = interval) and :class:`edge.pipeline.ReportBuilder` builds and
   encodes each report, which is decoded from those bytes. A speed stated in
   the file is used as the agent uses a block's speed (``measured``), else the
   pump's given speed (``--rpm``). Every channel states a full scale
   (:data:`FULL_SCALE` unless a variant lowers it).
2. **Labels from the real model server.** ``python -m models.serving.server``
   runs as its own process on a free port over the bundle given (the
   benchmark's: the trained classifier, its training statistics and the
   per-pump baselines, as ``pumpwatch train --baselines`` writes it); reports
   go as msgpack ``POST /invocations`` in batches of :data:`BATCH`, and each
   result is read as a plain mapping, so a key the bundle adds (typed or an
   extra field, e.g. ``decided_by``) is seen whatever its schema.
3. **The textbook reference on the same samples.** Each report interval's
   samples also go to :func:`models.serving.diagnostics.fixed_band_diagnosis`
   (fixed 2-5.4 kHz band, Hilbert envelope, the strongest of BPFO, BPFI and
   2xBSF; it always names one of the three).
4. **Sensor faults made from the real files** (:func:`make_variants`): dead,
   partially dead, clipped, partially clipped and non-finite, each defined
   below with its share of affected samples; and **real faults whose few
   highest impacts clip** (:func:`clip_impacts`), which must still be
   diagnosed. Only sensor-fault variants count toward recall; every other
   report labelled ``sensor_fault`` counts toward the false rate.

Nothing here is fitted or tuned on the recordings: the variant definitions
are stated shares of samples, chosen before any run, and the only fitting
is each machine's anomaly baseline on its own healthy period (the caller's).
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

import dsp
from dsp.results import HEALTHY, SENSOR_FAULT, UNKNOWN, InvocationRequest
from edge.config import ChannelConfig, EdgeConfig, PumpSpec
from edge.pipeline import ReportBuilder
from edge.run import replay_config
from edge.sources import channel_index
from models.serving.diagnostics import fixed_band_diagnosis
from simulator.recordings import Recording
from simulator.replay import ReplaySource

from .endpoint import start_server

F32 = NDArray[np.float32]
MSGPACK = "application/x-msgpack"
BATCH = 64
#: m/s^2 (50 g), the stated full scale of every sensor chain here: a common range for
#: industrial accelerometers, above every peak in the shared recordings.
FULL_SCALE = 490.0
#: ``decided_by`` of a result that does not carry the field (before the decision rule).
DEFAULT_DECIDER = "classifier"
FAULTS = ("bearing_inner", "bearing_outer", "bearing_ball")


@dataclass(frozen=True)
class Stream:
    """Recordings of one pump's channel, and what their label should be.

    Each recording is a separate acquisition (a file), replayed on its own as one
    ``pumpwatch replay FILE`` run does: an IMS snapshot is 1.024 s recorded 5 min
    after the previous one, so no report spans two of them.
    """

    name: str  # key in ``per_file``
    truth: str  # the class the label should name (``sensor_fault`` for variants)
    recordings: tuple[Recording, ...]  # one channel each, m/s^2, one sample rate
    pump: str
    asset: dsp.Asset
    rpm: float | None = None  # given speed (``replay --rpm``); a speed the file states wins
    full_scale: float | None = FULL_SCALE
    kind: str = "real"  # "real", "impacts" or a sensor-fault variant name
    fixed_band: bool = False  # also run the textbook fixed-band method on its windows

    @property
    def fs(self) -> float:
        return self.recordings[0].fs

    def samples(self) -> list[F32]:
        return [np.asarray(r.samples[0], dtype=np.float32) for r in self.recordings]

    def with_samples(self, xs: Sequence[F32], **changes: Any) -> Stream:
        recs = tuple(one_channel(r, 0, x) for r, x in zip(self.recordings, xs, strict=True))
        return replace(self, recordings=recs, **changes)


@dataclass
class Replayed:
    reports: list[dsp.Report]
    windows: list[F32] = field(default_factory=list)  # samples of each report interval


def one_channel(rec: Recording, index: int = 0, samples: F32 | None = None) -> Recording:
    """``rec`` reduced to one channel (optionally with other samples of the same length)."""
    x = rec.samples[index] if samples is None else samples
    return replace(rec, samples=np.asarray(x, dtype=np.float32)[np.newaxis],
                   channels=(rec.channels[index],))


def replay_reports(
    recordings: Sequence[Recording],
    *,
    pump: str,
    asset: dsp.Asset,
    rpm: float | None = None,
    full_scale: float | None = FULL_SCALE,
    device: str = "bench",
    hop_s: float | None = None,
    keep_windows: bool = False,
) -> Replayed:
    """One-channel recordings played in sequence -> reports as ``pumpwatch replay`` builds them.

    ``hop_s`` overlaps reports as ``pumpwatch baseline fit --hop`` does (default:
    one report interval, as the agent).
    """
    rec = recordings[0]
    spec = PumpSpec(id=pump, asset=asset, rpm=rpm, channels=(
        ChannelConfig(name="de", source=rec.channels[0], full_scale=full_scale),))
    base = EdgeConfig(device=device, site="bench", report=dsp.ReportConfig(), pumps=(spec,))
    cfg = replay_config(base, pump, rec.channels, rec.fs, rpm)
    rc = cfg.report
    src = ReplaySource(list(recordings), start_ns=0, block_size=cfg.source.block_size)
    idx = channel_index(cfg, src.channels)
    hop = rc.interval_samples if hop_s is None else round(hop_s * rc.fs)
    framer = dsp.Framer(size=rc.interval_samples, hop=hop)
    builder = ReportBuilder(cfg, epoch=1)
    out = Replayed([])
    for block in src.blocks():
        block_rpm = None if block.rpm is None else np.asarray(block.rpm)[idx]
        for w in framer.push(block.samples[idx], block.t0_ns, block.fs):
            built = builder.build(w.samples, w.t0_ns, after_restart=w.after_restart,
                                  rpm=block_rpm)
            out.reports += [dsp.decode_report(encoded) for _e, _s, encoded in built]
            if keep_windows:
                out.windows.append(np.array(w.samples[0], dtype=np.float32))
    return out


# --- sensor-fault variants: pure functions of one channel's samples -----------------------


def dead(x: F32, fs: float) -> F32:
    """A dead channel: every sample the same value (the recording's mean)."""
    return np.full_like(x, np.float32(np.mean(x)))


def partially_dead(x: F32, fs: float) -> F32:
    """Intermittently dead: in every second, 0.3-0.7 s stuck at the value at 0.3 s (40 %)."""
    y = x.copy()
    n = round(fs)
    for s in range(0, y.size, n):
        lo, hi = s + round(0.3 * fs), min(s + round(0.7 * fs), y.size)
        if lo < y.size:
            y[lo:hi] = y[lo]
    return y


def nonfinite(x: F32, fs: float) -> F32:
    """Dropped packets: 16 samples NaN every 0.5 s (every report has some)."""
    y = x.copy()
    for s in range(round(0.1 * fs), y.size, round(0.5 * fs)):
        y[s : s + 16] = np.nan
    return y


def clip_at_share(xs: Sequence[F32], share: float) -> tuple[list[F32], float]:
    """``xs`` saturated at the full scale where ``share`` of all their samples reach it."""
    a = np.abs(np.concatenate(xs).astype(np.float64))
    level = np.float32(np.quantile(a, 1.0 - share))
    return [np.clip(x, -level, level) for x in xs], float(level)


#: Clipping variants: the share of samples at full scale (the full scale is lowered to
#: the level where that share of the recording reaches it).
CLIPPED_SHARE = 0.25
PARTIALLY_CLIPPED_SHARE = 0.05
#: Real faults whose brief highest impacts clip: 0.02 % of samples (2-3 per 1 s report at
#: 12 kHz, about 10 at 48 kHz) -- flagged as clipped by the edge, still diagnosable.
IMPACTS_SHARE = 0.0002

Variant = Callable[[F32, float], F32]
SAMPLE_VARIANTS: dict[str, Variant] = {
    "dead": dead, "partially_dead": partially_dead, "nonfinite": nonfinite,
}
CLIP_VARIANTS: dict[str, float] = {
    "clipped": CLIPPED_SHARE, "partially_clipped": PARTIALLY_CLIPPED_SHARE,
}
VARIANTS: tuple[str, ...] = (*SAMPLE_VARIANTS, *CLIP_VARIANTS)


def make_variants(s: Stream) -> list[Stream]:
    """The sensor-fault variants of one stream, each with truth ``sensor_fault``."""
    xs = s.samples()
    out: list[Stream] = []
    for name, fn in SAMPLE_VARIANTS.items():
        out.append(s.with_samples([fn(x, s.fs) for x in xs], name=f"{s.name}:{name}",
                                  truth=SENSOR_FAULT, kind=name, fixed_band=False))
    for name, share in CLIP_VARIANTS.items():
        ys, level = clip_at_share(xs, share)
        out.append(s.with_samples(ys, name=f"{s.name}:{name}", truth=SENSOR_FAULT, kind=name,
                                  fixed_band=False, full_scale=level))
    return out


def clip_impacts(s: Stream) -> Stream:
    """The same fault with its highest impacts clipped (:data:`IMPACTS_SHARE`): still a fault."""
    ys, level = clip_at_share(s.samples(), IMPACTS_SHARE)
    return s.with_samples(ys, name=f"{s.name}:clipped_impacts", kind="impacts",
                          fixed_band=False, full_scale=level)


# --- the endpoint ------------------------------------------------------------------------


class Endpoint:
    """``python -m models.serving.server`` on a free port over ``model_dir``; msgpack client."""

    def __init__(self, model_dir: Path, *, timeout_s: float = 60.0) -> None:
        self.model_dir = model_dir
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> Endpoint:
        self.proc, self.url = start_server(self.model_dir, None)
        deadline = time.monotonic() + self.timeout_s
        while True:  # "listening" precedes loading the bundle: wait for /ping
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError(f"model server over {self.model_dir} not healthy")
            time.sleep(0.05)

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def invoke(self, reports: Sequence[dsp.Report]) -> list[dict[str, Any]]:
        """One result mapping per report, in order (msgpack ``POST /invocations``)."""
        out: list[dict[str, Any]] = []
        for lo in range(0, len(reports), BATCH):
            body = msgspec.msgpack.encode(
                InvocationRequest(v=1, reports=list(reports[lo : lo + BATCH])))
            req = urllib.request.Request(  # noqa: S310 -- a local URL we started
                self.url + "/invocations", data=body, method="POST",
                headers={"Content-Type": MSGPACK, "Accept": MSGPACK})
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:  # noqa: S310
                resp = msgspec.msgpack.decode(r.read())
            results = resp["results"]
            if len(results) != len(reports[lo : lo + BATCH]):
                raise RuntimeError(f"{len(results)} results for "
                                   f"{len(reports[lo : lo + BATCH])} reports")
            out += results
        return out


# --- measuring ---------------------------------------------------------------------------


def decided_by(result: dict[str, Any]) -> str:
    """Which rule decided a result (``classifier`` while results do not say)."""
    v = result.get("decided_by")
    return DEFAULT_DECIDER if v is None else str(v)


def _counts(labels: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(labels).items()))


def _share(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


@dataclass
class Measured:
    stream: Stream
    labels: list[str]
    decided: list[str]
    anomalous: int
    fixed: list[str] | None = None
    classifier: list[str] | None = None

    def row(self) -> dict[str, Any]:
        s, n = self.stream, len(self.labels)
        out: dict[str, Any] = {
            "truth": s.truth, "kind": s.kind, "fs": s.fs, "pump": s.pump,
            "full_scale": s.full_scale, "reports": n,
            "endpoint": _share(sum(c == s.truth for c in self.labels), n),
            "endpoint_labels": _counts(self.labels),
            "decided_by": _counts(self.decided),
            "anomalous": self.anomalous,
        }
        if self.fixed is not None:
            out["fixed_band"] = _share(sum(c == s.truth for c in self.fixed), n)
            out["fixed_band_labels"] = _counts(self.fixed)
        if self.classifier is not None:
            out["classifier"] = _share(sum(c == s.truth for c in self.classifier), n)
            out["classifier_labels"] = _counts(self.classifier)
        return out


def measure_stream(
    endpoint: Endpoint,
    s: Stream,
    *,
    classify: Callable[[Sequence[dsp.Report]], list[str]] | None = None,
    orders: dict[str, float] | None = None,
) -> Measured:
    """Replay one stream, label its reports through the endpoint (and the references)."""
    rep = Replayed([])
    for rec in s.recordings:  # each acquisition on its own, as one replay run
        one = replay_reports([rec], pump=s.pump, asset=s.asset, rpm=s.rpm,
                             full_scale=s.full_scale, device=f"bench-{s.kind}",
                             keep_windows=s.fixed_band)
        rep.reports += one.reports
        rep.windows += one.windows
    if not rep.reports:
        raise ValueError(f"{s.name}: no recording holds a whole report interval")
    results = endpoint.invoke(rep.reports)
    m = Measured(s, [str(r["condition"]) for r in results], [decided_by(r) for r in results],
                 sum(bool(r.get("anomalous")) for r in results))
    if s.fixed_band and orders is not None:
        m.fixed = [
            fixed_band_diagnosis(w, s.fs, rpm=float(r.speed.rpm), orders=orders)
            for w, r in zip(rep.windows, rep.reports, strict=True)
        ]
    if classify is not None and s.kind == "real":
        m.classifier = classify(rep.reports)
    return m


def _acc(rows: Sequence[Measured], attr: str, truths: Sequence[str]) -> float | None:
    ok = n = 0
    for m in rows:
        if m.stream.truth not in truths:
            continue
        got = getattr(m, attr)
        if got is None:
            continue
        ok += sum(c == m.stream.truth for c in got)
        n += len(got)
    return _share(ok, n)


def summarize(measured: Sequence[Measured], *, prefix: str = "cwru") -> dict[str, Any]:
    """The summed figures over measured streams (see the module docstring of bench.models)."""
    real = [m for m in measured if m.stream.kind == "real"]
    cw = [m for m in real if m.stream.name.startswith(prefix)]
    faults = [m for m in cw if m.stream.truth in FAULTS]
    out: dict[str, Any] = {
        f"{prefix}_endpoint_accuracy": _acc(faults, "labels", FAULTS),
        f"{prefix}_endpoint_accuracy_ir_or": _acc(faults, "labels", FAULTS[:2]),
        f"{prefix}_endpoint_accuracy_ball": _acc(faults, "labels", FAULTS[2:]),
        f"{prefix}_endpoint_unknown_share": _share(
            sum(c == UNKNOWN for m in faults for c in m.labels),
            sum(len(m.labels) for m in faults)),
        f"{prefix}_fixed_band_accuracy": _acc(faults, "fixed", FAULTS),
        f"{prefix}_fixed_band_accuracy_ir_or": _acc(faults, "fixed", FAULTS[:2]),
        f"{prefix}_fixed_band_accuracy_ball": _acc(faults, "fixed", FAULTS[2:]),
        f"{prefix}_classifier_accuracy": _acc(faults, "classifier", FAULTS[:2]),
        f"{prefix}_classifier_accuracy_ball": _acc(faults, "classifier", FAULTS[2:]),
    }
    for f in FAULTS:  # per class: the endpoint must not fall below the textbook method
        short = f.removeprefix("bearing_")
        out[f"{prefix}_endpoint_accuracy_{short}"] = _acc(faults, "labels", (f,))
        out[f"{prefix}_fixed_band_accuracy_{short}"] = _acc(faults, "fixed", (f,))
    normal = [m for m in cw if m.stream.truth == HEALTHY]
    out[f"{prefix}_normal_healthy_share"] = _share(
        sum(c == HEALTHY for m in normal for c in m.labels), sum(len(m.labels) for m in normal))
    ims = [m for m in real if m.stream.name.startswith("ims")]
    out["ims_endpoint_healthy_share"] = _share(
        sum(c == HEALTHY for m in ims for c in m.labels), sum(len(m.labels) for m in ims))
    out["ims_endpoint_labels"] = _counts(c for m in ims for c in m.labels)
    variants = [m for m in measured if m.stream.kind in VARIANTS]
    others = [m for m in measured if m.stream.kind not in VARIANTS]
    out["sensor_fault_recall"] = _share(
        sum(c == SENSOR_FAULT for m in variants for c in m.labels),
        sum(len(m.labels) for m in variants))
    out["sensor_fault_false_rate"] = _share(
        sum(c == SENSOR_FAULT for m in others for c in m.labels),
        sum(len(m.labels) for m in others))
    impacts = [m for m in measured if m.stream.kind == "impacts"]
    out["clipped_impacts_accuracy"] = _share(
        sum(c == m.stream.truth for m in impacts for c in m.labels),
        sum(len(m.labels) for m in impacts))
    out["sensor_fault_variants"] = {
        v: {
            "reports": sum(len(m.labels) for m in variants if m.stream.kind == v),
            "sensor_fault": sum(c == SENSOR_FAULT for m in variants if m.stream.kind == v
                                for c in m.labels),
            "labels": _counts(c for m in variants if m.stream.kind == v for c in m.labels),
            "decided_by": _counts(d for m in variants if m.stream.kind == v for d in m.decided),
        }
        for v in VARIANTS
    }
    out["endpoint_decided_by"] = _counts(d for m in measured for d in m.decided)
    out["endpoint_reports"] = sum(len(m.labels) for m in measured)
    out["per_file"] = {m.stream.name: m.row() for m in measured}
    return out
