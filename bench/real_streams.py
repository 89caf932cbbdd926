"""The shared real recordings as replay streams, and each machine's baseline from its own data.

Which files: every CWRU row of ``manifest.csv`` whose file exists (inner race,
outer race, ball, normal; 12 kHz and 48 kHz, each at its own rate: the
manifest's ``fs_hz``, which the reader needs for ``normal_*``), drive-end
channel; and the IMS test-1 snapshots (20 kHz, ``simulator.recordings.IMS_FS``),
one stream per channel, each snapshot (1.024 s, recorded 5 min after the
previous one) replayed on its own as ``pumpwatch replay FILE`` does: one
report per snapshot and channel.

Baselines (the only fitting, each on the machine's own healthy or early data,
as the benchmark did before; through the same replay path, overlapped as
``pumpwatch baseline fit --hop 0.25``, which plays several files as one
stream): ``cwru-de-48k`` on the first half of
``normal_0_97`` at 48 kHz; ``cwru-de-12k`` on the first half of that
recording resampled to 12 kHz (``baseline fit --resample 12000``: the rig has
no normal recording at 12 kHz); ``ims-chN`` on the first 3 snapshots of
channel N.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.signal

import dsp
from models.serving.baseline import Baselines
from models.training.anomaly import fit_pump_baselines
from models.training.replay import bearing_asset
from simulator.recordings import IMS_FS, Recording, read_recording

from .labels import Stream, one_channel, replay_reports

CWRU_BEARING = ("6205", 9, 7.94, 39.04)  # SKF 6205-2RS JEM (drive end)
IMS_BEARING = ("ZA-2115", 16, 8.407, 71.50, 15.17)
IMS_RPM = 2000.0
TRUTH = {"inner_race": "bearing_inner", "outer_race": "bearing_outer", "ball": "bearing_ball",
         "normal": "healthy"}
BASELINE_HOP_S = 0.25
IMS_FIT_SNAPSHOTS = 3


def cwru_asset() -> dsp.Asset:
    return bearing_asset(*CWRU_BEARING, rated_rpm=1797.0, kind="CWRU motor test rig")


def ims_asset() -> dsp.Asset:
    return bearing_asset(*IMS_BEARING[:4], IMS_BEARING[4], rated_rpm=IMS_RPM, kind="IMS rig")


def cwru_pump(fs: float) -> str:
    return f"cwru-de-{fs / 1000:g}k"


def cwru_streams(real: Path) -> list[Stream]:
    """One stream per CWRU file in the manifest that exists (DE channel, its own rate)."""
    out: list[Stream] = []
    with (real / "manifest.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["dataset"] == "CWRU"]
    asset = cwru_asset()
    for r in sorted(rows, key=lambda r: r["file"]):
        path = real / r["file"]
        if not path.is_file() or r["label"] not in TRUTH:
            continue
        rec = read_recording(path, fs=float(r["fs_hz"]))
        truth = TRUTH[r["label"]]
        out.append(Stream(name=r["file"], truth=truth, recordings=(one_channel(rec, 0),),
                          pump=cwru_pump(rec.fs), asset=asset, fixed_band=truth != "healthy"))
    return out


def _ims_channels(real: Path) -> list[list[Recording]]:
    """Per channel, its snapshots in time order (one-channel recordings)."""
    recs = [read_recording(f, fs=IMS_FS) for f in sorted((real / "ims").glob("ims_test1_*.tsv"))]
    if not recs:
        return []
    return [[one_channel(r, ch) for r in recs] for ch in range(recs[0].samples.shape[0])]


def ims_streams(real: Path) -> list[Stream]:
    asset = ims_asset()
    return [
        Stream(name=f"ims/test1:ch{ch + 1}", truth="healthy", recordings=tuple(recs),
               pump=f"ims-ch{ch + 1}", asset=asset, rpm=IMS_RPM)
        for ch, recs in enumerate(_ims_channels(real))
    ]


def _half(rec: Recording) -> Recording:
    return replace(rec, samples=rec.samples[:, : rec.n_samples // 2])


def fit_baselines(real: Path) -> Baselines:
    """Each machine's baseline on its own healthy/early data (see the module docstring)."""
    reports: list[dsp.Report] = []
    normal = read_recording(real / "cwru" / "normal_0_97.mat", fs=48000.0)  # PROVENANCE.md
    at48 = one_channel(normal, 0)
    x12 = scipy.signal.resample_poly(at48.samples[0], 1, 4)  # as baseline fit --resample
    at12 = replace(at48, samples=x12[np.newaxis].astype(np.float32), fs=at48.fs / 4)
    for rec in (at48, at12):
        reports += replay_reports([_half(rec)], pump=cwru_pump(rec.fs), asset=cwru_asset(),
                                  hop_s=BASELINE_HOP_S).reports
    for ch, recs in enumerate(_ims_channels(real)):
        reports += replay_reports(recs[:IMS_FIT_SNAPSHOTS], pump=f"ims-ch{ch + 1}",
                                  asset=ims_asset(), rpm=IMS_RPM,
                                  hop_s=BASELINE_HOP_S).reports
    return fit_pump_baselines(reports)
