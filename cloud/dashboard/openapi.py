"""The OpenAPI 3.1 description of the dashboard API (a test checks it against the handlers)."""

from __future__ import annotations

from typing import Any

from . import lifecycle

Schema = dict[str, Any]


def _obj(props: dict[str, Schema], optional: tuple[str, ...] = (), *,
         open_: bool = False) -> Schema:
    return {
        "type": "object",
        "properties": props,
        "required": [k for k in props if k not in optional],
        "additionalProperties": open_,
    }


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
NUM_NULL: Schema = {"type": ["number", "null"]}
STR_NULL: Schema = {"type": ["string", "null"]}
ZONE: Schema = {"type": "string", "enum": ["A", "B", "C", "D", "?"]}
MS: Schema = {"type": "number", "description": "milliseconds since the Unix epoch (UTC)"}
ISO: Schema = {"type": "string", "description": "ISO 8601 time (UTC)"}


def _array(item: Schema) -> Schema:
    return {"type": "array", "items": item}


SCHEMAS: dict[str, Schema] = {
    "Error": _obj({"error": STR, "parameter": STR}, optional=("parameter",)),
    "Evidence": _obj({"name": STR, "value": NUM_NULL, "note": STR}),
    "Result": _obj({
        "device": STR,
        "epoch": {"type": "string", "description": "unsigned 64-bit stream epoch, decimal"},
        "seq": INT, "site": STR, "pump": STR, "channel": STR, "time": ISO, "t_ms": MS,
        "stored_ms": MS, "condition": STR,
        "probabilities": {"type": "object", "additionalProperties": NUM_NULL},
        "anomaly_score": NUM_NULL, "anomaly_threshold": NUM_NULL, "anomalous": BOOL,
        "baseline": STR, "iso_zone": ZONE, "velocity_rms": NUM_NULL, "rpm": NUM_NULL,
        "evidence": _array(_ref("Evidence")), "model_version": STR,
        "manifest_digest": {**STR_NULL, "description": "the producing bundle's manifest "
                            "(see /api/classes), if the endpoint named it"},
        "extra_fields": {**_array(STR), "description": "names of the model's own result "
                         "fields (declared in its manifest's `fields`), merged into this "
                         "object"},
    }, open_=True),
    "ClassInfo": _obj({
        "name": STR, "display_name": STR, "description": STR,
        "severity": {**STR, "description": "hint: none, info, warning, critical, ..."},
        "action": {**STR, "description": "recommended maintenance action"},
        "model_version": {**STR, "description": "the model whose manifest declared it"},
    }),
    "ManifestInfo": _obj({"digest": STR, "model_version": STR, "stored_ms": MS,
                          "valid": BOOL}),
    "Classes": _obj({
        "classes": _array(_ref("ClassInfo")),
        "fields": {"type": "object", "additionalProperties": STR,
                   "description": "extra result field name -> description"},
        "manifests": _array(_ref("ManifestInfo")),
    }),
    "Monitoring": _obj({
        "models": _array({"type": "object", "description": (
            "a model version's latest monitoring run (docs/monitoring.md): model_version, "
            "status (ok, drift, insufficient_data, never_run), checked_ns, unexplained, "
            "features, spectrum, prediction, usage, report")}),
        "quality": {"type": "object", "additionalProperties": {"type": "object"},
                    "description": "label-based quality per model version from closed asset "
                    "alarms (cloud/monitor/quality.py): open, acknowledged, closed, faults, "
                    "no_fault_found, precision, condition_agreement, confusion, "
                    "time_to_detection_s"},
        "usage": _obj({
            "since_ns": {"type": "integer"}, "until_ns": {"type": "integer"},
            "versions": {"type": "object", "additionalProperties": {"type": "object"},
                         "description": "per model version over the hour buckets of the "
                         "last 24 h, every consumer merged (cloud/monitor/usage.py): "
                         "invocations, reports, errors {unavailable, rejected}, "
                         "errors_total, error_rate, dead_letters, latency_ms {p50, p95, "
                         "p99}, latency_calls, targets {target: the same}, pumps {pump: "
                         "{reports, dead_letters}} (the 50 busiest), pumps_total"},
        }),
    }),
    "RolloutEvent": _obj({
        "event": {**STR, "description": "`auto-rollback`"},
        "at": ISO, "endpoint": STR, "candidate": STR, "production": STR,
        "mode": {"type": "string", "enum": ["shadow", "canary"]},
        "reason": {**STR, "description": "the limit the candidate crossed"},
    }, optional=("at", "endpoint", "candidate", "production", "mode", "reason"), open_=True),
    "Rollout": _obj({
        "state": {"type": "string", "enum": ["ok", "not_configured", "unreachable", "error"],
                  "description": "ok: the model server answered (the fields below are its "
                  "`GET /rollout`, unchanged); not_configured: no --model-server; "
                  "unreachable: no answer within the timeout; error: an answer that is not "
                  "a rollout (`error` says which)"},
        "model_server": {**STR_NULL, "description": "the model server's URL"},
        "error": STR_NULL, "checked_ms": MS,
        "endpoint": {**STR_NULL, "description": "the model server's endpoint name"},
        "production": {**STR_NULL, "description": "the version production serves"},
        "rollout": {"type": ["object", "null"], "description": (
            "the running trial (docs/models.md, 'Rolling out a model'): mode (shadow, "
            "canary), percent, production, candidate, limits, started, by, versions "
            "(per version: reports, calls, errors, error_rate, ood_share, labels, "
            "mean_anomaly_score, latency_p50_ms, latency_p95_ms), comparison (shadow: per "
            "pump class and `*` overall: reports, agreement, label_shift, "
            "mean_anomaly_score_shift, changes), by_pump_class, shadow_skipped, fallbacks")},
        "last": {"type": ["object", "null"],
                 "description": "the last finished trial, as `rollout` plus `ended` (why)"},
        "events": {**_array(_ref("RolloutEvent")),
                   "description": "automatic rollbacks since the model server started"},
        "shadow_results": {"type": ["object", "null"], "description": (
            "the shadow's per-report results the server returns on responses (the "
            "consumer stores them in shadow_results): sent, waiting, dropped")},
    }),
    "PumpSummary": _obj({
        "pump": STR, "site": STR, "channel": {**STR, "description": "the worst channel"},
        "condition": STR, "probability": NUM_NULL, "anomaly_score": NUM_NULL,
        "anomaly_threshold": NUM_NULL, "anomalous": BOOL, "iso_zone": ZONE,
        "velocity_rms": {**NUM_NULL, "description": "ISO 20816 velocity RMS, mm/s"},
        "last_report": ISO, "last_report_ms": MS, "last_stored_ms": MS,
        "alarm_state": {"type": "string", "enum": ["raised", "none"]},
        "active_alarms": INT,
        "channels": _array(_ref("Result")),
    }),
    "Pumps": _obj({"pumps": _array(_ref("PumpSummary"))}),
    "HistorySeries": _obj({
        "channel": STR, "t_ms": _array(NUM), "count": _array(INT),
        "anomaly_score": _array(NUM_NULL), "anomaly_score_max": _array(NUM_NULL),
        "anomaly_threshold": _array(NUM_NULL), "anomalous": _array(INT),
        "velocity_rms": _array(NUM_NULL), "velocity_rms_max": _array(NUM_NULL),
        "iso_zone": _array(ZONE), "condition": _array(STR_NULL),
    }),
    "History": _obj({
        "pump": STR, "since": ISO, "until": ISO, "since_ms": MS, "until_ms": MS,
        "bucket_s": {**NUM, "description": "0: raw rows; else the aggregation bucket length"},
        "rows": {**INT, "description": "result rows in the range"},
        "zone_limits": {"type": ["array", "null"], "items": NUM,
                        "description": "A/B, B/C, C/D velocity limits (mm/s) of the asset"},
        "series": _array(_ref("HistorySeries")),
    }),
    "SpectrumData": _obj({
        "f0": NUM, "df": NUM, "n": INT,
        "db": {**_array(NUM_NULL), "description": "line k at f0 + k*df Hz, in dB"},
    }),
    "Marker": _obj({
        "name": STR, "hz": NUM,
        "kind": {"type": "string",
                 "enum": ["shaft", "vane", "bearing", "harmonic", "sideband"]},
        "source": STR,
        "of": {**STR, "description": "harmonic or sideband: the defect line it belongs to "
               "(e.g. BPFI); else empty"},
        "order": {**INT, "description": "harmonic number k (the carrier's, for a sideband)"},
    }),
    "SpectraRow": _obj({
        "time": ISO, "t_ms": MS, "seq": INT, "epoch": STR, "rpm": NUM_NULL,
        "db": {**_array(NUM_NULL), "description": "column j at f0 + j*df Hz: the max dB "
               "of the `pool` lines it covers"},
    }),
    "Spectra": _obj({
        "pump": STR, "channel": STR,
        "kind": {"type": "string", "enum": ["power", "envelope"]},
        "f0": NUM, "df": {**NUM, "description": "column width, Hz"},
        "pool": {**INT, "description": "report lines per column"},
        "columns": INT,
        "skipped": {**INT, "description": "reports left out (another grid, no envelope, "
                    "undecodable)"},
        "rows": {**_array(_ref("SpectraRow")), "description": "newest first"},
    }),
    "Spectrum": _obj({
        "pump": STR, "channel": STR, "site": STR, "device": STR, "epoch": STR, "seq": INT,
        "time": ISO, "t_ms": MS, "rpm": NUM_NULL, "speed_source": STR, "fs": NUM,
        "velocity_rms": NUM_NULL, "iso_zone": ZONE, "zone_limits": _array(NUM),
        "spectrum": {**_ref("SpectrumData"),
                     "description": "Welch PSD, dB re 1 (m/s^2)^2/Hz"},
        "envelope": {"oneOf": [_ref("SpectrumData"), {"type": "null"}],
                     "description": "squared-envelope spectrum, dB re its mean"},
        "envelope_band": {"type": ["array", "null"], "items": NUM},
        "markers": _array(_ref("Marker")),
    }),
    "Alarm": _obj({
        "id": STR, "site": STR, "pump": STR, "channel": STR_NULL, "kind": STR,
        "state": {"type": "string", "enum": ["raised", "cleared"]},
        "raised": ISO, "raised_ms": MS, "cleared": STR_NULL, "cleared_ms": NUM_NULL,
        "updated_ms": MS, "reason": STR, "evidence": _array(_ref("Evidence")),
        "parent": {**STR_NULL, "description": "an episode's asset alarm"},
        "lifecycle": {"type": ["object", "null"], "description": "asset alarms: status, "
                      "assignee, verdict, ... (docs/monitoring.md)"},
    }),
    "Alarms": _obj({"alarms": _array(_ref("Alarm"))}),
    "Gap": _obj({
        "epoch": {**STR, "description": "stream epoch, 16 hex digits"},
        "first": INT, "last": INT, "count": INT,
        "detected_after_ms": {**MS, "description": "arrival of the committed report after "
                              "the gap"},
    }),
    "Gaps": _obj({"device": STR, "grace_s": INT, "missing": INT,
                  "gaps": _array(_ref("Gap"))}),
}


def _param(name: str, where: str, desc: str, schema: Schema, required: bool = False) -> Schema:
    return {"name": name, "in": where, "description": desc, "required": required,
            "schema": schema}


def _json(ref: str, desc: str) -> Schema:
    return {"description": desc, "content": {"application/json": {"schema": _ref(ref)}}}


_ERR = {
    "400": _json("Error", "bad query parameter (named in `parameter`)"),
    "401": _json("Error", "bearer token required"),
    "503": _json("Error", "results store unavailable"),
}
_PUMP = _param("pump", "path", "pump id", {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
               required=True)
_TIME = {"type": "string", "description": "ISO 8601 (naive = UTC) or Unix seconds"}
_CHANNEL = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}

PATHS: dict[str, Schema] = {
    "/api/pumps": {"get": {
        "summary": "The fleet: every pump's latest state (worst channel first-class)",
        "operationId": "listPumps",
        "responses": {"200": _json("Pumps", "the fleet"), **_ERR},
    }},
    "/api/pumps/{pump}/history": {"get": {
        "summary": "Trend of anomaly score and velocity RMS, downsampled server-side",
        "operationId": "pumpHistory",
        "parameters": [
            _PUMP,
            _param("since", "query", "window start >= since (default: until - 24 h)", _TIME),
            _param("until", "query", "window start < until (default: just after the latest)",
                   _TIME),
            _param("channel", "query", "only this channel", _CHANNEL),
            _param("max_points", "query", "at most this many points per channel (10-10000)",
                   {"type": "integer", "minimum": 10, "maximum": 10000, "default": 600}),
        ],
        "responses": {"200": _json("History", "trend"),
                      "404": _json("Error", "no results for this pump"), **_ERR},
    }},
    "/api/pumps/{pump}/spectrum": {"get": {
        "summary": "Latest power and envelope spectrum with 1x/2x/blade-pass/bearing markers",
        "operationId": "pumpSpectrum",
        "parameters": [_PUMP, _param("channel", "query", "channel (default: newest)", _CHANNEL)],
        "responses": {"200": _json("Spectrum", "latest archived report's spectra"),
                      "404": _json("Error", "no archived report"),
                      "500": _json("Error", "the archived report does not decode"), **_ERR},
    }},
    "/api/pumps/{pump}/spectra": {"get": {
        "summary": "Waterfall: the newest archived spectra of one channel, newest first",
        "operationId": "pumpSpectra",
        "parameters": [
            _PUMP,
            _param("channel", "query", "channel (default: the newest archived report's)",
                   _CHANNEL),
            _param("n", "query", "at most this many spectra (1-120)",
                   {"type": "integer", "minimum": 1, "maximum": 120, "default": 30}),
            _param("kind", "query", "power spectrum or envelope spectrum",
                   {"type": "string", "enum": ["power", "envelope"], "default": "power"}),
            _param("bins", "query", "at most this many columns (16-4096; adjacent lines "
                   "merged by their maximum)",
                   {"type": "integer", "minimum": 16, "maximum": 4096, "default": 400}),
        ],
        "responses": {"200": _json("Spectra", "spectra, newest first"),
                      "404": _json("Error", "no archived report"), **_ERR},
    }},
    "/api/alarms": {"get": {
        "summary": "Alarms (pumps' asset alarms and their channel episodes), newest raised "
                   "first",
        "operationId": "listAlarms",
        "parameters": [
            _param("pump", "query", "only this pump", _CHANNEL),
            _param("kind", "query", "asset alarms, channel episodes, or both",
                   {"type": "string", "enum": ["all", "asset", "episode"], "default": "all"}),
            _param("state", "query", "filter by state",
                   {"type": "string", "enum": ["all", "raised", "cleared"], "default": "all"}),
            _param("limit", "query", "at most this many (1-1000)",
                   {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200}),
        ],
        "responses": {"200": _json("Alarms", "alarms"), **_ERR},
    }},
    "/api/classes": {"get": {
        "summary": "The condition classes and extra result fields the stored bundle "
                   "manifests declare (newest manifest wins per name)",
        "operationId": "listClasses",
        "responses": {"200": _json("Classes", "classes"), **_ERR},
    }},
    "/api/monitoring": {"get": {
        "summary": "Each model version's drift status from its latest monitoring run, its "
                   "usage (last 24 h) and its label-based quality",
        "operationId": "listMonitoring",
        "responses": {"200": _json("Monitoring", "model versions"), **_ERR},
    }},
    "/api/rollout": {"get": {
        "summary": "The model server's running rollout (shadow or canary comparison with "
                   "production) and its automatic-rollback events, relayed from its "
                   "`GET /rollout` (dashboard option --model-server)",
        "description": "Always 200 when the dashboard answers; `state` says whether the "
                       "model server did. Read at request time (timeout 2 s), not cached.",
        "operationId": "modelRollout",
        "responses": {"200": _json("Rollout", "the rollout, or why there is none"),
                      **{k: v for k, v in _ERR.items() if k != "503"}},
    }},
    "/api/devices/{device}/gaps": {"get": {
        "summary": "Sequence ranges of a device's streams never committed (neither a result "
                   "nor a dead letter) although a later report was: losses the edge did not "
                   "repair within the grace period",
        "operationId": "deviceGaps",
        "parameters": [
            _param("device", "path", "device name", _CHANNEL, required=True),
            _param("grace_s", "query", "only gaps whose next report arrived this long ago",
                   {"type": "integer", "minimum": 0, "maximum": 2592000, "default": 600}),
            _param("limit", "query", "at most this many ranges (1-10000)",
                   {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}),
        ],
        "responses": {"200": _json("Gaps", "missing ranges"), **_ERR},
    }},
    "/api/openapi.json": {"get": {
        "summary": "This document", "operationId": "openapi",
        "responses": {"200": {"description": "OpenAPI 3.1 document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }},
    "/api/stream": {"get": {
        "summary": "Server-Sent Events: `result` (data: Result), `alarm` (data: Alarm), "
                   "`rollout` (data: RolloutEvent, the model server's automatic rollbacks; "
                   "with --model-server), `hello` on connect, `reset` when a resume is too "
                   "far behind",
        "description": "Every event has an `id:` cursor `<results_ns>.<alarms_ns>`; a "
                       "reconnecting client sends it back as `Last-Event-ID` and gets what "
                       "it missed. Delivery is at least once: dedupe results on "
                       "(device, epoch, seq) and alarms on (id, updated_ms).",
        "operationId": "stream",
        "parameters": [
            _param("Last-Event-ID", "header", "resume after this cursor", STR),
            _param("last_event_id", "query", "same, for clients that cannot set headers",
                   STR),
        ],
        "responses": {"200": {"description": "event stream",
                              "content": {"text/event-stream": {"schema": STR}}},
                      **_ERR},
    }},
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pumpwatch dashboard API",
            "version": "1",
            "description": "Read-only but for the alarm lifecycle (POST /api/alarms/{id}/"
                           "ack|assign|close, token in the Authorization header). Optional "
                           "bearer token (Authorization: Bearer, or "
                           "access_token query parameter for EventSource).",
        },
        "paths": {**PATHS, **lifecycle.OPENAPI_PATHS},
        "components": {
            "schemas": {**SCHEMAS, **lifecycle.OPENAPI_SCHEMAS},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
