// pumpwatch dashboard page: fleet tiles and a per-pump view, fed by the JSON API and kept
// live by the /api/stream Server-Sent Events (EventSource resumes with Last-Event-ID).
"use strict";

(() => {
  const ZONE_RANK = { "?": 0, A: 1, B: 2, C: 3, D: 4 };
  const ZONE_FILL = { A: "rgba(47,158,91,0.20)", B: "rgba(156,200,58,0.18)", C: "rgba(240,160,32,0.20)", D: "rgba(224,65,58,0.22)" };
  const MARK = { shaft: "#4ea1ff", vane: "#c58af9", bearing: "#f0a020" };
  // one colour per defect line, shared by its harmonics and sidebands
  const DEFECT = { BPFO: "#f0a020", BPFI: "#ff6b5e", BSF: "#c58af9", FTF: "#5ed1d1" };
  const RANGES = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3 };
  const WATERFALL_MAX = 120;  // the API's bound on spectra per request
  const $ = (id) => document.getElementById(id);

  const params = new URLSearchParams(location.search);
  if (params.get("token")) sessionStorage.setItem("pumpwatch-token", params.get("token"));
  const token = sessionStorage.getItem("pumpwatch-token");

  const state = {
    pumps: new Map(),      // pump -> { pump, site, channels: Map(channel -> result), updatedMs }
    alarms: new Map(),     // alarm id -> alarm
    seen: new Set(),       // result identities already applied (the stream is at-least-once)
    view: { name: "fleet" },
    history: null,         // history JSON of the pump view's channel
    spectrum: null,
    spectra: null,         // the waterfall's /spectra JSON
    waterfallAt: 0,        // when it was last fetched (Date.now())
    waterfallTicket: 0,
    dirty: new Set(),
    frame: 0,
    spectrumTimer: 0,
    classes: new Map(),    // class name -> { display_name, description, severity, action } (manifests)
    fields: {},            // extra result field name -> description (manifests)
    classesAsked: 0,
    classesTimer: 0,
    historyTimer: 0,
  };

  // ---- API -------------------------------------------------------------------------------
  async function api(path) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const res = await fetch(path, { headers });
    if (!res.ok) {
      let msg = `${res.status}`;
      try { msg += ": " + (await res.json()).error; } catch (e) { /* not JSON */ }
      const err = new Error(`${path}: ${msg}`);
      err.status = res.status;
      throw err;
    }
    return res.json();
  }

  function showError(err) {
    const el = $("error");
    if (!err) { el.hidden = true; return; }
    el.textContent = String(err.message || err);
    el.hidden = false;
  }

  // ---- helpers ---------------------------------------------------------------------------
  const resultKey = (r) => `${r.device}/${r.epoch}/${r.seq}`;
  const num = (v, d = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
  const pct = (v) => (v === null || v === undefined ? "–" : `${Math.round(v * 100)}%`);
  function timeText(ms, short) {
    const d = new Date(ms);
    const p = (x) => String(x).padStart(2, "0");
    const hms = `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}`;
    const today = new Date().toISOString().slice(0, 10);
    const day = d.toISOString().slice(0, 10);
    if (short) return day === today ? hms : `${day.slice(5)} ${hms}`;
    return day === today ? `${hms} UTC` : `${day} ${hms} UTC`;
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function severity(r) {
    const rel = r.anomaly_threshold > 0 ? r.anomaly_score / r.anomaly_threshold : r.anomaly_score || 0;
    return [ZONE_RANK[r.iso_zone] || 0, r.anomalous ? 1 : 0, isFinite(rel) ? rel : 0];
  }
  function worse(a, b) {
    const sa = severity(a), sb = severity(b);
    for (let i = 0; i < 3; i++) if (sa[i] !== sb[i]) return sa[i] > sb[i] ? a : b;
    return a;
  }
  function summary(p) {
    let w = null, newest = 0;
    for (const r of p.channels.values()) { w = w ? worse(w, r) : r; newest = Math.max(newest, r.t_ms); }
    return { worst: w, newest };
  }
  function activeAlarms(pump) {
    let n = 0;
    for (const a of state.alarms.values()) if (a.pump === pump && a.state === "raised") n++;
    return n;
  }
  // A class by its manifest's display name; a class no stored manifest declares by its raw name.
  function className(name) {
    const c = state.classes.get(name);
    return c ? c.display_name : name.replace(/_/g, " ");
  }
  async function loadClasses() {
    state.classesAsked = Date.now();
    const body = await api("/api/classes");
    state.classes = new Map(body.classes.map((c) => [c.name, c]));
    state.fields = body.fields;
  }
  // A class no loaded manifest declares: its manifest is stored with the result, so ask
  // again (at most every 2 s) and redraw.
  function noteClass(name) {
    if (state.classes.has(name) || state.classesTimer) return;
    const wait = Math.max(0, 2000 - (Date.now() - state.classesAsked));
    state.classesTimer = setTimeout(() => {
      state.classesTimer = 0;
      loadClasses().then(() => { for (const p of state.pumps.keys()) state.dirty.add(p); schedule(); },
        showError);
    }, wait);
  }
  function fieldText(v) {
    if (typeof v === "number") return num(v, 3);
    if (typeof v === "string") return v;
    return JSON.stringify(v);
  }
  function zoneClass(z) { return `zone zone-${z === "?" || !z ? "Q" : z}`; }

  // ---- state updates ---------------------------------------------------------------------
  function applyResult(r, live) {
    const key = resultKey(r);
    if (state.seen.has(key)) return false;
    if (state.seen.size > 100000) state.seen.clear();
    state.seen.add(key);
    noteClass(r.condition);
    let p = state.pumps.get(r.pump);
    if (!p) { p = { pump: r.pump, site: r.site, channels: new Map(), updatedMs: 0 }; state.pumps.set(r.pump, p); }
    const cur = p.channels.get(r.channel);
    if (!cur || r.t_ms >= cur.t_ms) p.channels.set(r.channel, r);
    if (live) p.updatedMs = Date.now();
    state.dirty.add(r.pump);
    return true;
  }

  function applyAlarm(a) {
    // A pump's asset alarm (its lifecycle) is the lifecycle panel's (alarms.js), not a channel episode.
    if (a.kind === "asset") { window.dispatchEvent(new CustomEvent("pumpwatch-asset", { detail: a })); return; }
    const cur = state.alarms.get(a.id);
    if (cur && cur.updated_ms >= a.updated_ms) return;
    state.alarms.set(a.id, a);
    state.dirty.add(a.pump);
  }

  function schedule() {
    if (state.frame) return;
    state.frame = requestAnimationFrame(() => {
      state.frame = 0;
      render();
    });
  }

  // ---- fleet view ------------------------------------------------------------------------
  function tileFor(pump) {
    let t = document.querySelector(`.tile[data-pump="${CSS.escape(pump)}"]`);
    if (t) return t;
    t = el("a", "tile");
    t.dataset.pump = pump;
    t.href = `#/pump/${encodeURIComponent(pump)}`;
    const name = el("div", "name");
    name.append(el("span", "pump-name", pump), el("span", "site"));
    const meter = el("div", "meter");
    meter.append(el("span"));
    t.append(name, el("div", "cond"), el("div", "row zone-row"), el("div", "row score-row"), meter,
      el("div", "row time-row"));
    // keep tiles sorted by pump id
    const tiles = $("tiles");
    const after = [...tiles.children].find((c) => c.dataset.pump > pump);
    tiles.insertBefore(t, after || null);
    return t;
  }

  function renderTile(p) {
    const { worst: r, newest } = summary(p);
    if (!r) return;
    const t = tileFor(p.pump);
    const n = activeAlarms(p.pump);
    t.dataset.zone = r.iso_zone;
    t.dataset.alarm = n ? "raised" : "none";
    t.dataset.condition = r.condition;
    t.querySelector(".site").textContent = p.site + (n ? "" : "");
    const cond = t.querySelector(".cond");
    cond.textContent = `${className(r.condition)} ${pct(r.probabilities[r.condition])}`;
    if (n) { const f = el("span", "alarm-flag", `  ▲ ${n} alarm${n > 1 ? "s" : ""}`); cond.append(f); }
    const zr = t.querySelector(".zone-row");
    zr.replaceChildren(el("span", "", "ISO zone"), el("b"));
    zr.lastChild.append(el("span", zoneClass(r.iso_zone), r.iso_zone), ` ${num(r.velocity_rms)} mm/s`);
    const sr = t.querySelector(".score-row");
    sr.replaceChildren(el("span", "", `anomaly (${r.channel})`), el("b", "", `${num(r.anomaly_score)} / ${num(r.anomaly_threshold)}`));
    const rel = r.anomaly_threshold > 0 ? r.anomaly_score / r.anomaly_threshold : 0;
    const meter = t.querySelector(".meter");
    meter.classList.toggle("over", rel >= 1);
    meter.firstChild.style.width = `${Math.max(2, Math.min(100, rel * 50))}%`;
    const tr = t.querySelector(".time-row");
    tr.replaceChildren(el("span", "", "last report (UTC)"), el("b", "", timeText(newest, true)));
    if (p.updatedMs && t.dataset.updatedMs !== String(p.updatedMs)) {  // flash on news only
      t.dataset.updatedMs = String(p.updatedMs);
      t.classList.add("flash");
      setTimeout(() => t.classList.remove("flash"), 600);
    }
  }

  function alarmItem(a, withPump) {
    const li = el("li", "alarm");
    li.dataset.state = a.state;
    li.dataset.alarmId = a.id;
    li.dataset.pump = a.pump;
    const head = el("div", "head");
    head.append(el("span", "state", a.state));
    if (withPump) {
      const link = el("a", "", a.pump);
      link.href = `#/pump/${encodeURIComponent(a.pump)}`;
      head.append(link);
    }
    head.append(el("span", "kind", a.kind + (a.channel ? ` · ${a.channel}` : "")),
      el("span", "muted", `raised ${timeText(a.raised_ms)}` + (a.cleared_ms ? ` · cleared ${timeText(a.cleared_ms)}` : "")));
    const reason = el("div", "reason", a.reason);
    const table = el("table", "alarm-evidence");
    for (const e of a.evidence) {
      const tr = el("tr");
      tr.append(el("td", "", e.name), el("td", "v", num(e.value, 3)), el("td", "muted", e.note));
      table.append(tr);
    }
    li.append(head, reason, table);
    return li;
  }

  function sortedAlarms(filter) {
    return [...state.alarms.values()].filter(filter).sort((a, b) =>
      (a.state === "raised") !== (b.state === "raised") ? (a.state === "raised" ? -1 : 1) : b.raised_ms - a.raised_ms);
  }

  function renderAlarmList(list, empty, filter, withPump) {
    const items = sortedAlarms(filter).slice(0, 100).map((a) => alarmItem(a, withPump));
    list.replaceChildren(...items);
    empty.hidden = items.length > 0;
  }

  function renderFleet() {
    for (const pump of state.dirty) {
      const p = state.pumps.get(pump);
      if (p) renderTile(p);
    }
    $("fleet-empty").hidden = state.pumps.size > 0;
    renderAlarmList($("fleet-alarms"), $("fleet-alarms-empty"), () => true, true);
    renderCounts();
  }

  // The header's fleet counts, in every view: the whole fleet as /api/pumps and
  // /api/alarms gave it on load, kept current by the stream.
  function renderCounts() {
    let raised = 0, zoneD = 0;
    for (const p of state.pumps.values()) {
      if (activeAlarms(p.pump)) raised++;
      const { worst } = summary(p);
      if (worst && worst.iso_zone === "D") zoneD++;
    }
    const c = $("fleet-counts");
    c.replaceChildren(el("b", "", String(state.pumps.size)), " pumps · ", el("b", "", String(raised)),
      " in alarm · ", el("b", "", String(zoneD)), " in zone D");
    c.dataset.pumps = String(state.pumps.size);
    c.dataset.alarm = String(raised);
    c.dataset.zoneD = String(zoneD);
  }

  // ---- pump view ---------------------------------------------------------------------------
  function selectedChannel(p) {
    const sel = $("channel-select");
    if (state.view.channel && p.channels.has(state.view.channel)) return state.view.channel;
    const { worst } = summary(p);
    return worst ? worst.channel : sel.value;
  }

  function renderPumpHead() {
    const p = state.pumps.get(state.view.pump);
    $("pump-title").textContent = state.view.pump;
    if (!p) return;
    const ch = selectedChannel(p);
    const r = p.channels.get(ch);
    const sel = $("channel-select");
    const chans = [...p.channels.keys()].sort();
    if ([...sel.options].map((o) => o.value).join() !== chans.join()) {
      sel.replaceChildren(...chans.map((c) => { const o = el("option", "", c); o.value = c; return o; }));
    }
    sel.value = ch;
    if (!r) return;
    const z = $("pump-zone");
    z.className = `badge ${zoneClass(r.iso_zone)}`;
    z.textContent = `zone ${r.iso_zone} · ${num(r.velocity_rms)} mm/s`;
    const pc = $("pump-condition");
    pc.textContent = `${className(r.condition)} ${pct(r.probabilities[r.condition])}`;
    pc.dataset.condition = r.condition;
    const info = state.classes.get(r.condition);
    pc.title = info ? info.description : "";
    const act = $("pump-action");
    act.textContent = info && info.action ? `${info.severity}: ${info.action}` : "";
    act.hidden = !act.textContent;
    $("pump-alarm").hidden = activeAlarms(state.view.pump) === 0;
    $("pump-updated").textContent = `last report ${timeText(r.t_ms)}`;
    // probabilities
    const bars = $("probabilities");
    const probs = Object.entries(r.probabilities).sort((a, b) => (b[1] || 0) - (a[1] || 0));
    const cells = [];
    probs.forEach(([name, v], i) => {
      const label = el("span", i === 0 ? "first" : "", className(name));
      const bar = el("div", "bar");
      const fill = el("span");
      fill.style.width = `${Math.max(0, Math.min(100, (v || 0) * 100))}%`;
      bar.append(fill);
      const wrap = el("div", i === 0 ? "first" : "");
      wrap.append(bar);
      cells.push(label, wrap, el("span", "pct", pct(v)));
    });
    bars.replaceChildren(...cells);
    bars.dataset.condition = r.condition;
    $("prob-time").textContent = `(${ch}, ${timeText(r.t_ms)})`;
    const ev = $("evidence");
    ev.replaceChildren(...r.evidence.map((e) => {
      const tr = el("tr");
      tr.append(el("td", "", e.name), el("td", "v", num(e.value, 3)), el("td", "muted", e.note));
      return tr;
    }));
    if (!r.evidence.length) { const tr = el("tr"); tr.append(el("td", "muted", "none")); ev.append(tr); }
    // the model's own result fields (declared in its manifest), whatever they are
    const names = r.extra_fields || [];
    $("extra-title").hidden = names.length === 0;
    $("extra-fields").replaceChildren(...names.map((name) => {
      const tr = el("tr");
      tr.dataset.field = name;
      const label = el("td", "", name);
      label.title = state.fields[name] || "";
      tr.append(label, el("td", "v", fieldText(r[name])), el("td", "muted", state.fields[name] || ""));
      return tr;
    }));
  }

  function drawTrends() {
    const h = state.history;
    const s = h && h.series.find((x) => x.channel === state.view.channelShown);
    const xs = s ? s.t_ms : [];
    const x = { type: "time" };
    const thr = s ? s.anomaly_threshold.filter((v) => v !== null) : [];
    Charts.draw($("chart-score"), {
      x, y: { type: "log" },
      series: s ? [{ x: xs, y: s.anomaly_score, hi: s.anomaly_score_max, color: "#4ea1ff", dots: xs.length < 80 }] : [],
      hlines: thr.length ? [{ y: thr[thr.length - 1], color: "#ff6b5e", label: "threshold" }] : [],
      empty: "no results in range",
    });
    const lim = (h && h.zone_limits) || null;
    let vmax = 0;
    if (s) for (const v of s.velocity_rms_max) if (v !== null) vmax = Math.max(vmax, v);
    const top = lim ? Math.max(vmax * 1.1, lim[2] * 1.25) : undefined;
    const bands = lim ? [
      { y0: 0, y1: lim[0], color: ZONE_FILL.A, label: "A" },
      { y0: lim[0], y1: lim[1], color: ZONE_FILL.B, label: "B" },
      { y0: lim[1], y1: lim[2], color: ZONE_FILL.C, label: "C" },
      { y0: lim[2], y1: 1e9, color: ZONE_FILL.D, label: "D" },
    ] : [];
    Charts.draw($("chart-velocity"), {
      x, y: lim ? { min: 0, max: top } : {}, bands,
      series: s ? [{ x: xs, y: s.velocity_rms, hi: s.velocity_rms_max, color: "#e6edf3", fill: "rgba(230,237,243,0.15)", dots: xs.length < 80 }] : [],
      empty: "no results in range",
    });
  }

  function drawSpectra() {
    const sp = state.spectrum;
    const freqs = (d) => d.db.map((_, k) => d.f0 + k * d.df);
    const marks = (kinds) => (sp ? sp.markers.filter((m) => kinds.includes(m.kind)).map((m) => ({ x: m.hz, label: m.name, color: MARK[m.kind] })) : []);
    $("spectrum-meta").textContent = sp ? `(${sp.channel}, ${timeText(sp.t_ms)}, ${num(sp.rpm, 0)} rpm ${sp.speed_source})` : "";
    $("envelope-meta").textContent = sp && sp.envelope_band ? `(demodulated ${num(sp.envelope_band[0], 0)}–${num(sp.envelope_band[1], 0)} Hz)` : "";
    const s = sp && sp.spectrum;
    Charts.draw($("chart-spectrum"), {
      x: { type: "log", min: s ? Math.max(s.df, 1) : 1, max: s ? s.f0 + s.df * (s.n - 1) : 10, label: "Hz" }, y: {},
      series: s ? [{ x: freqs(s), y: s.db, color: "#7fd1b9", width: 1.2 }] : [],
      markers: marks(["shaft", "vane"]), empty: "no archived report",
    });
    const e = sp && sp.envelope;
    Charts.draw($("chart-envelope"), {
      x: { type: "linear", min: e ? e.f0 : 0, max: e ? e.f0 + e.df * (e.n - 1) : 1, label: "Hz" }, y: {},
      series: e ? [{ x: freqs(e), y: e.db, color: "#7fd1b9", width: 1.2 }] : [],
      markers: defectMarks(sp).concat(marks(["shaft"]).filter((m) => m.label === "1x")),
      empty: sp ? "no envelope spectrum in this report" : "no archived report",
    });
  }

  // Envelope-spectrum marks: each defect line labelled, its harmonics 2x..Nx dashed and
  // labelled with their order, sidebands as unlabelled ticks from the top.
  function defectMarks(sp) {
    if (!sp) return [];
    const color = (name) => DEFECT[name.split(" ")[0]] || MARK.bearing;
    const out = [];
    for (const m of sp.markers) {
      if (m.kind === "bearing") {
        out.push({ x: m.hz, name: m.name, label: m.name, color: color(m.name), dash: [5, 3], width: 1.3 });
      } else if (m.kind === "harmonic") {
        out.push({ x: m.hz, name: m.name, label: `${m.order}×`, color: color(m.of), dash: [2, 3] });
      } else if (m.kind === "sideband") {
        out.push({ x: m.hz, name: m.name, label: "", color: color(m.of), dash: [1, 2], short: 0.22 });
      }
    }
    return out;
  }

  // ---- waterfall -------------------------------------------------------------------------
  function drawWaterfall() {
    const w = state.spectra;
    const canvas = $("chart-waterfall");
    const sp = state.spectrum;
    // the defect lines (no harmonics or sidebands: they would hide the rows) on the envelope
    const marks = w && w.kind === "envelope" && sp
      ? defectMarks(sp).filter((m) => !m.short && m.label && !m.label.endsWith("×")) : [];
    Charts.waterfall(canvas, {
      rows: w ? w.rows : [], f0: w ? w.f0 : 0, df: w ? w.df : 1, columns: w ? w.columns : 0,
      markers: marks, empty: "no archived spectra",
    });
    $("waterfall-meta").textContent = w && w.rows.length
      ? `(${w.channel}, ${w.rows.length} newest ${w.kind} spectra, newest on top, ${num(w.df, 2)} Hz per column)` : "";
  }

  async function loadWaterfall() {
    state.waterfallAt = Date.now();
    const { pump, channelShown } = state.view;
    const canvas = $("chart-waterfall");
    const n = Math.min(WATERFALL_MAX, Number($("waterfall-n").value) || 30);
    const q = new URLSearchParams({ n: String(n), kind: $("waterfall-kind").value,
      bins: String(Math.max(16, Math.min(4096, Math.round(canvas.clientWidth || 400)))) });
    if (channelShown) q.set("channel", channelShown);
    const ticket = ++state.waterfallTicket;  // only the newest request's answer is drawn
    let body = null;
    try {
      body = await api(`/api/pumps/${encodeURIComponent(pump)}/spectra?${q}`);
    } catch (err) {
      if (err.status !== 404) showError(err);
    }
    if (ticket !== state.waterfallTicket) return;
    state.spectra = body;
    if (state.view.pump === pump) drawWaterfall();
  }

  // ---- time range ------------------------------------------------------------------------
  // The range lives in the URL (#/pump/P-1?range=7d, or ?since=...&until=... for a custom
  // one, ISO 8601 UTC or Unix seconds), so a view can be shared and reloaded.
  function parseRange(query) {
    const q = new URLSearchParams(query || "");
    if (q.get("since") || q.get("until")) return { name: "custom", since: q.get("since") || "", until: q.get("until") || "" };
    const name = q.get("range");
    return { name: RANGES[name] ? name : "24h" };
  }

  function rangeHash(range) {
    const base = `#/pump/${encodeURIComponent(state.view.pump)}`;
    if (range.name === "custom") {
      const q = new URLSearchParams();
      if (range.since) q.set("since", range.since);
      if (range.until) q.set("until", range.until);
      return `${base}?${q}`;
    }
    return range.name === "24h" ? base : `${base}?range=${range.name}`;
  }

  // The history query of the view's range: a preset is that span up to the pump's newest
  // report (as the API's default), so a quiet pump still shows its last data.
  function historyQuery(ch) {
    const q = new URLSearchParams();
    if (ch) q.set("channel", ch);
    const canvas = $("chart-score");
    q.set("max_points", String(Math.max(60, Math.min(1000, Math.round(canvas.clientWidth || 600)))));
    const r = state.view.range;
    if (r.name === "custom") {
      if (r.since) q.set("since", r.since);
      if (r.until) q.set("until", r.until);
    } else {
      const p = state.pumps.get(state.view.pump);
      const newest = p ? summary(p).newest : 0;
      const until = newest ? newest + 1 : Date.now();
      q.set("since", ((until - RANGES[r.name]) / 1000).toFixed(3));
    }
    return q;
  }

  function toLocalInput(ms) { return new Date(ms).toISOString().slice(0, 19); }

  function renderRange() {
    const r = state.view.range;
    for (const b of document.querySelectorAll("#range-picker button[data-range]")) {
      b.setAttribute("aria-pressed", String(b.dataset.range === r.name));
    }
    $("range-custom").hidden = r.name !== "custom";
    const h = state.history;
    if (h && r.name === "custom") {
      if (!$("range-since").value) $("range-since").value = toLocalInput(h.since_ms);
      if (!$("range-until").value) $("range-until").value = toLocalInput(h.until_ms);
    }
    const shown = h ? h.series.reduce((n, x) => n + x.t_ms.length, 0) : 0;
    $("range-meta").textContent = h
      ? `${timeText(h.since_ms)} – ${timeText(h.until_ms)} · ${h.rows} results` +
        (h.bucket_s > 0 ? ` in ${shown} points (${fmtSpan(h.bucket_s)} buckets, downsampled by the store)` : "")
      : "";
  }

  function fmtSpan(sec) {
    if (sec >= 3600) return `${+(sec / 3600).toFixed(1)} h`;
    if (sec >= 60) return `${+(sec / 60).toFixed(1)} min`;
    return `${+sec.toFixed(1)} s`;
  }

  function renderPump() {
    renderPumpHead();
    renderAlarmList($("pump-alarms"), $("pump-alarms-empty"), (a) => a.pump === state.view.pump, false);
    drawTrends();
    drawSpectra();
    drawWaterfall();
    renderRange();
  }

  async function loadSpectrum() {
    const { pump, channelShown } = state.view;
    try {
      const q = channelShown ? `?channel=${encodeURIComponent(channelShown)}` : "";
      state.spectrum = await api(`/api/pumps/${encodeURIComponent(pump)}/spectrum${q}`);
    } catch (err) {
      if (err.status !== 404) showError(err);
      state.spectrum = null;
    }
    if (state.view.pump === pump) drawSpectra();
    if (Date.now() - state.waterfallAt >= 5000) await loadWaterfall();  // live: every 5 s at most
  }

  async function loadPump() {
    const pump = state.view.pump;
    const p = state.pumps.get(pump);
    const ch = p ? selectedChannel(p) : null;
    state.view.channelShown = ch;
    try {
      const q = historyQuery(ch);
      state.history = await api(`/api/pumps/${encodeURIComponent(pump)}/history?${q}`);
      state.history.origin_ms = state.history.since_ms;  // the store's bucket grid starts here
      state.history.max_points = Number(q.get("max_points"));
    } catch (err) {
      state.history = null;
      if (err.status !== 404) showError(err);
    }
    await loadSpectrum();
    if (state.view.pump === pump) {
      renderPump();
      document.body.dataset.pumpLoaded = pump;
      document.body.dataset.rangeLoaded = state.view.range.name;
    }
  }

  function appendToHistory(r) {
    const h = state.history;
    if (!h || r.pump !== state.view.pump || r.channel !== state.view.channelShown) return;
    let s = h.series.find((x) => x.channel === r.channel);
    if (!s) {
      s = { channel: r.channel, t_ms: [], count: [], anomaly_score: [], anomaly_score_max: [], anomaly_threshold: [],
        anomalous: [], velocity_rms: [], velocity_rms_max: [], iso_zone: [], condition: [] };
      h.series.push(s);
    }
    const range = state.view.range;
    if (range.name === "custom") {
      if (r.t_ms < h.since_ms || r.t_ms >= h.until_ms) return;  // outside a fixed range
    } else if (r.t_ms >= h.until_ms) {  // a preset slides with the newest report
      h.until_ms = r.t_ms + 1;
      h.since_ms = h.until_ms - RANGES[range.name];
      while (s.t_ms.length && s.t_ms[0] < h.since_ms) {
        for (const k of Object.keys(s)) if (Array.isArray(s[k])) s[k].shift();
      }
    }
    h.rows++;
    const bucketMs = h.bucket_s * 1000;
    const last = s.t_ms.length - 1;
    if (bucketMs > 0 && last >= 0 && Math.floor((r.t_ms - h.origin_ms) / bucketMs) === Math.floor((s.t_ms[last] - h.origin_ms) / bucketMs)) {
      // downsampled: the point joins the newest bucket (mean and max), so the count of
      // points stays what the store returned
      const n = s.count[last];
      const mean = (k, v) => { if (v !== null && s[k][last] !== null) s[k][last] = (s[k][last] * n + v) / (n + 1); };
      mean("t_ms", r.t_ms); mean("anomaly_score", r.anomaly_score); mean("velocity_rms", r.velocity_rms);
      if (r.anomaly_score !== null) s.anomaly_score_max[last] = Math.max(s.anomaly_score_max[last] ?? -Infinity, r.anomaly_score);
      if (r.velocity_rms !== null) s.velocity_rms_max[last] = Math.max(s.velocity_rms_max[last] ?? -Infinity, r.velocity_rms);
      s.anomaly_threshold[last] = r.anomaly_threshold;
      s.anomalous[last] += r.anomalous ? 1 : 0;
      if ((ZONE_RANK[r.iso_zone] || 0) > (ZONE_RANK[s.iso_zone[last]] || 0)) s.iso_zone[last] = r.iso_zone;
      s.count[last] = n + 1;
    } else {
      let i = s.t_ms.length;
      while (i > 0 && s.t_ms[i - 1] > r.t_ms) i--;
      const put = (k, v) => s[k].splice(i, 0, v);
      put("t_ms", r.t_ms); put("count", 1); put("anomaly_score", r.anomaly_score); put("anomaly_score_max", r.anomaly_score);
      put("anomaly_threshold", r.anomaly_threshold); put("anomalous", r.anomalous ? 1 : 0);
      put("velocity_rms", r.velocity_rms); put("velocity_rms_max", r.velocity_rms); put("iso_zone", r.iso_zone); put("condition", bucketMs > 0 ? null : r.condition);
      if (s.t_ms.length > 2 * h.max_points && !state.historyTimer) {
        // raw points outgrew the request's bound: ask the store again (it downsamples)
        state.historyTimer = setTimeout(() => { state.historyTimer = 0; loadPump(); }, 1000);
      }
    }
    if (!state.spectrumTimer) {  // the newest report's spectra, at most every 2 s
      state.spectrumTimer = setTimeout(() => { state.spectrumTimer = 0; loadSpectrum(); }, 1000);
    }
  }

  // ---- routing and rendering -------------------------------------------------------------
  function render() {
    if (state.view.name === "fleet") {
      renderFleet();
    } else {
      for (const pump of state.dirty) { const p = state.pumps.get(pump); if (p) renderTile(p); }
      renderPumpHead();
      renderAlarmList($("pump-alarms"), $("pump-alarms-empty"), (a) => a.pump === state.view.pump, false);
      drawTrends();
      renderRange();
      renderCounts();
    }
    state.dirty.clear();
  }

  function route() {
    const m = location.hash.match(/^#\/pump\/([^/?]+)(?:\?(.*))?$/);
    const crumbs = $("crumbs");
    if (m) {
      const pump = decodeURIComponent(m[1]);
      const same = state.view.name === "pump" && state.view.pump === pump;
      state.view = { name: "pump", pump, range: parseRange(m[2]), channel: same ? state.view.channel : undefined };
      state.history = null; state.spectrum = null; state.spectra = null; state.waterfallAt = 0;
      if (!same) { $("range-since").value = ""; $("range-until").value = ""; }
      $("fleet-view").hidden = true; $("pump-view").hidden = false;
      const back = el("a", "", "fleet"); back.href = "#/";
      crumbs.replaceChildren(back, el("span", "", "/"), el("span", "", state.view.pump));
      delete document.body.dataset.pumpLoaded;
      delete document.body.dataset.rangeLoaded;
      renderPumpHead();
      renderRange();
      renderCounts();
      loadPump();
    } else {
      state.view = { name: "fleet" };
      $("fleet-view").hidden = false; $("pump-view").hidden = true;
      crumbs.replaceChildren();
      for (const p of state.pumps.keys()) state.dirty.add(p);
      renderFleet();
      state.dirty.clear();
    }
  }

  async function loadAll() {
    const [fleet, raised, recent] = await Promise.all([
      api("/api/pumps"), api("/api/alarms?state=raised&limit=1000"), api("/api/alarms?limit=200"),
      loadClasses(),
    ]);
    for (const a of raised.alarms.concat(recent.alarms)) applyAlarm(a);
    for (const p of fleet.pumps) for (const r of p.channels) applyResult(r, false);
    showError(null);
  }

  // ---- live stream -----------------------------------------------------------------------
  let source = null;
  function connect() {
    const live = $("live");
    const q = token ? `?access_token=${encodeURIComponent(token)}` : "";
    source = new EventSource(`/api/stream${q}`);
    live.dataset.state = "connecting"; live.textContent = "connecting";
    source.onopen = () => { live.dataset.state = "open"; live.textContent = "live"; };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // The server refused (auth, store down): start over, then reload state.
        live.dataset.state = "closed"; live.textContent = "offline";
        setTimeout(() => { connect(); refresh(); }, 3000);
      } else {
        live.dataset.state = "connecting"; live.textContent = "reconnecting";
      }
    };
    source.addEventListener("result", (e) => {
      const r = JSON.parse(e.data);
      if (applyResult(r, true)) {
        if (state.view.name === "pump") appendToHistory(r);
        schedule();
      }
    });
    source.addEventListener("alarm", (e) => { applyAlarm(JSON.parse(e.data)); schedule(); });
    source.addEventListener("reset", () => { refresh(); });
  }

  async function refresh() {
    try {
      await loadAll();
      for (const p of state.pumps.keys()) state.dirty.add(p);
      schedule();
    } catch (err) {
      showError(err);
    }
  }

  $("channel-select").addEventListener("change", (e) => {
    state.view.channel = e.target.value;
    state.waterfallAt = 0;
    loadPump();
  });
  for (const b of document.querySelectorAll("#range-picker button[data-range]")) {
    b.addEventListener("click", () => {
      if (b.dataset.range === "custom") {
        state.view.range = { name: "custom", since: "", until: "" };
        const h = state.history;
        if (h) { $("range-since").value = toLocalInput(h.since_ms); $("range-until").value = toLocalInput(h.until_ms); }
        renderRange();
        return;  // applied with "show"
      }
      location.hash = rangeHash({ name: b.dataset.range });
    });
  }
  $("range-apply").addEventListener("click", () => {
    location.hash = rangeHash({ name: "custom", since: $("range-since").value, until: $("range-until").value });
  });
  for (const id of ["waterfall-n", "waterfall-kind"]) {
    $(id).addEventListener("change", () => { if (state.view.name === "pump") loadWaterfall(); });
  }
  window.addEventListener("hashchange", route);
  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (state.view.name === "pump") { drawTrends(); drawSpectra(); drawWaterfall(); } }, 150);
  });

  async function start() {
    connect();
    try {
      await loadAll();
    } catch (err) {
      showError(err);
    }
    route();
    document.body.dataset.ready = "1";
    setInterval(refresh, 30000);  // belt and braces: the stream carries every change
  }
  start();
})();
