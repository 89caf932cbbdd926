"""Reading a SageMaker shadow test back from data capture, and comparing it like the local one.

On SageMaker a shadow variant's answers never reach the caller: with data capture
on, the endpoint writes each captured request and response to S3 as JSON lines,
one file per upload under ``{DestinationS3Uri}/{endpoint}/{variant}/yyyy/mm/dd/hh/``
(the hour of the invocation, UTC). One line (SageMaker's capture format)::

    {"captureData": {
        "endpointInput":  {"observedContentType": "...", "mode": "INPUT",
                           "data": "...", "encoding": "BASE64" | "JSON" | "CSV"},
        "endpointOutput": {"observedContentType": "...", "mode": "OUTPUT",
                           "data": "...", "encoding": "..."}},
     "eventMetadata": {"eventId": "...", "inferenceId": "...",  # inferenceId: if sent
                       "inferenceTime": "2026-12-02T18:02:37Z"},
     "eventVersion": "0"}

``data`` is base64 unless the content type is listed in the config's
``CaptureContentTypeHeader`` (then the text itself, ``JSON`` or ``CSV``); our
bodies are msgpack, so base64. Sources: docs/models.md "rolling out a model".

Theory of operation. :func:`decode_line` (sans-IO) turns one line into a
:class:`CaptureRecord`: the decoded :class:`~dsp.results.InvocationResponse`'s
results and, when the input was captured, each report's pump class (the asset
``kind``). :func:`compare_records` pairs the production variant's results with
the shadow variant's **by report identity** (device, epoch, sequence), which
every result carries -- so a pair needs no ``InferenceId`` from the caller
and survives batches that SageMaker captured separately for the two variants --
and feeds the pairs to :class:`models.serving.rollout.Comparison`, the same
figures as the local server's and the stored rows'. :class:`CaptureReader` is the
thin S3 adapter: it lists the hour prefixes of a time range for one variant,
reads the files (skipping records outside the range) and returns the records.

A line that does not decode is counted (``undecodable``), never fatal: a capture
file is the endpoint's, not ours.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from dsp.results import InvocationResponse, Result
from models.serving.handler import JSON, MSGPACK, decode_request
from models.serving.rollout import Comparison

Identity = tuple[str, int, int]
_mp_response = msgspec.msgpack.Decoder(InvocationResponse)
_json_response = msgspec.json.Decoder(InvocationResponse)


class CaptureError(ValueError):
    """A capture line that is not a SageMaker capture record of our contract."""


@dataclass(frozen=True)
class CaptureRecord:
    """One captured invocation of one variant: its results and (input captured) pump classes."""

    event_id: str
    inference_id: str | None
    inference_time: datetime
    model_version: str
    results: list[Result]
    pump_classes: dict[Identity, str] = field(default_factory=dict)


def _payload(part: Any) -> tuple[bytes, str]:
    """(body bytes, media type) of a captureData part."""
    if not isinstance(part, dict) or "data" not in part:
        raise CaptureError("capture part without data")
    data = part["data"]
    if not isinstance(data, str):
        raise CaptureError(f"capture data is not a string: {type(data).__name__}")
    enc = str(part.get("encoding", "BASE64")).upper()
    body = base64.b64decode(data, validate=True) if enc == "BASE64" else data.encode()
    ctype = str(part.get("observedContentType", "")).split(";")[0].strip().lower()
    if ctype not in (MSGPACK, JSON):
        ctype = MSGPACK if enc == "BASE64" else JSON
    return body, ctype


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def decode_line(line: bytes | str) -> CaptureRecord:
    """One JSON line of a capture file -> :class:`CaptureRecord` (:class:`CaptureError`)."""
    try:
        rec = json.loads(line)
        cap = rec["captureData"]
        meta = rec["eventMetadata"]
        body, ctype = _payload(cap["endpointOutput"])
        resp = (_mp_response if ctype == MSGPACK else _json_response).decode(body)
        classes: dict[Identity, str] = {}
        if "endpointInput" in cap:
            in_body, in_type = _payload(cap["endpointInput"])
            for r in decode_request(in_body, in_type):
                classes[(r.device, r.epoch, r.seq)] = r.asset.kind or ""
        return CaptureRecord(
            event_id=str(meta.get("eventId", "")), inference_id=meta.get("inferenceId"),
            inference_time=_time(str(meta["inferenceTime"])),
            model_version=resp.model_version, results=list(resp.results), pump_classes=classes,
        )
    except CaptureError:
        raise
    except Exception as exc:  # one boundary: whatever the line is, it is not a record of ours
        raise CaptureError(f"not a capture record of the endpoint contract: {exc!r}") from None


def compare_records(
    production: Iterable[CaptureRecord], shadow: Iterable[CaptureRecord]
) -> dict[str, Any]:
    """Pair the two variants' results by report identity; the comparison and its coverage."""
    prod: dict[Identity, Result] = {}
    classes: dict[Identity, str] = {}
    versions: dict[str, dict[str, int]] = {"production": {}, "shadow": {}}
    n_prod = n_shadow = 0
    for rec in production:
        classes.update(rec.pump_classes)
        for r in rec.results:
            prod.setdefault(r.identity, r)
            versions["production"][r.model_version] = \
                versions["production"].get(r.model_version, 0) + 1
            n_prod += 1
    cmp_ = Comparison()
    seen: set[Identity] = set()
    unpaired = 0
    for rec in shadow:
        classes.update(rec.pump_classes)
        for c in rec.results:
            n_shadow += 1
            versions["shadow"][c.model_version] = versions["shadow"].get(c.model_version, 0) + 1
            p = prod.get(c.identity)
            if p is None:
                unpaired += 1  # production's record not captured (sampling) or not read
                continue
            if c.identity in seen:
                continue  # a request captured twice (a retry): counted once
            seen.add(c.identity)
            cmp_.add(classes.get(c.identity, ""), p.condition, p.anomaly_score, c.condition,
                     c.anomaly_score)
    return {
        "results": {"production": n_prod, "shadow": n_shadow},
        "versions": versions,
        "paired": cmp_.reports,
        "shadow_unpaired": unpaired,
        "comparison": cmp_.to_dict(),
    }


def hour_prefixes(prefix: str, since: datetime, until: datetime) -> list[str]:
    """``{prefix}/yyyy/mm/dd/hh/`` for every UTC hour that overlaps [since, until)."""
    t = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    end = until.astimezone(UTC)
    out = []
    while t < end:
        out.append(f"{prefix.rstrip('/')}/{t:%Y/%m/%d/%H}/")
        t += timedelta(hours=1)
    return out


def split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, key.strip("/")


class CaptureReader:
    """The S3 adapter: one variant's capture records of a time range (boto3 ``s3`` client)."""

    def __init__(self, s3: Any, destination_uri: str) -> None:
        self.s3 = s3
        self.bucket, self.root = split_s3(destination_uri)
        self.undecodable = 0
        self.files = 0

    def variant_prefix(self, endpoint: str, variant: str) -> str:
        return "/".join(p for p in (self.root, endpoint, variant) if p)

    def keys(self, endpoint: str, variant: str, since: datetime, until: datetime) -> Iterator[str]:
        pager = self.s3.get_paginator("list_objects_v2")
        for hp in hour_prefixes(self.variant_prefix(endpoint, variant), since, until):
            for page in pager.paginate(Bucket=self.bucket, Prefix=hp):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith(".jsonl"):
                        yield obj["Key"]

    def records(self, endpoint: str, variant: str, since: datetime,
                until: datetime) -> list[CaptureRecord]:
        out: list[CaptureRecord] = []
        for key in self.keys(endpoint, variant, since, until):
            self.files += 1
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            for line in body.splitlines():
                if not line.strip():
                    continue
                try:
                    rec = decode_line(line)
                except CaptureError:
                    self.undecodable += 1
                    continue
                if since <= rec.inference_time < until:
                    out.append(rec)
        return out

    def compare(self, endpoint: str, production_variant: str, shadow_variant: str,
                since: datetime, until: datetime) -> dict[str, Any]:
        """Read both variants' capture for [since, until) and compare them (see the module)."""
        prod = self.records(endpoint, production_variant, since, until)
        shadow = self.records(endpoint, shadow_variant, since, until)
        return {
            "source": "sagemaker-data-capture",
            "capture": f"s3://{self.bucket}/{self.root}".rstrip("/"),
            "endpoint": endpoint,
            "variants": {"production": production_variant, "shadow": shadow_variant},
            "since": since.isoformat(), "until": until.isoformat(),
            "records": {"production": len(prod), "shadow": len(shadow)},
            "files": self.files, "undecodable": self.undecodable,
            **compare_records(prod, shadow),
        }


__all__ = ["CaptureError", "CaptureReader", "CaptureRecord", "compare_records", "decode_line",
           "hour_prefixes", "split_s3"]
