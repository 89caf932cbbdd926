"""Demo scoring: delivery counts, latency, and fault detection against the injected schedule.

Detection comes from the ``alarms`` table when the alarm writer (issue 9,
``cloud/consumer/alarms.py``) has put rows there for this run: a fault is
detected by the pump's first alarm episode (any channel, any kind) at or
after onset, and classified when one of its alarms after onset names the
injected class (``condition X``, or the ``diagnosis X`` it was rewritten with, in
the reason). Without alarm rows it comes
from a **stand-in** computed
here from stored results only (``detection_source`` says which): a pump's
window (one report interval, all its channels) is *flagged* when at least half
of its channels are anomalous against the pump's own baseline (``baseline =
"pump"``); the stand-in alarm is raised at the window where 3 of the last 5
windows are flagged, and it names the most frequent non-healthy condition of
those flagged windows' results. This is not the product's alarm logic (no
clearing, no hysteresis, no ISO zone alarms) — only enough to score the demo.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from models.training.train_sim import CLASS_FAULTS

from .monitor import ResultRow
from .plan import PlannedPump

#: Classifier condition -> the simulator fault that produces it (the training set's own
#: table). Here, not in .plan: the CLI builds every parser from .plan's defaults, and
#: the training module would load the synthesizer into `pumpwatch edge` too.
CONDITION_FAULT: dict[str, str] = {c: f for c, f in CLASS_FAULTS.items() if f is not None}

STANDIN_LABEL = ("stand-in: computed from stored results by pumpwatch/stack/score.py "
                 "(3 of 5 windows with >= half the channels anomalous vs the pump's baseline); "
                 "the alarm writer (issue 9) has not written alarms")
FLAG_WINDOWS = 5
FLAG_NEEDED = 3


@dataclass(frozen=True, kw_only=True)
class Alarm:
    pump: str
    raised_ns: int  # end of the window that raised it
    condition: str  # the class the alarm names ("unknown" when none)
    kind: str = "stand-in"


def standin_alarms(results: Iterable[ResultRow]) -> list[Alarm]:
    """At most one stand-in alarm per pump: the first time 3 of 5 windows are flagged."""
    by_pump: dict[str, dict[int, list[ResultRow]]] = {}
    for r in results:
        if r.baseline != "pump":
            continue  # before the pump's baseline was deployed: fleet scores, not judged
        by_pump.setdefault(r.pump, {}).setdefault(r.t0_ns, []).append(r)
    alarms = []
    for pump, windows in sorted(by_pump.items()):
        recent: list[tuple[int, list[ResultRow]]] = []
        for t0 in sorted(windows):
            rows = windows[t0]
            flagged = 2 * sum(r.anomalous for r in rows) >= len(rows) > 0
            recent = [*recent, (t0, rows if flagged else [])][-FLAG_WINDOWS:]
            if sum(1 for _, rs in recent if rs) >= FLAG_NEEDED:
                votes = Counter(r.condition for _, rs in recent for r in rs
                                if r.condition not in ("healthy", "unknown"))
                cond = votes.most_common(1)[0][0] if votes else "unknown"
                alarms.append(Alarm(pump=pump, raised_ns=t0 + rows[0].duration_ns,
                                    condition=cond))
                break
    return alarms


_CONDITION = re.compile(r"\b(?:condition|diagnosis) (\w+)")


def alarms_from_table(rows: Sequence[dict[str, object]],
                      interval_ns: int = 1_000_000_000) -> list[Alarm]:
    """Alarm episodes of the consumer's alarm writer (``cloud/consumer/alarms.py``).

    One per pump channel and kind; ``raised_ns`` there is the raising window's
    start, so the end of that window is ``raised_ns + interval``. The class an
    episode names is the last ``condition X`` or ``diagnosis X`` in its reason (the
    raising result's condition, or the diagnosis the episode was rewritten with as
    its windows named a fault); ISO zone episodes name none (``"unknown"``).
    """
    out = []
    for a in rows:
        named = _CONDITION.findall(str(a.get("reason") or ""))
        out.append(Alarm(pump=str(a["pump"]),
                         raised_ns=int(a["raised_ns"]) + interval_ns,  # type: ignore[call-overload]
                         condition=named[-1] if named else "unknown", kind=str(a.get("kind"))))
    return out


def percentile_ms(latencies_ns: Sequence[int], q: float) -> float | None:
    if not latencies_ns:
        return None
    return round(float(np.percentile(np.asarray(latencies_ns, dtype=np.float64), q)) / 1e6, 1)


def score(
    *,
    fleet: Sequence[PlannedPump],
    source_start_ns: dict[str, int],
    alarms: Sequence[Alarm],
    horizon_ns: int,
) -> dict[str, object]:
    """Per-pump verdicts and the fault totals.

    ``source_start_ns``: each device's stream ``t = 0`` (wall clock, ns), so a
    fault's onset is ``start + onset_s``. ``horizon_ns``: the end of the run;
    a fault whose onset lies beyond it was not injected.
    """
    alarms = sorted(alarms, key=lambda a: a.raised_ns)
    pumps: dict[str, dict[str, object]] = {}
    injected = detected = classified = false_alarms = 0
    for p in fleet:
        start = source_start_ns.get(p.device)
        fault = p.fault
        entry: dict[str, object] = {"device": p.device, "fault": fault.kind if fault else None}
        if fault is not None and start is not None:
            onset = start + round(fault.onset_s * 1e9)
            entry["onset_s"] = fault.onset_s
            if onset < horizon_ns:
                injected += 1
                pre = [a for a in alarms if a.pump == p.id and a.raised_ns < onset]
                post = [a for a in alarms if a.pump == p.id and a.raised_ns >= onset]
                false_alarms += len(pre)
                if post:
                    detected += 1
                    hit = post[0]
                    # classified: an alarm of this pump after onset names the injected class
                    named = [a for a in post if CONDITION_FAULT.get(a.condition) == fault.kind]
                    ok = bool(named)
                    classified += ok
                    if named:
                        entry["classified_by"] = f"{named[0].kind} alarm at +" \
                            f"{(named[0].raised_ns - onset) / 1e9:.1f} s"
                    entry.update(detected=True, detection_delay_s=round((hit.raised_ns - onset)
                                                                        / 1e9, 1),
                                 alarm_condition=hit.condition, classified=ok)
                else:
                    entry.update(detected=False, detection_delay_s=None)
            else:
                entry["injected"] = False
        elif fault is None:
            n = sum(1 for a in alarms if a.pump == p.id)
            false_alarms += n
            entry["false_alarms"] = n
        pumps[p.id] = entry
    return {
        "faults_injected": injected,
        "faults_detected": detected,
        "faults_classified": classified,
        "false_alarms": false_alarms,
        "detection_delay_s": {k: v.get("detection_delay_s") for k, v in pumps.items()
                              if v.get("fault") and "detected" in v},
        "pumps": pumps,
    }
