"""Label-based quality per model version, from closed asset alarms (operators' verdicts).

Per model version (the one whose result raised the alarm, recorded at raising):

``precision``
    share of closed alarms whose verdict is a fault (anything but
    ``no_fault_found``); None with no closed alarm. It is the precision of
    *alarms*: a fault no alarm raised is invisible here (recall needs labels
    the alarms did not produce).
``confusion``
    ``{named condition: {verdict: count}}``: what the model named when the alarm
    was raised against what the operator confirmed.
``condition_agreement``
    share of fault verdicts equal to the named condition.
``time_to_detection_s``
    median and max of (raised - onset) over fault verdicts whose operator gave
    the fault's onset (``n``: how many did); an alarm raised before the stated
    onset counts 0.
``open``/``acknowledged``/``closed``
    how many asset alarms are in each state.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from cloud.store import NO_FAULT_FOUND, AlarmRow, Store


def label_quality(assets: Sequence[AlarmRow]) -> dict[str, dict[str, Any]]:
    """Quality per model version from asset alarms (see the module docstring)."""
    out: dict[str, dict[str, Any]] = {}
    for a in assets:
        lc = a.lifecycle
        if a.kind != "asset" or lc is None:
            continue
        q = out.setdefault(lc.model_version or "?", {
            "open": 0, "acknowledged": 0, "closed": 0, "faults": 0, "no_fault_found": 0,
            "confusion": {}, "_agree": 0, "_ttd": []})
        q[lc.status] += 1
        if lc.status != "closed" or lc.verdict is None:
            continue
        named = lc.condition or "?"
        row = q["confusion"].setdefault(named, {})
        row[lc.verdict] = row.get(lc.verdict, 0) + 1
        if lc.verdict == NO_FAULT_FOUND:
            q["no_fault_found"] += 1
            continue
        q["faults"] += 1
        q["_agree"] += int(lc.verdict == named)
        if lc.onset_ns is not None:
            q["_ttd"].append(max(0, a.raised_ns - lc.onset_ns) / 1e9)
    for q in out.values():
        closed = q["faults"] + q["no_fault_found"]
        ttd: list[float] = q.pop("_ttd")
        agree: int = q.pop("_agree")
        q["precision"] = q["faults"] / closed if closed else None
        q["condition_agreement"] = agree / q["faults"] if q["faults"] else None
        q["time_to_detection_s"] = {
            "n": len(ttd), "median": statistics.median(ttd) if ttd else None,
            "max": max(ttd) if ttd else None}
    return dict(sorted(out.items()))


async def store_quality(store: Store) -> dict[str, dict[str, Any]]:
    """:func:`label_quality` over every asset alarm in the store."""
    return label_quality(await store.alarms(kind="asset"))


__all__ = ["label_quality", "store_quality"]
