"""The alarm lifecycle on the dashboard: asset alarms, and operators' changes to them.

``GET /api/alarms/{id}`` -> one asset alarm with its channel episodes, severity,
since, evidence, the recommended action (from the bundle manifest that raised
it, by digest) and its change history; ``POST /api/alarms/{id}/ack``,
``/assign`` and ``/close`` apply an operator's change (JSON body: ``by`` names
the operator; ``assignee``; ``verdict``, ``action_taken``, ``note``, ``onset``)
through :meth:`cloud.store.Store.change_alarm`, which stores it with who and
when and stamps the alarm like every alarm write, so the live stream (SSE)
carries the change to every open page; then, when the dashboard has a broker
(:mod:`.publish`), the change is published QoS 1 on the pump's alarm topic
(the asset alarm after it and the stored event) through the outbox
(:mod:`.outbox`: pending in the store until the broker's PUBACK, so a change made
while the broker is down is published when it is back). The answer's
``published`` says whether it was handed to a connected broker right away (false:
it waits in the outbox; null: no broker configured); publishing never undoes the
stored change.

Writes: the API's store handle is read only for SQLite (it must never block the
consumer), so this module opens its own writable handle on first write (SQLite
waits out the consumer's transaction with its busy timeout; PostgreSQL is the
shared pool). When a token is set, a write must carry it in the
``Authorization`` header (never the ``access_token`` query parameter, which
ends up in logs and browser history).
"""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from cloud.store import (
    ACTIONS,
    NO_FAULT_FOUND,
    AlarmChange,
    AlarmEvent,
    AlarmRow,
    LifecycleError,
    ManifestRow,
    Store,
)
from dsp.results import Manifest

from ._store import StoreHandle
from .publish import AlarmPublisher
from .views import alarm_json, iso, ms

Json = dict[str, Any]
SEVERITY_RANK = {"none": 0, "info": 1, "warning": 2, "critical": 3}
_manifest = msgspec.json.Decoder(Manifest).decode


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    by: str
    assignee: str | None = None
    verdict: str | None = None
    action_taken: str | None = None
    note: str | None = None
    onset: str | None = None  # ISO 8601


def episode_severity(a: AlarmRow) -> str:
    """An episode's severity: an ISO zone D episode is critical, any other warning."""
    if a.kind == "iso_zone" and any("zone D" in e.note for e in a.evidence):
        return "critical"
    return "warning"


def manifest_of(manifests: list[ManifestRow], digest: str | None) -> Manifest | None:
    for m in manifests:
        if digest and m.digest == digest:
            try:
                return _manifest(m.manifest)
            except msgspec.DecodeError:
                return None
    return None


def asset_json(asset: AlarmRow, episodes: list[AlarmRow], events: list[AlarmEvent],
               manifest: Manifest | None) -> Json:
    """An asset alarm for the API: severity (the worst of its episodes' and of its named
    condition's manifest severity), since, evidence (the episodes'), recommended action."""
    lc = asset.lifecycle
    condition = lc.condition if lc else ""
    info = next((c for c in manifest.classes if c.name == condition), None) if manifest else None
    severities = [episode_severity(e) for e in episodes]
    if info is not None:
        severities.append(info.severity)
    worst = max(severities, key=lambda s: SEVERITY_RANK.get(s, 1), default="warning")
    classes = [c.name for c in manifest.classes] if manifest else []
    return {
        **alarm_json(asset),
        "severity": worst,
        "since": iso(asset.raised_ns), "since_ms": ms(asset.raised_ns),
        "condition": condition,
        "recommended_action": info.action if info is not None else "",
        "verdicts": [*classes, NO_FAULT_FOUND],
        "episodes": [{**alarm_json(e), "severity": episode_severity(e)} for e in episodes],
        "evidence": [{"channel": e.channel, "name": x.name, "note": x.note,
                      "value": None if x.value != x.value else x.value}
                     for e in episodes for x in e.evidence],
        "events": [{"at": iso(v.at_ns), "at_ms": ms(v.at_ns), "by": v.actor,
                    "action": v.action, "detail": msgspec.json.decode(v.detail)}
                   for v in events],
    }


async def asset_detail(store: Store, alarm_id: str) -> Json | None:
    rows = await store.alarms(alarm_id=alarm_id, kind="asset")
    if not rows:
        return None
    asset = rows[0]
    episodes = await store.alarms(parent=alarm_id, order="raised_desc")
    digest = asset.lifecycle.manifest_digest if asset.lifecycle else None
    return asset_json(asset, episodes, await store.alarm_events(alarm_id),
                      manifest_of(await store.manifests(), digest))


def _error(status: int, message: str, parameter: str | None = None) -> web.Response:
    body: Json = {"error": message}
    if parameter is not None:
        body["parameter"] = parameter
    return web.json_response(body, status=status)


def _onset_ns(text: str | None) -> int | None:
    if text is None:
        return None
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError("onset needs a time zone (e.g. 2026-01-01T00:00:00Z)")
    return int(t.timestamp() * 1e9)


def install(app: web.Application, read: Callable[[], StoreHandle],
            token: Callable[[], str | None], *,
            publisher: Callable[[], AlarmPublisher | None] = lambda: None) -> None:
    """Add the lifecycle routes to a dashboard app (``read``: the API's store handle;
    ``token``: the dashboard's bearer token, if any; ``publisher``: where stored changes
    are published, if anywhere)."""
    handles: dict[str, StoreHandle] = {}

    async def writable() -> Store:
        h = read()
        if "://" in h.url and not h.url.startswith("sqlite:"):
            return await h.get()  # PostgreSQL: the API's pool writes too
        if "w" not in handles:
            handles["w"] = StoreHandle(h.url, writable=True)
        return await handles["w"].get()

    async def cleanup(app: web.Application) -> AsyncIterator[None]:
        yield
        if "w" in handles:
            await handles["w"].close()

    async def get_alarm(request: web.Request) -> web.Response:
        for name in request.query:
            if name != "access_token":
                return _error(400, f"unknown query parameter {name!r}", name)
        body = await asset_detail(await read().get(), request.match_info["id"])
        if body is None:
            return _error(404, f"no asset alarm {request.match_info['id']!r}")
        return web.json_response(body)

    async def post_change(request: web.Request, action: str) -> web.Response:
        want = token()
        if want:
            header = request.headers.get("Authorization", "")
            given = header[7:] if header.startswith("Bearer ") else ""
            if not hmac.compare_digest(given.encode(), want.encode()):
                return _error(401, "a change needs the bearer token in the Authorization "
                                   "header")
        try:
            body = msgspec.json.decode(await request.read(), type=_Body)
            onset = _onset_ns(body.onset)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            return _error(400, f"bad request body: {exc}", "body")
        if not body.by.strip():
            return _error(400, "by (who makes the change) must not be empty", "by")
        change = AlarmChange(
            action=action, actor=body.by.strip(), at_ns=time.time_ns(),  # type: ignore[arg-type]
            assignee=body.assignee, verdict=body.verdict, action_taken=body.action_taken,
            note=body.note, onset_ns=onset)
        alarm_id = request.match_info["id"]
        try:
            store = await writable()
            row = await store.change_alarm(alarm_id, change)
        except KeyError:
            return _error(404, f"no asset alarm {alarm_id!r}")
        except LifecycleError as exc:
            return _error(409, str(exc))
        published: bool | None = None
        pub = publisher()
        if pub is not None:  # after the commit: the store is the record (and the outbox)
            try:
                published = await pub.publish(AlarmEvent(
                    alarm_id=alarm_id, at_ns=row.updated_ns, actor=change.actor,
                    action=change.action))
            except Exception:  # the outbox keeps it; its loop tries again
                published = False
        detail = await asset_detail(await read().get(), alarm_id)
        if detail is not None:
            detail["published"] = published
        return web.json_response(detail)

    app.cleanup_ctx.append(cleanup)
    app.router.add_get("/api/alarms/{id}", get_alarm)
    for action in ACTIONS:
        app.router.add_post(f"/api/alarms/{{id}}/{action}",
                            functools.partial(post_change, action=action))


_ALARM_REF = {"$ref": "#/components/schemas/AssetAlarm"}
_ERR_REF = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_ID = {"name": "id", "in": "path", "description": "asset alarm id", "required": True,
       "schema": {"type": "string"}}
_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["by"], "additionalProperties": False,
    "properties": {
        "by": {"type": "string", "description": "who makes the change"},
        "assignee": {"type": "string"},
        "verdict": {"type": "string", "description": "the confirmed failure mode: a class "
                    "of the bundle manifest, or no_fault_found"},
        "action_taken": {"type": "string"}, "note": {"type": "string"},
        "onset": {"type": "string", "description": "ISO 8601: when the fault began"},
    }}}}}

#: The OpenAPI paths of this module (merged into the dashboard's document).
OPENAPI_PATHS: dict[str, Any] = {
    "/api/alarms/{id}": {"get": {
        "summary": "One asset alarm: its episodes, severity, evidence, recommended action "
                   "and change history",
        "operationId": "getAlarm", "parameters": [_ID],
        "responses": {"200": {"description": "asset alarm",
                              "content": {"application/json": {"schema": _ALARM_REF}}},
                      "404": {"description": "unknown", "content": _ERR_REF}},
    }},
    **{f"/api/alarms/{{id}}/{a}": {"post": {
        "summary": {"ack": "Acknowledge an asset alarm", "assign": "Assign an asset alarm",
                    "close": "Close an asset alarm with a verdict"}[a],
        "operationId": f"{a}Alarm", "parameters": [_ID], "requestBody": _BODY,
        "security": [{"bearer": []}],
        "responses": {"200": {"description": "the alarm after the change",
                              "content": {"application/json": {"schema": _ALARM_REF}}},
                      **{s: {"description": d, "content": _ERR_REF} for s, d in (
                          ("400", "bad body"), ("401", "token"), ("404", "unknown alarm"),
                          ("409", "refused by the lifecycle"))}},
    }} for a in ACTIONS},
}
OPENAPI_SCHEMAS: dict[str, Any] = {
    "AssetAlarm": {"type": "object", "additionalProperties": True, "required": [
        "id", "pump", "kind", "state", "lifecycle", "severity", "since", "episodes",
        "evidence", "recommended_action", "events", "verdicts"], "properties": {
        "published": {"type": ["boolean", "null"], "description": "POST answers only: "
                      "whether the stored change was handed to a connected broker right "
                      "away (QoS 1, {root}/sites/{site}/pumps/{pump}/alarms); false: it "
                      "waits in the outbox and is published on reconnect; null: the "
                      "dashboard has no --mqtt-config"}}},
}

__all__ = ["OPENAPI_PATHS", "OPENAPI_SCHEMAS", "asset_detail", "asset_json", "install"]
