// pumpwatch dashboard: the alarm lifecycle panel of the pump page (cloud/dashboard/lifecycle.py).
// Lists the pump's asset alarms (GET /api/alarms?pump=..&kind=asset), each with severity, since,
// evidence, the manifest's recommended action and its history; acknowledges, assigns and closes
// them with a verdict (POST /api/alarms/{id}/ack|assign|close). app.js hands it the asset alarms
// the live stream carries ("pumpwatch-asset" events), so every open page sees each change.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const token = sessionStorage.getItem("pumpwatch-token");
  const details = new Map();  // asset alarm id -> detail JSON (GET /api/alarms/{id})
  let pump = null;

  function headers(json) {
    const h = token ? { Authorization: `Bearer ${token}` } : {};
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  async function call(method, path, body) {
    const res = await fetch(path, { method, headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(`${res.status}: ${data.error || res.statusText}`);
    return data;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function when(ms) { return ms == null ? "" : new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC"; }

  function operator() {
    const input = $("lifecycle-by");
    return (input && input.value.trim()) || localStorage.getItem("pumpwatch-operator") || "";
  }

  function showError(err) {
    const e = $("lifecycle-error");
    e.hidden = !err;
    e.textContent = err ? String(err.message || err) : "";
  }

  async function change(id, action, body) {
    const by = operator();
    if (!by) { showError(new Error("enter your name (by) first")); return; }
    localStorage.setItem("pumpwatch-operator", by);
    try {
      const d = await call("POST", `/api/alarms/${encodeURIComponent(id)}/${action}`, { by, ...body });
      details.set(id, d);
      showError(null);
      render();
    } catch (err) { showError(err); }
  }

  function field(label, input) {
    const l = el("label", "lc-field", label + " ");
    l.append(input);
    return l;
  }

  function item(d) {
    const lc = d.lifecycle || {};
    const li = el("div", "lc-alarm");
    li.dataset.alarmId = d.id;
    li.dataset.status = lc.status || "";
    li.dataset.severity = d.severity;
    const head = el("div", "lc-head");
    head.append(el("b", `lc-sev lc-sev-${d.severity}`, d.severity.toUpperCase()), " ",
      el("span", "lc-status", lc.status), " since ", el("span", "", when(d.since_ms)),
      lc.assignee ? el("span", "lc-assignee", ` · assigned to ${lc.assignee}`) : "");
    li.append(head);
    if (d.condition) li.append(el("div", "muted", `named condition: ${d.condition}`));
    if (d.recommended_action) li.append(el("div", "lc-action", `Recommended: ${d.recommended_action}`));
    const ev = el("ul", "lc-episodes");
    for (const e of d.episodes) ev.append(el("li", "", `${e.channel} ${e.kind} (${e.state}): ${e.reason}`));
    li.append(ev);
    if (lc.status === "closed") {
      li.append(el("div", "lc-verdict", `closed by ${lc.closed_by}: ${lc.verdict} — ${lc.action_taken}${lc.note ? " (" + lc.note + ")" : ""}`));
    } else {
      const row = el("div", "lc-controls");
      if (lc.status === "open") {
        const ack = el("button", "lc-ack", "Acknowledge");
        ack.onclick = () => change(d.id, "ack", {});
        row.append(ack);
      }
      const who = el("input", "lc-assignee-input"); who.placeholder = "assignee";
      const assign = el("button", "lc-assign", "Assign");
      assign.onclick = () => change(d.id, "assign", { assignee: who.value.trim() });
      row.append(who, assign);
      const verdict = el("select", "lc-verdict-input");
      verdict.append(el("option", "", ""));
      for (const v of d.verdicts) { const o = el("option", "", v); o.value = v; verdict.append(o); }
      const taken = el("input", "lc-taken-input"); taken.placeholder = "action taken";
      const note = el("input", "lc-note-input"); note.placeholder = "note";
      const close = el("button", "lc-close", "Close");
      close.onclick = () => change(d.id, "close", { verdict: verdict.value || null,
        action_taken: taken.value.trim() || null, note: note.value.trim() || null });
      const form = el("div", "lc-close-form");
      form.append(field("verdict", verdict), field("action taken", taken), field("note", note), close);
      li.append(row, form);
    }
    const hist = el("ol", "lc-events");
    for (const e of d.events) hist.append(el("li", "", `${when(e.at_ms)} ${e.by}: ${e.action}`));
    li.append(hist);
    return li;
  }

  function render() {
    const box = $("lifecycle");
    const list = [...details.values()].filter((d) => d.pump === pump)
      .sort((a, b) => b.since_ms - a.since_ms);
    const by = el("input", ""); by.id = "lifecycle-by"; by.placeholder = "your name";
    by.value = localStorage.getItem("pumpwatch-operator") || "";
    const kids = list.length ? [field("by", by), ...list.map(item)] : [];
    box.replaceChildren(...kids);
    $("lifecycle-empty").hidden = list.length > 0;
    document.body.dataset.lifecycleLoaded = pump || "";
  }

  async function load() {
    const m = location.hash.match(/^#\/pump\/([^/?]+)/);
    pump = m ? decodeURIComponent(m[1]) : null;
    if (!pump) return;
    try {
      const res = await call("GET", `/api/alarms?pump=${encodeURIComponent(pump)}&kind=asset&limit=20`);
      const got = await Promise.all(res.alarms.map((a) => call("GET", `/api/alarms/${encodeURIComponent(a.id)}`)));
      for (const d of got) details.set(d.id, d);
      showError(null);
    } catch (err) { showError(err); }
    render();
  }

  window.addEventListener("pumpwatch-asset", async (e) => {
    const a = e.detail;
    if (a.pump !== pump) return;
    const cur = details.get(a.id);
    if (cur && cur.updated_ms >= a.updated_ms) return;
    try { details.set(a.id, await call("GET", `/api/alarms/${encodeURIComponent(a.id)}`)); render(); }
    catch (err) { showError(err); }
  });
  window.addEventListener("hashchange", load);
  load();
})();
