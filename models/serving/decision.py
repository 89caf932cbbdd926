"""One rule decides each result's condition: quality, then physics, then the OOD gate, then
the classifier.

Theory of operation. The label is what a user acts on, so it comes from the
strongest evidence available, in this order; the first rule that applies
decides, and the result says which (``decided_by``):

1. ``quality`` -- the input is unusable: the condition is ``sensor_fault``,
   never ``healthy`` and never a machine fault, the evidence names the flag,
   and ``anomalous`` is False (a dead or saturated chain says nothing about
   the machine; the consumer's alarms also skip these windows, see
   :mod:`cloud.consumer.alarms`). Unusable means any of:

   - ``nonfinite``: any NaN/inf sample (the edge replaced it by 0). A working
     ADC chain cannot produce one; it proves the chain or its software broken,
     and the zeros put steps into every spectrum.
   - ``constant``: no variation over the interval (a dead channel).
   - ``dropout``: at least :data:`DEAD_SHARE` of the report's samples lie in
     runs of identical values at least ``dsp.analyze.DROPOUT_MIN_S`` (10 ms)
     long (an intermittently dead channel: a live accelerometer's noise
     changes the ADC code every sample).
   - ``clipped``: at least :data:`CLIPPED_SHARE` of the report's samples sit
     at the sensor's full scale. At 1 % a Gaussian-like vibration is clipped at
     2.6 sigma, below its own crest factor: the range is set below the signal,
     levels and spectra read wrong. A brief heavy impact clips only its first
     one or two half-cycles, a few samples (0.01-0.1 % of a 1 s report even at
     dozens of impacts): that is flagged as partial in the evidence and the
     report is still diagnosed.
   - ``unusable``: no finite acceleration RMS or velocity RMS.

   The report's own counts (``quality.nonfinite``, ``clipped``, ``dead``) over
   its sample count (``duration_s x fs``) give the shares.
2. ``physics`` -- a bearing-defect family is clear in the envelope spectrum
   (:mod:`models.serving._diagnose_batch`: a principal line 4x its floor with a
   further member 3x, off the shaft orders, in a comb as wide as the speed and
   slip uncertainty; or joint evidence, three members 3x off the shaft orders
   in the family that scores highest): that defect is named whatever the
   classifier says; the family's strength and lit lines are in the evidence.
   **Weak evidence** also decides here: where no family is clear but exactly
   one family's principal line stands 3x off the shaft orders and that family
   scores highest (``FamilyCall.weak``), it is named when the pump's baseline
   says anomalous *and* the classifier names no fault (``healthy``,
   ``unknown``/unsure, or its features are outside the training support). One
   3x line is in about 5 % of simulated non-bearing reports, so alone it names
   nothing; with the baseline's flag (about 1 % false alarms) a healthy
   machine is named a bearing fault in about 0.05 % of reports, while an
   anomalous machine the classifier cannot name gets the defect its envelope
   points to (see :mod:`models.serving._diagnose_batch`). A classifier that
   names a fault keeps it.
3. ``ood`` -- the classifier's features fall outside the support of its
   training data (:mod:`models.serving.support`); a confident-looking
   probability is not used. The condition is ``healthy`` when everything
   else says so -- the pump's baseline (own or fleet) says not anomalous, no
   envelope line at a catalog defect rate stands 4x over its floor and no
   shaft-rate or broadband pattern of the physics rules is lit (no bearing
   family is clear, or rule 2 would have decided), and the ISO zone is A or B --
   and ``unknown`` otherwise; the features that fell outside are in the
   evidence. (A machine the simulator did not model exactly but that shows
   no fault signature is healthy or unknown, never a confident fault.) A
   bundle without training statistics (the built-in physics bundle, older
   bundles) has no gate.
4. ``classifier`` -- its calibrated top class, or ``unknown`` when the top
   probability is below the bundle's ``unsure_below``. The probabilities are
   first conditioned on the machine (:func:`rule_out_impossible`): a class
   only a machine with an impeller can show (:data:`IMPELLER_CLASSES`:
   cavitation, which needs a liquid and a low-pressure zone at the impeller's
   eye) has probability 0 on an asset that declares no impeller vanes (a
   motor, a test rig), and the other classes keep their odds against
   each other (Bayes with that class's prior at 0). The simulator trains
   cavitation only on pumps with vanes stated, for the same reason. A pump's
   asset therefore states its vanes (which its blade-pass line needs anyway);
   the evidence says when a class was ruled out.

Rule 1 runs first because nothing computed from a broken chain can be
trusted; rule 2 before 3 and 4 because a clear defect family is direct
physical evidence, valid on any machine, while the classifier is valid only
on machines like its training data. The probabilities in the result stay the
classifier's, so a data scientist sees what it said and why it was overruled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from dsp.analyze import DROPOUT_MIN_S
from dsp.report import Q_CLIPPED, Q_CONSTANT, Q_DROPOUT, Q_NONFINITE, Report
from dsp.results import HEALTHY, SENSOR_FAULT, UNKNOWN, Evidence

from ._diagnose_batch import FamilyCall

CLIPPED_SHARE = 0.01  # share of samples at full scale that makes a report unusable
DEAD_SHARE = 0.01  # share of samples in >= DROPOUT_MIN_S runs of one value that does
OOD_HEALTHY_ZONES = ("A", "B")
DecidedBy = str  # "quality" | "physics" | "ood" | "classifier"
RULES: tuple[str, ...] = ("quality", "physics", "ood", "classifier")
#: Classes only a machine with an impeller (a pump: :attr:`dsp.Asset.impeller`) can show.
IMPELLER_CLASSES: frozenset[str] = frozenset({"cavitation"})

__all__ = ["CLIPPED_SHARE", "DEAD_SHARE", "DROPOUT_MIN_S", "IMPELLER_CLASSES", "RULES",
           "Decision", "decide", "rule_out_impossible", "sensor_faults"]


@dataclass(frozen=True, slots=True)
class Decision:
    condition: str
    decided_by: DecidedBy
    anomalous: bool
    evidence: list[Evidence] = field(default_factory=list)


def _pct(share: float) -> str:
    return f"{100 * share:.2g} %"


def sensor_faults(r: Report) -> tuple[list[Evidence], list[Evidence]]:
    """(faults, partial notes) of one report's data quality, as evidence."""
    q = r.quality
    n = max(1, round(r.duration_s * r.fs))
    faults: list[Evidence] = []
    notes: list[Evidence] = []
    if q.flags & Q_NONFINITE:
        faults.append(Evidence("sensor_fault:nonfinite", float(q.nonfinite),
                               f"{q.nonfinite} NaN/inf samples (replaced by 0 at the edge)"))
    if q.flags & Q_CONSTANT:
        faults.append(Evidence("sensor_fault:constant", 0.0,
                               "no variation over the interval: dead channel"))
    if q.flags & Q_DROPOUT:
        share = q.dead / n
        what = (f"{_pct(share)} of samples in runs of one value >= {DROPOUT_MIN_S * 1e3:g} ms")
        if share >= DEAD_SHARE or q.dead == 0:  # no count: an edge that only flags
            faults.append(Evidence("sensor_fault:dropout", round(share, 4),
                                   f"{what}: intermittently dead channel"))
        else:
            notes.append(Evidence("quality:dropout", round(share, 4),
                                  f"{what} (partial, below {_pct(DEAD_SHARE)}: still diagnosed)"))
    if q.flags & Q_CLIPPED:
        share = q.clipped / n
        what = f"{q.clipped} samples ({_pct(share)}) at full scale"
        if share >= CLIPPED_SHARE:
            faults.append(Evidence("sensor_fault:clipped", round(share, 4),
                                   f"{what}: saturated, levels and spectra unreliable"))
        else:
            notes.append(Evidence("quality:clipped", round(share, 4),
                                  f"{what} (partial, below {_pct(CLIPPED_SHARE)}: "
                                  "still diagnosed)"))
    f = r.features
    if not faults and not (f.rms == f.rms and f.rms != float("inf")
                           and f.velocity_rms == f.velocity_rms
                           and f.velocity_rms != float("inf")):
        faults.append(Evidence("sensor_fault:unusable", 0.0,
                               "no finite acceleration or velocity RMS"))
    return faults, notes


def rule_out_impossible(
    proba: NDArray[np.floating], classes: Sequence[str], reports: Sequence[Report]
) -> tuple[NDArray[np.floating], list[Evidence | None]]:
    """The classifier's probabilities given each report's machine (rule 4): the
    :data:`IMPELLER_CLASSES` at 0 where the asset states no vanes, each row
    renormalized (a row left with nothing is all 0: unsure, so ``unknown``); and per
    report the evidence of what was ruled out (None where nothing was). ``proba``
    itself is not changed: the result keeps what the classifier said."""
    cols = np.array([j for j, c in enumerate(classes) if c in IMPELLER_CLASSES], dtype=np.intp)
    notes: list[Evidence | None] = [None] * len(reports)
    dry = np.array([not r.asset.impeller for r in reports], dtype=bool)
    if not cols.size or not dry.any():
        return proba, notes
    rows = proba[dry]  # a copy (boolean indexing)
    gone = rows[:, cols].sum(axis=1)
    rows[:, cols] = 0.0
    left = rows.sum(axis=1, keepdims=True)
    out = proba.copy()
    out[dry] = np.divide(rows, left, out=np.zeros_like(rows), where=left > 0)
    names = ", ".join(classes[j] for j in cols.tolist())
    for i, p in zip(np.flatnonzero(dry).tolist(), gone.tolist(), strict=True):
        if p >= 0.05:  # a share the classifier gave it that could matter
            notes[i] = Evidence(
                "ruled_out", round(p, 4),
                f"{names} (p={p:.2f} from the classifier) needs an impeller and this "
                "asset states no vanes (a motor or test rig; state vanes for a pump): "
                "ruled out, the other classes renormalized")
    return out, notes


def decide(
    reports: Sequence[Report],
    *,
    labels: Sequence[str],
    top_p: Sequence[float],
    unsure: Sequence[bool],
    anomalous: Sequence[bool],
    zones: Sequence[str],
    families: Sequence[FamilyCall],
    signature: Sequence[bool],
    ood: Sequence[list[tuple[str, float]]] | None,
) -> list[Decision]:
    """The condition of each report, by the rules of the module docstring, in order.

    ``labels``/``top_p``/``unsure``: the classifier's top class, its probability and
    whether it is below ``unsure_below``; ``anomalous``: the baseline's verdict;
    ``zones``: ISO zone; ``families``: the bearing-family calls; ``signature``: any
    envelope line or shaft-rate pattern lit; ``ood``: per report the features outside
    the training support ([] inside), or None when the bundle has no gate.
    """
    out: list[Decision] = []
    for i, r in enumerate(reports):
        faults, notes = sensor_faults(r)
        if faults:
            names = ", ".join(e.name.split(":", 1)[1] for e in faults)
            out.append(Decision(SENSOR_FAULT, "quality", False, [
                *faults, *notes,
                Evidence("decision", 0.0, f"sensor fault ({names}): no machine condition "
                         "named; the anomaly score is not used for alarms"),
            ]))
            continue
        said = f"classifier said {labels[i]} (p={top_p[i]:.2f})"
        fam = families[i]
        if fam.label is not None:
            out.append(Decision(fam.label, "physics", anomalous[i], [
                *notes,
                Evidence("decision", fam.strength,
                         f"clear {fam.label} envelope family named by physics; {said}"),
            ]))
            continue
        outside = ood[i] if ood is not None else []
        no_fault = unsure[i] or labels[i] in (HEALTHY, UNKNOWN) or bool(outside)
        if fam.weak is not None and anomalous[i] and no_fault:
            out.append(Decision(fam.weak, "physics", True, [
                *notes,
                Evidence("decision", 0.0,
                         f"weak {fam.weak} envelope evidence (one family's principal line "
                         "3x off the shaft orders, no other family's) on a machine its "
                         f"baseline calls anomalous; {said}"
                         + (", outside its training support" if outside else "")
                         + ": named by physics"),
            ]))
            continue
        if outside:
            healthy = not anomalous[i] and zones[i] in OOD_HEALTHY_ZONES and not signature[i]
            cond = HEALTHY if healthy else UNKNOWN
            why = ("baseline typical, zone A/B, no fault signature" if healthy else
                   "not all of: baseline typical, zone A/B, no fault signature")
            listed = ", ".join(f"{n} {s:g}" for n, s in outside[:4])
            out.append(Decision(cond, "ood", anomalous[i], [
                *notes,
                *(Evidence(f"ood:{n}", s, "robust spreads beyond the training range")
                  for n, s in outside[:4]),
                Evidence("decision", float(len(outside)),
                         f"outside the classifier's training support ({listed}); {said}, "
                         f"not used; {why}"),
            ]))
            continue
        cond = UNKNOWN if unsure[i] else labels[i]
        out.append(Decision(cond, "classifier", anomalous[i], notes))
    return out
