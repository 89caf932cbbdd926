"""The condition classes pumpwatch's own model kinds know, with what a user reads of them.

A bundle's manifest declares the classes it can return (:class:`dsp.results.ClassInfo`);
this catalogue supplies display names, descriptions, severity hints and recommended
actions for the classes of the built-in kinds, and :data:`ALWAYS` the classes the
serving layer adds to every manifest. A bundle may declare classes not listed here
(its own ``classes`` entries in ``bundle.json``); the catalogue is a default, not a
closed vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dsp.results import HEALTHY, SENSOR_FAULT, UNKNOWN, ClassInfo

#: The classes of the simulator-trained and physics kinds, in their output order.
CONDITIONS: tuple[str, ...] = (
    HEALTHY,
    "imbalance",
    "misalignment",
    "looseness",
    "bearing_outer",
    "bearing_inner",
    "bearing_ball",
    "cavitation",
    UNKNOWN,
)

CATALOGUE: dict[str, ClassInfo] = {
    c.name: c
    for c in (
        ClassInfo(HEALTHY, "Healthy", "No fault signature; vibration within limits.",
                  "none", "No action."),
        ClassInfo("imbalance", "Imbalance", "Dominant 1x running-speed line (radial).",
                  "warning", "Check the impeller for build-up or damage; balance the rotor."),
        ClassInfo("misalignment", "Misalignment", "Strong 2x line, often axial as well.",
                  "warning", "Check coupling alignment and pipe strain."),
        ClassInfo("looseness", "Mechanical looseness",
                  "Many running-speed harmonics and sub-harmonics.",
                  "warning", "Check foundation bolts, bearing housings and baseplate."),
        ClassInfo("bearing_outer", "Bearing outer race defect",
                  "Envelope lines at BPFO and its harmonics.",
                  "critical", "Plan a bearing replacement; trend the envelope lines."),
        ClassInfo("bearing_inner", "Bearing inner race defect",
                  "Envelope lines at BPFI with shaft-rate sidebands.",
                  "critical", "Plan a bearing replacement; trend the envelope lines."),
        ClassInfo("bearing_ball", "Bearing rolling-element defect",
                  "Envelope lines at 2xBSF/BSF with cage-rate (FTF) modulation.",
                  "critical", "Plan a bearing replacement; check lubrication."),
        ClassInfo("cavitation", "Cavitation", "Random broadband high-frequency energy.",
                  "warning", "Check suction pressure (NPSH), strainers and the operating point."),
        ClassInfo(UNKNOWN, "Unknown", "No class can be named with confidence.",
                  "info", "Inspect the evidence; compare with the pump's history."),
        ClassInfo(SENSOR_FAULT, "Sensor fault",
                  "The input is unusable: dead, clipped or non-finite samples.",
                  "warning", "Check the sensor, its cable and mounting."),
    )
}

#: Classes every served bundle can return, added by the serving layer to each manifest.
ALWAYS: tuple[str, ...] = (UNKNOWN, SENSOR_FAULT)


def class_info(name: str, override: Mapping[str, Any] | None = None) -> ClassInfo:
    """The catalogue's entry for ``name`` (or a plain one), updated by a bundle's ``override``."""
    base = CATALOGUE.get(name) or ClassInfo(name, name.replace("_", " ").capitalize())
    if not override:
        return base
    fields = {f: override[f] for f in ("display_name", "description", "severity", "action")
              if f in override}
    return ClassInfo(name=name, **{**{f: getattr(base, f) for f in
                                      ("display_name", "description", "severity", "action")},
                                   **fields})


def manifest_classes(names: Iterable[str],
                     overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[ClassInfo]:
    """The manifest's class list: ``names`` in order, then :data:`ALWAYS` if missing."""
    seen: list[str] = []
    for n in [*names, *ALWAYS]:
        if n not in seen:
            seen.append(n)
    return [class_info(n, (overrides or {}).get(n)) for n in seen]
