// The Models page (models.html): the model server's running rollout and its automatic
// rollbacks, from /api/rollout (re-read every 5 s, and at once on the live stream's
// `rollout` event), and each version's latest monitoring run, its usage (calls, reports,
// errors, dead letters, latency) and its label-based quality, from /api/monitoring.
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  if (params.get("token")) sessionStorage.setItem("pumpwatch-token", params.get("token"));
  const token = sessionStorage.getItem("pumpwatch-token");
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const $ = (id) => document.getElementById(id);
  const cell = (tr, text, cls) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.append(td);
    return td;
  };
  const num = (x) => typeof x === "number" && Number.isFinite(x);
  const pct = (x) => (num(x) ? `${(100 * x).toFixed(1)}%` : "-");
  const signed = (x, digits) => (num(x) ? `${x >= 0 ? "+" : ""}${x.toFixed(digits)}` : "-");
  const ms = (x) => (num(x) ? `${x.toFixed(2)} ms` : "-");
  const fixed = (x, digits) => (num(x) ? x.toFixed(digits) : "-");
  // label -> share of the results: "healthy 62.5%, unknown 37.5%"
  const mix = (labels) => Object.entries(labels || {}).map(([k, v]) => `${k} ${pct(v)}`).join(", ") || "-";
  // label -> share under the candidate minus under production, in percentage points
  const shift = (labels) => Object.entries(labels || {}).filter(([, v]) => v !== 0)
    .map(([k, v]) => `${k} ${signed(100 * v, 1)} pp`).join(", ") || "none";

  const fetchJson = async (path) => {
    const res = await fetch(path, { headers });
    if (!res.ok) throw new Error(`${path}: ${res.status}`);
    return res.json();
  };

  function versionRows(ro) {
    const tbody = $("rollout-versions").querySelector("tbody");
    tbody.replaceChildren();
    for (const [v, s] of Object.entries(ro.versions || {})) {
      const tr = document.createElement("tr");
      tr.dataset.version = v;
      tr.dataset.role = v === ro.candidate ? "candidate" : "production";
      cell(tr, v);
      cell(tr, tr.dataset.role);
      cell(tr, String(s.reports), "reports");
      cell(tr, String(s.calls), "calls");
      cell(tr, String(s.errors), "errors");
      cell(tr, pct(s.error_rate), "error-rate");
      cell(tr, ms(s.latency_p50_ms), "p50");
      cell(tr, ms(s.latency_p95_ms), "p95");
      cell(tr, pct(s.ood_share), "ood");
      cell(tr, fixed(s.mean_anomaly_score, 4), "score");
      cell(tr, mix(s.labels), "labels");
      tbody.append(tr);
    }
  }

  function comparisonRows(ro) {
    const tbody = $("rollout-comparison").querySelector("tbody");
    tbody.replaceChildren();
    const cmp = ro.comparison || {};
    // overall first, then the pump classes
    const scopes = Object.keys(cmp).sort((a, b) => (a === "*" ? -1 : b === "*" ? 1 : a.localeCompare(b)));
    for (const scope of scopes) {
      const c = cmp[scope];
      const tr = document.createElement("tr");
      tr.dataset.scope = scope;
      cell(tr, scope === "*" ? "overall" : scope);
      cell(tr, String(c.reports), "reports");
      cell(tr, pct(c.agreement), "agreement");
      cell(tr, signed(c.mean_anomaly_score_shift, 4), "score-shift");
      cell(tr, c.reports ? shift(c.label_shift) : "-", "label-shift");
      cell(tr, Object.entries(c.changes || {}).map(([k, n]) => `${k}: ${n}`).join(", ") || "-", "changes");
      tbody.append(tr);
    }
    $("rollout-comparison-block").hidden = ro.mode !== "shadow";
  }

  function classRows(ro) {
    const tbody = $("rollout-classes").querySelector("tbody");
    tbody.replaceChildren();
    for (const [cls, per] of Object.entries(ro.by_pump_class || {})) {
      for (const [v, s] of Object.entries(per)) {
        const tr = document.createElement("tr");
        tr.dataset.scope = cls;
        tr.dataset.version = v;
        cell(tr, cls);
        cell(tr, v);
        cell(tr, String(s.reports), "reports");
        cell(tr, pct(s.ood_share), "ood");
        cell(tr, fixed(s.mean_anomaly_score, 4), "score");
        cell(tr, mix(s.labels), "labels");
        tbody.append(tr);
      }
    }
  }

  function eventRows(events) {
    const tbody = $("rollout-events").querySelector("tbody");
    tbody.replaceChildren();
    for (const ev of [...events].reverse()) { // newest first
      const tr = document.createElement("tr");
      tr.dataset.event = ev.event || "";
      tr.dataset.candidate = ev.candidate || "";
      cell(tr, ev.at || "-");
      cell(tr, ev.event || "-");
      cell(tr, ev.candidate || "-");
      cell(tr, ev.production || "-");
      cell(tr, ev.mode || "-");
      cell(tr, ev.reason || "-", "reason");
      tbody.append(tr);
    }
    $("rollout-events-empty").hidden = events.length > 0;
  }

  const modeText = (ro) => (ro.mode === "canary" ? `canary ${ro.percent}% of pumps` : ro.mode);

  function showRollout(body) {
    const state = $("rollout-state");
    const ro = body.rollout;
    state.dataset.state = body.state;
    if (body.state !== "ok") {
      state.textContent = `Model server: ${body.state.replace("_", " ")}: ${body.error}`;
    } else if (!ro) {
      state.textContent = `No candidate on trial on ${body.endpoint}: production serves ${body.production} alone.`;
    } else {
      state.textContent = `${modeText(ro)}: ${ro.candidate} beside ${ro.production} on ${body.endpoint} (read ${new Date(body.checked_ms).toISOString()}).`;
    }
    $("rollout").hidden = !ro;
    if (ro) {
      $("rollout").dataset.mode = ro.mode;
      $("rollout-production").textContent = ro.production;
      $("rollout-candidate").textContent = ro.candidate;
      $("rollout-mode").textContent = modeText(ro);
      $("rollout-started").textContent = `${ro.started || "-"} by ${ro.by || "-"}`;
      const lim = ro.limits || {};
      $("rollout-limits").textContent = Object.entries(lim).filter(([, v]) => v !== null)
        .map(([k, v]) => `${k.replaceAll("_", " ")} ${v}`).join(", ") || "none";
      $("rollout-skipped").textContent = `${ro.shadow_skipped} shadow batches skipped, ${ro.fallbacks} canary reports scored by production`;
      versionRows(ro);
      comparisonRows(ro);
      classRows(ro);
    }
    const last = body.last;
    $("rollout-last").hidden = !last;
    if (last) $("rollout-last").textContent = `Last trial: ${modeText(last)} of ${last.candidate} beside ${last.production}, ended: ${last.ended}.`;
    eventRows(body.events || []);
  }

  async function loadRollout() {
    try {
      showRollout(await fetchJson("/api/rollout"));
    } catch (err) {
      const state = $("rollout-state");
      state.dataset.state = "error";
      state.textContent = String(err);
    }
  }

  const count = (x) => (num(x) ? String(x) : "-");
  const secs = (x) => (num(x) ? `${x.toFixed(0)} s` : "-");

  function usageRows(usage) {
    const tbody = $("usage").querySelector("tbody");
    const pumps = $("usage-pumps").querySelector("tbody");
    tbody.replaceChildren();
    pumps.replaceChildren();
    const versions = usage.versions || {};
    for (const [v, u] of Object.entries(versions)) {
      for (const [t, s] of Object.entries(u.targets || {})) {
        const tr = document.createElement("tr");
        tr.dataset.version = v;
        tr.dataset.target = t;
        // "pre-model": reports dead-lettered before any model saw them (no version, no bundle)
        cell(tr, v === "pre-model" ? "pre-model (rejected before the model)"
          : v || "(before the first answer)");
        cell(tr, t || "-");
        cell(tr, count(s.invocations), "calls");
        cell(tr, count(s.reports), "reports");
        cell(tr, `${s.errors_total} (${s.errors.unavailable || 0} / ${s.errors.rejected || 0})`, "errors");
        cell(tr, pct(s.error_rate), "error-rate");
        cell(tr, count(s.dead_letters), "dead-letters");
        cell(tr, ms(s.latency_ms.p50), "p50");
        cell(tr, ms(s.latency_ms.p95), "p95");
        cell(tr, ms(s.latency_ms.p99), "p99");
        tbody.append(tr);
      }
      for (const [p, s] of Object.entries(u.pumps || {})) {
        const tr = document.createElement("tr");
        tr.dataset.version = v;
        tr.dataset.pump = p;
        cell(tr, v);
        cell(tr, p);
        cell(tr, count(s.reports), "reports");
        cell(tr, count(s.dead_letters), "dead-letters");
        pumps.append(tr);
      }
    }
    $("usage-empty").hidden = Object.keys(versions).length > 0;
  }

  function qualityRows(quality) {
    const tbody = $("quality").querySelector("tbody");
    const conf = $("confusion").querySelector("tbody");
    tbody.replaceChildren();
    conf.replaceChildren();
    for (const [v, q] of Object.entries(quality)) {
      const tr = document.createElement("tr");
      tr.dataset.version = v;
      cell(tr, v);
      cell(tr, count(q.open), "open");
      cell(tr, count(q.acknowledged), "acknowledged");
      cell(tr, count(q.closed), "closed");
      cell(tr, pct(q.precision), "precision");
      cell(tr, pct(q.condition_agreement), "agreement");
      const t = q.time_to_detection_s || {};
      cell(tr, t.n ? `${secs(t.median)} / ${secs(t.max)} (n=${t.n})` : "-", "ttd");
      tbody.append(tr);
      for (const [named, verdicts] of Object.entries(q.confusion || {})) {
        for (const [verdict, n] of Object.entries(verdicts)) {
          const row = document.createElement("tr");
          row.dataset.version = v;
          row.dataset.named = named;
          row.dataset.verdict = verdict;
          if (named === verdict) row.className = "agree";
          cell(row, v);
          cell(row, named);
          cell(row, verdict);
          cell(row, String(n), "n");
          conf.append(row);
        }
      }
    }
    $("quality-empty").hidden = Object.keys(quality).length > 0;
  }

  async function loadMonitoring() {
    try {
      const body = await fetchJson("/api/monitoring");
      const tbody = document.querySelector("#models tbody");
      for (const m of body.models) {
        const tr = document.createElement("tr");
        tr.dataset.status = m.status;
        tr.dataset.version = m.model_version;
        cell(tr, m.model_version);
        cell(tr, m.status, "status");
        cell(tr, m.checked_ns ? new Date(m.checked_ns / 1e6).toISOString() : "-");
        cell(tr, m.usage ? String(m.usage.reports) : "-");
        cell(tr, (m.unexplained || []).join(", ") || "none");
        cell(tr, (m.features || []).slice(0, 3).map(f => `${f.feature} ${f.js.toFixed(2)}`).join(", "));
        const shares = (m.prediction && m.prediction.live_shares) || {};
        cell(tr, Object.entries(shares).filter(([k]) => k.startsWith("class:"))
          .map(([k, v]) => `${k.slice(6)} ${(100 * v).toFixed(0)}%`).join(", "));
        cell(tr, m.report || "-");
        tbody.append(tr);
      }
      $("models-empty").hidden = body.models.length > 0;
      usageRows(body.usage || {});
      qualityRows(body.quality || {});
    } catch (err) {
      const p = $("models-error");
      p.textContent = String(err);
      p.hidden = false;
    }
  }

  loadRollout();
  setInterval(loadRollout, 5000);
  // an automatic rollback shows at once: the live stream's `rollout` event
  const stream = new EventSource(`/api/stream${token ? `?access_token=${encodeURIComponent(token)}` : ""}`);
  stream.addEventListener("rollout", () => loadRollout());
  loadMonitoring();
})();
