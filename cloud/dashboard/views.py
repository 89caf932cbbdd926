"""Store records -> the JSON shapes of the API (pure functions, no I/O).

Times go out twice: ``*_ms`` as float milliseconds since the Unix epoch (what
JavaScript's ``Date`` takes) and an ISO 8601 string for people. Report epochs
are unsigned 64-bit, beyond JavaScript's exact integers, so they go out as
decimal strings. Non-finite floats become ``null``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import msgspec

import dsp
from cloud.store import AlarmRow, ArchivedReport, ManifestRow, ResultRow, Series, merge_extra
from dsp.results import Manifest

ZONE_RANK = {"?": 0, "A": 1, "B": 2, "C": 3, "D": 4}

Json = dict[str, Any]


def iso(ns: int) -> str:
    dt = datetime.fromtimestamp(ns / 1e9, tz=UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms(ns: int) -> float:
    return ns / 1e6


def num(x: float | None, digits: int = 4) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), digits)


def result_json(r: ResultRow) -> Json:
    """A result; the model's untyped fields (``extra``) merged in, named in ``extra_fields``.

    An extra field never replaces one of the fields below (the typed one is kept).
    """
    return merge_extra(_typed_result_json(r), r.extra)


def _typed_result_json(r: ResultRow) -> Json:
    return {
        "device": r.device, "epoch": str(r.epoch), "seq": r.seq, "site": r.site,
        "pump": r.pump, "channel": r.channel, "time": iso(r.t0_ns), "t_ms": ms(r.t0_ns),
        "stored_ms": ms(r.stored_ns), "condition": r.condition,
        "probabilities": {k: num(v) for k, v in r.probabilities.items()},
        "anomaly_score": num(r.anomaly_score), "anomaly_threshold": num(r.anomaly_threshold),
        "anomalous": r.anomalous, "baseline": r.baseline, "iso_zone": r.iso_zone,
        "velocity_rms": num(r.velocity_rms), "rpm": num(r.rpm, 2),
        "evidence": [{"name": e.name, "value": num(e.value), "note": e.note} for e in r.evidence],
        "model_version": r.model_version, "manifest_digest": r.manifest_digest,
    }


_manifest_json = msgspec.json.Decoder(Manifest).decode


def classes_json(manifests: list[ManifestRow]) -> Json:
    """The classes and extra fields the stored manifests declare (oldest first in, so the
    newest manifest's entry for a class or field wins), and the manifests themselves.
    A stored manifest that does not decode is listed with ``valid: false`` and skipped."""
    classes: dict[str, Json] = {}
    fields: dict[str, str] = {}
    listed: list[Json] = []
    for m in manifests:
        try:
            man = _manifest_json(m.manifest)
        except msgspec.DecodeError:
            listed.append({"digest": m.digest, "model_version": m.model_version,
                           "stored_ms": ms(m.stored_ns), "valid": False})
            continue
        for c in man.classes:
            classes[c.name] = {"name": c.name, "display_name": c.display_name,
                               "description": c.description, "severity": c.severity,
                               "action": c.action, "model_version": m.model_version}
        fields.update(man.fields)
        listed.append({"digest": m.digest, "model_version": m.model_version,
                       "stored_ms": ms(m.stored_ns), "valid": True})
    return {"classes": sorted(classes.values(), key=lambda c: c["name"]), "fields": fields,
            "manifests": listed}


def severity(r: ResultRow) -> tuple[int, bool, float]:
    """Sort key: worse ISO zone, then anomalous, then score relative to threshold."""
    rel = r.anomaly_score / r.anomaly_threshold if r.anomaly_threshold > 0 else r.anomaly_score
    return (ZONE_RANK.get(r.iso_zone, 0), r.anomalous, rel if math.isfinite(rel) else 0.0)


def pump_json(pump: str, latest: list[ResultRow], active_alarms: int) -> Json:
    """One fleet tile: the worst channel's latest state, and every channel's."""
    worst = max(latest, key=severity)
    newest = max(latest, key=lambda r: r.t0_ns)
    return {
        "pump": pump, "site": worst.site, "channel": worst.channel,
        "condition": worst.condition,
        "probability": num(worst.probabilities.get(worst.condition)),
        "anomaly_score": num(worst.anomaly_score),
        "anomaly_threshold": num(worst.anomaly_threshold), "anomalous": worst.anomalous,
        "iso_zone": worst.iso_zone, "velocity_rms": num(worst.velocity_rms),
        "last_report": iso(newest.t0_ns), "last_report_ms": ms(newest.t0_ns),
        "last_stored_ms": ms(max(r.stored_ns for r in latest)),
        "alarm_state": "raised" if active_alarms else "none", "active_alarms": active_alarms,
        "channels": [result_json(r) for r in latest],
    }


def alarm_json(a: AlarmRow) -> Json:
    return {
        "id": a.id, "site": a.site, "pump": a.pump, "channel": a.channel, "kind": a.kind,
        "state": a.state, "raised": iso(a.raised_ns), "raised_ms": ms(a.raised_ns),
        "cleared": None if a.cleared_ns is None else iso(a.cleared_ns),
        "cleared_ms": None if a.cleared_ns is None else ms(a.cleared_ns),
        "updated_ms": ms(a.updated_ns), "reason": a.reason,
        "evidence": [{"name": e.name, "value": num(e.value), "note": e.note} for e in a.evidence],
        "parent": a.parent,
        "lifecycle": None if a.lifecycle is None else msgspec.to_builtins(a.lifecycle),
    }


def zone_limits(asset: dsp.Asset) -> list[float]:
    """The asset's (A/B, B/C, C/D) velocity limits in mm/s."""
    limits = asset.zone_limits or dsp.ISO_ZONE_LIMITS[(asset.iso_group, asset.foundation)]
    return [float(x) for x in limits]


def history_json(h: Series, limits: list[float] | None) -> Json:
    return {
        "pump": h.pump, "since": iso(h.since_ns), "until": iso(h.until_ns),
        "since_ms": ms(h.since_ns), "until_ms": ms(h.until_ns),
        "bucket_s": h.bucket_ns / 1e9, "rows": h.rows, "zone_limits": limits,
        "series": [
            {
                "channel": s.channel, "t_ms": [ms(t) for t in s.t_ns], "count": s.count,
                "anomaly_score": [num(x) for x in s.anomaly_score],
                "anomaly_score_max": [num(x) for x in s.anomaly_score_max],
                "anomaly_threshold": [num(x) for x in s.anomaly_threshold],
                "anomalous": s.anomalous,
                "velocity_rms": [num(x) for x in s.velocity_rms],
                "velocity_rms_max": [num(x) for x in s.velocity_rms_max],
                "iso_zone": s.iso_zone, "condition": s.condition,
            }
            for s in h.series
        ],
    }


#: defect lines marked up to this harmonic (1x..Nx), and sidebands up to this many
#: modulation orders either side of each marked BPFI / BSF harmonic
#: defect lines are marked up to this harmonic (1x..Nx); the BPFI and BSF harmonics get
#: this many sidebands either side
HARMONICS = 5
SIDEBANDS = 2


def _marker(name: str, hz: float, kind: str, source: str, of: str = "",
            order: int = 1) -> Json:
    return {"name": name, "hz": round(hz, 3), "kind": kind, "source": source, "of": of,
            "order": order}


def markers(report: dsp.Report) -> list[Json]:
    """Frequency markers (Hz) at the running speed: 1x, 2x, blade pass, and per bearing the
    defect lines (BPFO, BPFI, BSF, FTF; ``kind`` "bearing"), their harmonics 2x..Nx
    (``harmonic``, ``order`` k) and the sidebands of the BPFI and BSF harmonics
    (``sideband``: k BPFI +- m shaft rate, k BSF +- m FTF, ``order`` k). Harmonics and
    sidebands stop at the envelope spectrum's last line (Nyquist without one); each
    names the line it belongs to in ``of``."""
    fr = report.speed.rpm / 60.0
    if not (fr > 0 and math.isfinite(fr)):
        return []
    env = report.envelope
    top = env.f0 + env.df * (env.n - 1) if env is not None else report.fs / 2
    out: list[Json] = [_marker("1x", fr, "shaft", ""), _marker("2x", 2 * fr, "shaft", "")]
    if report.asset.vanes:
        out.append(_marker("BPF", report.asset.vanes * fr, "vane",
                           f"{report.asset.vanes} vanes"))
    many = len(report.asset.bearings) > 1
    for i, b in enumerate(report.asset.bearings):
        try:
            orders = dsp.bearing_orders(b.n_balls, b.ball_d_mm, b.pitch_d_mm, b.contact_deg)
        except ValueError:
            continue  # geometry the codec accepted but the formulas cannot use
        label = " ".join(x for x in (b.designation, b.location) if x) or f"bearing {i + 1}"
        where = f" {b.location or i + 1}" if many else ""
        for key in ("bpfo", "bpfi", "bsf", "ftf"):
            name = key.upper() + where
            f = orders[key] * fr
            out.append(_marker(name, f, "bearing", label))
            for k in range(2, HARMONICS + 1):
                if k * f <= top:
                    out.append(_marker(f"{k}x{name}", k * f, "harmonic", label, name, k))
            # An inner-race defect turns with the shaft (BPFI +- m x shaft rate); a ball's
            # defect orbits with the cage (BSF +- m x FTF).
            if key in ("bpfi", "bsf"):
                mod = fr if key == "bpfi" else orders["ftf"] * fr
                for k in range(1, HARMONICS + 1):
                    if k * f > top:
                        break
                    carrier = name if k == 1 else f"{k}x{name}"
                    for m in range(1, SIDEBANDS + 1):
                        step = f"{m}x" if key == "bpfi" else ("FTF" if m == 1 else f"{m}FTF")
                        for sign, sym in ((-1, "-"), (1, "+")):
                            hz = k * f + sign * m * mod
                            if 0 < hz <= top:
                                out.append(_marker(f"{carrier}{sym}{step}", hz, "sideband",
                                                   label, name, k))
    return out


def _spectrum_json(s: dsp.Spectrum) -> Json:
    db = s.db()
    return {
        "f0": float(s.f0), "df": float(s.df), "n": int(s.n),
        "db": [num(float(x), 1) for x in db],
    }


def spectrum_json(a: ArchivedReport, report: dsp.Report) -> Json:
    f = report.features
    return {
        "pump": a.pump, "channel": a.channel, "site": a.site, "device": a.device,
        "epoch": str(a.epoch), "seq": a.seq, "time": iso(a.t0_ns), "t_ms": ms(a.t0_ns),
        "rpm": num(report.speed.rpm, 2), "speed_source": report.speed.source,
        "fs": float(report.fs), "velocity_rms": num(f.velocity_rms), "iso_zone": f.iso_zone,
        "zone_limits": zone_limits(report.asset),
        "spectrum": _spectrum_json(report.spectrum),
        "envelope": None if report.envelope is None else _spectrum_json(report.envelope),
        "envelope_band": None if report.envelope_band is None else list(report.envelope_band),
        "markers": markers(report),
    }


def _pool_max(db: list[float], pool: int) -> list[float | None]:
    """dB lines -> columns of ``pool`` adjacent lines, each the max (peaks survive)."""
    out: list[float | None] = []
    for j in range(0, len(db), pool):
        chunk = [x for x in db[j:j + pool] if math.isfinite(x)]
        out.append(round(max(chunk), 1) if chunk else None)
    return out


def spectra_json(pump: str, channel: str, kind: str,
                 reports: list[tuple[ArchivedReport, dsp.Report]], bins: int) -> Json:
    """The waterfall: one row per archived report (newest first) of its power or envelope
    spectrum, ``pool = ceil(n / bins)`` adjacent lines merged into one column by their
    maximum. Rows whose spectrum has another grid (f0, df, n) than the newest's, or no
    envelope, are left out and counted in ``skipped``."""
    rows: list[Json] = []
    grid: tuple[float, float, int] | None = None
    pool = 1
    skipped = 0
    for a, rep in reports:
        spec = rep.spectrum if kind == "power" else rep.envelope
        if spec is None:
            skipped += 1
            continue
        g = (float(spec.f0), float(spec.df), int(spec.n))
        if grid is None:
            grid = g
            pool = max(1, -(-g[2] // bins))
        elif g != grid:
            skipped += 1
            continue
        rows.append({"time": iso(a.t0_ns), "t_ms": ms(a.t0_ns), "seq": a.seq,
                     "epoch": str(a.epoch), "rpm": num(rep.speed.rpm, 2),
                     "db": _pool_max([float(x) for x in spec.db()], pool)})
    f0, df, n = grid if grid is not None else (0.0, 1.0, 0)
    return {"pump": pump, "channel": channel, "kind": kind, "f0": f0, "df": df * pool,
            "pool": pool, "columns": -(-n // pool), "skipped": skipped, "rows": rows}
