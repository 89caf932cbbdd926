"""An optional CloudWatch publisher for a monitoring run (AWS), in Model Monitor's names.

Model Monitor publishes ``feature_baseline_drift_{feature}`` (the distance from the
baseline) per monitored feature; :func:`metric_data` builds the same metric names for
one :class:`~.run.MonitorReport`, with a ``ModelVersion`` dimension (a multi-model
bundle has no endpoint of its own), plus ``pumpwatch_drift_status`` (1 drift, 0 ok, -1
insufficient data). :func:`publish` sends them with ``PutMetricData`` in chunks of
1000 (the API's limit per call). boto3 is imported by the caller (the command).
"""

from __future__ import annotations

from typing import Any

from .run import MonitorReport

NAMESPACE = "pumpwatch/ModelMonitor"
_STATUS = {"ok": 0.0, "drift": 1.0, "insufficient_data": -1.0}
MAX_PER_CALL = 1000


def metric_data(report: MonitorReport, *, timestamp_s: float) -> list[dict[str, Any]]:
    """One datum per feature (its worst scope's JS distance) and the status."""
    dims = [{"Name": "ModelVersion", "Value": report.model_version}]
    worst: dict[str, float] = {}
    for t in report.features:
        worst[t.feature] = max(worst.get(t.feature, 0.0), t.js)
    out = [{"MetricName": f"feature_baseline_drift_{name}", "Dimensions": dims,
            "Timestamp": timestamp_s, "Value": value, "Unit": "None"}
           for name, value in sorted(worst.items())]
    out.append({"MetricName": "pumpwatch_drift_status", "Dimensions": dims,
                "Timestamp": timestamp_s, "Value": _STATUS[report.status], "Unit": "None"})
    return out


def publish(client: Any, report: MonitorReport, *, timestamp_s: float,
            namespace: str = NAMESPACE) -> int:
    """``PutMetricData`` the run's data with ``client`` (a boto3 CloudWatch client);
    returns how many data were sent."""
    data = metric_data(report, timestamp_s=timestamp_s)
    for i in range(0, len(data), MAX_PER_CALL):
        client.put_metric_data(Namespace=namespace, MetricData=data[i:i + MAX_PER_CALL])
    return len(data)
