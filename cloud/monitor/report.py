"""A monitoring run's files: ``constraint_violations.json`` (Model Monitor's layout), the
full report as JSON, and a self-contained HTML page (inline SVG, no external resources).

Model Monitor's ``constraint_violations.json`` is ``{"violations": [{"feature_name",
"constraint_check_type", "description"}]}``; the check types used here are
``baseline_drift_check`` (a feature's distribution moved: the description names the
scope, the distances and the adjusted p-value) and, for the spectrum and the class mix,
the same check type under the feature names ``spectrum`` and ``condition``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import msgspec

from .run import MonitorReport, Plot

CONSTRAINT_VIOLATIONS = "constraint_violations.json"
REPORT_JSON = "monitor_report.json"
REPORT_HTML = "monitor_report.html"


def violations(report: MonitorReport) -> dict[str, Any]:
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for t in report.drifted:
        if t.feature in seen:
            continue
        seen.add(t.feature)
        out.append({
            "feature_name": t.feature, "constraint_check_type": "baseline_drift_check",
            "description": (f"{t.scope}: Jensen-Shannon distance {t.js:.3f} (threshold "
                            f"{report.thresholds.js}), normalized Wasserstein {t.wasserstein:.2f}"
                            f", PSI {t.psi:.3f}, BH-adjusted p {t.q:.2g}; {t.n_live} live vs "
                            f"{t.n_ref} reference reports"),
        })
    for s in report.spectrum:
        if s.drifted and "spectrum" not in seen:
            seen.add("spectrum")
            out.append({
                "feature_name": "spectrum", "constraint_check_type": "baseline_drift_check",
                "description": (f"{s.scope}: PCA reconstruction error {s.reconstruction_ratio:.2f}"
                                f"x the reference's ({s.components} components), mean "
                                f"{s.mahalanobis:.2f} sd from the reference's"),
            })
    p = report.prediction
    if p is not None and p.drifted:
        out.append({
            "feature_name": "condition", "constraint_check_type": "baseline_drift_check",
            "description": (f"class mix: Jensen-Shannon distance {p.class_js:.3f}, chi-squared p "
                            f"{p.class_p:.2g} (prediction drift; explained by named classes "
                            "where the data drift is not)"),
        })
    return {"violations": out}


def _svg(plot: Plot, width: int = 420, height: int = 120) -> str:
    n = len(plot.live)
    top = max(max(plot.live), max(plot.reference), 1e-9)
    bw = width / n
    bars = []
    for i, (lv, rv) in enumerate(zip(plot.live, plot.reference, strict=True)):
        for v, cls, dx in ((rv, "ref", 0.0), (lv, "live", bw / 2)):
            h = v / top * (height - 14)
            bars.append(f'<rect class="{cls}" x="{i * bw + dx:.1f}" y="{height - h:.1f}" '
                        f'width="{bw / 2:.1f}" height="{h:.1f}"/>')
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img"><title>{html.escape(plot.feature)}</title>{"".join(bars)}'
            f'<text x="0" y="10">{plot.lo:g}</text><text x="{width - 30}" y="10">{plot.hi:g}'
            "</text></svg>")


def render_html(report: MonitorReport) -> str:
    e = html.escape
    rows = "".join(
        f"<tr class={'drift' if t.drifted else 'ok'}><td>{e(t.feature)}</td><td>{e(t.scope)}</td>"
        f"<td>{t.js:.3f}</td><td>{t.wasserstein:.2f}</td><td>{t.psi:.3f}</td><td>{t.q:.2g}</td>"
        f"<td>{t.n_live}</td><td>{t.n_ref}</td></tr>"
        for t in report.features[:40]
    )
    plots = "".join(
        f"<figure><figcaption>{e(p.feature)} ({e(p.scope)}): reference grey, live "
        f"orange</figcaption>{_svg(p)}</figure>" for p in report.plots
    )
    spec = "".join(
        f"<li>{e(s.scope)}: reconstruction error x{s.reconstruction_ratio:.2f}, mean shift "
        f"{s.mahalanobis:.2f} sd{' (drift)' if s.drifted else ''}</li>" for s in report.spectrum
    )
    pred = ""
    if report.prediction is not None:
        p = report.prediction
        pred = (f"<p>Class mix: JS {p.class_js:.3f}, p {p.class_p:.2g}"
                f"{' (drift)' if p.drifted else ''}</p><ul>" + "".join(
                    f"<li>{e(k)}: {v:.3f} (reference {p.ref_shares.get(k, 0.0):.3f})</li>"
                    for k, v in p.live_shares.items()) + "</ul>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>pumpwatch monitor: {e(report.model_version)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:60em}}
table{{border-collapse:collapse}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}
tr.drift td{{background:#fde2d6}}rect.ref{{fill:#9aa}}rect.live{{fill:#e8742a}}
figure{{display:inline-block;margin:0 1em 1em 0}}text{{font-size:10px}}</style></head>
<body><h1>Model {e(report.model_version)}: {e(report.status)}</h1>
<p>Unexplained drift: {e(", ".join(report.unexplained) or "none")}.
{report.usage.get("reports", 0)} reports in the window; training reference:
{"yes" if report.training_reference else "no"}; live reference:
{"yes" if report.reference_since_ns is not None else "no"}.</p>
{plots}
<h2>Features</h2><table><tr><th>feature</th><th>scope</th><th>JS</th><th>W1/sd</th>
<th>PSI</th><th>q</th><th>live</th><th>ref</th></tr>{rows}</table>
<h2>Spectrum</h2><ul>{spec}</ul><h2>Predictions</h2>{pred}
</body></html>
"""


def write_reports(report: MonitorReport, directory: Path) -> dict[str, Path]:
    """Write the three files into ``directory``; their paths by kind."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"constraint_violations": directory / CONSTRAINT_VIOLATIONS,
             "json": directory / REPORT_JSON, "html": directory / REPORT_HTML}
    paths["constraint_violations"].write_text(json.dumps(violations(report), indent=2) + "\n")
    paths["json"].write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    paths["html"].write_text(render_html(report))
    return paths
