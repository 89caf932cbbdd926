// Minimal canvas charts for the dashboard: time/linear/log x axes, linear/log y axes, zone
// bands, ranges, threshold lines, labelled frequency markers, and a waterfall (spectra over
// time as a heat map). No dependencies.
//
// Each chart leaves what it drew on its canvas for tests and tools: data-points (points
// drawn), data-y-scale and data-y-ticks ([[value, px], ...]), data-markers ([{name, hz,
// px}, ...] of the markers inside the plot); a waterfall data-rows and data-columns.
"use strict";

const Charts = (() => {
  const AXIS = "#8b98a5", GRID = "#263241", TEXT = "#c9d4df";

  function setup(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(50, canvas.clientWidth), h = Math.max(50, canvas.clientHeight);
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const font = Math.max(10, Math.min(20, Math.round(h / 20)));
    ctx.font = `${font}px system-ui, sans-serif`;
    return { ctx, w, h, font };
  }

  function niceStep(span, n) {
    const raw = span / Math.max(1, n);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  }

  function linearTicks(lo, hi, n) {
    if (!(hi > lo)) return [lo];
    const step = niceStep(hi - lo, n);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  // 1-2-5 per decade; decades only when that would be more than n ticks
  function logTicks(lo, hi, n) {
    const out = [];
    const decades = Math.log10(hi) - Math.log10(lo);
    const mantissas = n && decades * 3 > n ? [1] : [1, 2, 5];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of mantissas) {
        const v = +(m * Math.pow(10, e)).toPrecision(12);
        if (v >= lo && v <= hi) out.push(v);
      }
    }
    return out;
  }

  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
    21600, 43200, 86400, 172800, 604800, 2592000].map((s) => s * 1000);

  function timeTicks(lo, hi, n) {
    const raw = (hi - lo) / Math.max(1, n);
    const step = TIME_STEPS.find((s) => s >= raw) || TIME_STEPS[TIME_STEPS.length - 1];
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) out.push(v);
    return { ticks: out, step };
  }

  function timeLabel(ms, step) {
    const d = new Date(ms);
    const p = (x) => String(x).padStart(2, "0");
    if (step >= 86400000) return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}`;
    if (step >= 60000) return `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}`;
    return `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}`;
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a >= 1000) return (v / 1000).toPrecision(3).replace(/\.?0+$/, "") + "k";
    if (a >= 10 || v === 0) return String(Math.round(v * 10) / 10);
    return String(+v.toPrecision(2));
  }

  // opts: { x: {type: "time"|"linear"|"log", min, max}, y: {min, max}, bands, series,
  //         hlines, markers, empty }
  // Returns the number of data points drawn (also left in canvas.dataset.points).
  function draw(canvas, opts) {
    const { ctx, w, h, font } = setup(canvas);
    const series = (opts.series || []).filter((s) => s.x.length > 0);
    const L = font * 3.6, R = font * 0.8, T = font * (opts.markers && opts.markers.length ? 2.6 : 0.9), B = font * 2.1;
    const pw = w - L - R, ph = h - T - B;
    let points = 0;
    if (!series.length) {
      ctx.fillStyle = AXIS;
      ctx.textAlign = "center";
      ctx.fillText(opts.empty || "no data", w / 2, h / 2);
      canvas.dataset.points = "0";
      canvas.dataset.markers = "[]";
      return 0;
    }
    const xt = opts.x.type || "linear";
    let x0 = opts.x.min, x1 = opts.x.max, y0 = opts.y.min, y1 = opts.y.max;
    if (x0 === undefined || x1 === undefined) {
      let lo = Infinity, hi = -Infinity;
      for (const s of series) for (const v of s.x) if (v !== null && (xt !== "log" || v > 0)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      if (x0 === undefined) x0 = lo;
      if (x1 === undefined) x1 = hi;
    }
    if (x1 <= x0) { x1 = x0 + (xt === "time" ? 60000 : 1); }
    // A log y axis shows values > 0 only; values at or below zero sit on its floor.
    const yt = opts.y.type || "linear";
    const ok = (v) => v !== null && isFinite(v) && (yt !== "log" || v > 0);
    if (y0 === undefined || y1 === undefined) {
      let lo = Infinity, hi = -Infinity;
      for (const s of series) {
        for (let i = 0; i < s.y.length; i++) {
          const xv = s.x[i];
          if (xv < x0 || xv > x1) continue;
          for (const v of [s.y[i], s.hi ? s.hi[i] : null]) if (ok(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
        }
      }
      for (const hl of opts.hlines || []) if (ok(hl.y)) { lo = Math.min(lo, hl.y); hi = Math.max(hi, hl.y); }
      if (yt === "log") {
        if (!isFinite(lo)) { lo = 0.1; hi = 1; }
        const floor = opts.y.floor || 1e-3;
        lo = Math.max(lo, floor, hi * 1e-6);
        if (y0 === undefined) y0 = lo / 1.4;
        if (y1 === undefined) y1 = hi * 1.4;
      } else {
        if (!isFinite(lo)) { lo = 0; hi = 1; }
        const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
        if (y0 === undefined) y0 = lo - pad;
        if (y1 === undefined) y1 = hi + pad;
      }
    }
    const lx0 = xt === "log" ? Math.log10(x0) : x0, lx1 = xt === "log" ? Math.log10(x1) : x1;
    const X = (v) => L + ((xt === "log" ? Math.log10(v) : v) - lx0) / (lx1 - lx0) * pw;
    const ly0 = yt === "log" ? Math.log10(y0) : y0, ly1 = yt === "log" ? Math.log10(y1) : y1;
    const Y = (v) => {
      const lv = yt === "log" ? Math.log10(Math.max(v, y0)) : v;
      return T + (1 - (lv - ly0) / (ly1 - ly0)) * ph;
    };

    // bands (e.g. ISO zones), clipped to the plot
    ctx.save();
    ctx.beginPath(); ctx.rect(L, T, pw, ph); ctx.clip();
    for (const b of opts.bands || []) {
      const top = Y(Math.min(y1, b.y1)), bot = Y(Math.max(y0, b.y0));
      if (bot <= top) continue;
      ctx.fillStyle = b.color;
      ctx.fillRect(L, top, pw, bot - top);
      if (b.label) {
        ctx.fillStyle = b.labelColor || TEXT;
        ctx.textAlign = "right"; ctx.textBaseline = "top";
        ctx.fillText(b.label, L + pw - 4, top + 2);
      }
    }
    ctx.restore();

    // grid and axes
    ctx.strokeStyle = GRID; ctx.lineWidth = 1; ctx.fillStyle = AXIS;
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    let yticks = yt === "log" ? logTicks(y0, y1, Math.max(2, Math.floor(ph / (font * 1.6)))) : [];
    if (yticks.length < 2) yticks = linearTicks(y0, y1, Math.max(2, Math.floor(ph / (font * 2.6))));
    for (const v of yticks) {
      const y = Math.round(Y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(L + pw, y); ctx.stroke();
      ctx.fillText(fmt(v), L - 5, y);
    }
    canvas.dataset.yScale = yt;
    canvas.dataset.yTicks = JSON.stringify(yticks.map((v) => [v, +Y(v).toFixed(2)]));
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    const nx = Math.max(2, Math.floor(pw / (font * 7)));
    let xticks, xlabel;
    if (xt === "time") {
      const t = timeTicks(x0, x1, nx);
      xticks = t.ticks; xlabel = (v) => timeLabel(v, t.step);
    } else if (xt === "log") {
      xticks = logTicks(x0, x1); xlabel = fmt;
    } else {
      xticks = linearTicks(x0, x1, nx); xlabel = fmt;
    }
    for (const v of xticks) {
      const x = Math.round(X(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, T); ctx.lineTo(x, T + ph); ctx.stroke();
      ctx.fillText(xlabel(v), x, T + ph + 4);
    }
    if (opts.x.label) { ctx.textAlign = "right"; ctx.fillText(opts.x.label, L + pw, T + ph + font * 1.1); }
    ctx.strokeStyle = AXIS;
    ctx.strokeRect(L + 0.5, T + 0.5, pw, ph);

    ctx.save();
    ctx.beginPath(); ctx.rect(L, T, pw, ph); ctx.clip();
    // frequency markers
    const drawn = [];
    for (const m of opts.markers || []) {
      if (!(m.x >= x0 && m.x <= x1)) continue;
      const x = Math.round(X(m.x)) + 0.5;
      ctx.strokeStyle = m.color; ctx.setLineDash(m.dash || [4, 3]); ctx.lineWidth = m.width || 1;
      // a short marker (e.g. a sideband) is a tick down from the top, not a full line
      ctx.beginPath(); ctx.moveTo(x, T); ctx.lineTo(x, m.short ? T + ph * m.short : T + ph); ctx.stroke();
      drawn.push({ name: m.name || m.label, hz: m.x, px: +X(m.x).toFixed(2) });
    }
    canvas.dataset.markers = JSON.stringify(drawn);
    canvas.dataset.plot = JSON.stringify([L, T, pw, ph]);
    ctx.setLineDash([]);
    // series: optional shaded lo..hi range, then the line
    for (const s of series) {
      if (s.hi) {
        ctx.fillStyle = s.fill || "rgba(78,161,255,0.18)";
        ctx.beginPath();
        let started = false;
        for (let i = 0; i < s.x.length; i++) {
          if (s.hi[i] === null) continue;
          const x = X(s.x[i]), y = Y(s.hi[i]);
          if (!started) { ctx.moveTo(x, y); started = true; } else ctx.lineTo(x, y);
        }
        for (let i = s.x.length - 1; i >= 0; i--) if (s.y[i] !== null) ctx.lineTo(X(s.x[i]), Y(s.y[i]));
        ctx.closePath(); ctx.fill();
      }
      ctx.strokeStyle = s.color; ctx.lineWidth = s.width || 1.5; ctx.setLineDash(s.dash || []);
      ctx.beginPath();
      let pen = false;
      for (let i = 0; i < s.x.length; i++) {
        const v = s.y[i];
        if (v === null || !isFinite(v) || (xt === "log" && !(s.x[i] > 0))) { pen = false; continue; }
        const x = X(s.x[i]), y = Y(v);
        if (pen) ctx.lineTo(x, y); else { ctx.moveTo(x, y); pen = true; }
        points++;
      }
      ctx.stroke();
      if (s.dots) {
        ctx.fillStyle = s.color;
        for (let i = 0; i < s.x.length; i++) {
          if (s.y[i] === null) continue;
          ctx.beginPath(); ctx.arc(X(s.x[i]), Y(s.y[i]), 2.2, 0, 2 * Math.PI); ctx.fill();
        }
      }
    }
    ctx.setLineDash([]);
    for (const hl of opts.hlines || []) {
      if (!isFinite(hl.y)) continue;
      const y = Math.round(Y(hl.y)) + 0.5;
      ctx.strokeStyle = hl.color; ctx.setLineDash(hl.dash || [6, 4]); ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(L + pw, y); ctx.stroke();
      if (hl.label) { ctx.fillStyle = hl.color; ctx.textAlign = "left"; ctx.textBaseline = "bottom"; ctx.fillText(hl.label, L + 4, y - 2); }
    }
    ctx.restore();
    ctx.setLineDash([]);
    // marker labels above the plot, staggered in two rows to limit overlap
    ctx.textAlign = "center"; ctx.textBaseline = "bottom";
    let lastX = -Infinity, row = 0;
    const visible = (opts.markers || []).filter((m) => m.label && m.x >= x0 && m.x <= x1).sort((a, b) => a.x - b.x);
    for (const m of visible) {
      const x = X(m.x);
      const width = ctx.measureText(m.label).width;
      row = x - lastX < width + 4 ? 1 - row : 0;
      ctx.fillStyle = m.color;
      ctx.fillText(m.label, Math.min(Math.max(x, L + width / 2), L + pw - width / 2), T - 2 - row * font * 1.1);
      lastX = x;
    }
    canvas.dataset.points = String(points);
    return points;
  }

  // Viridis-like ramp, t in [0, 1] -> [r, g, b]
  const RAMP = [[13, 8, 135], [84, 2, 163], [139, 10, 165], [185, 50, 137], [219, 92, 104],
    [244, 136, 73], [254, 188, 43], [240, 249, 33]];
  function ramp(t) {
    const u = Math.max(0, Math.min(1, t)) * (RAMP.length - 1);
    const i = Math.min(RAMP.length - 2, Math.floor(u)), f = u - i;
    return RAMP[i].map((c, k) => Math.round(c + (RAMP[i + 1][k] - c) * f));
  }

  // Spectra over time: one row per spectrum (rows[0], the newest, on top), column j at
  // f0 + j*df Hz, colour by dB between the 5th and the 99.5th percentile of all cells.
  // opts: { rows: [{t_ms, db}], f0, df, columns, markers, empty }. Returns the rows drawn.
  function waterfall(canvas, opts) {
    const { ctx, w, h, font } = setup(canvas);
    const rows = opts.rows || [];
    const n = opts.columns || 0;
    canvas.dataset.rows = "0";
    canvas.dataset.columns = String(n);
    if (!rows.length || !n) {
      ctx.fillStyle = AXIS; ctx.textAlign = "center";
      ctx.fillText(opts.empty || "no spectra", w / 2, h / 2);
      canvas.dataset.markers = "[]";
      return 0;
    }
    const L = font * 5.2, R = font * 0.8, T = font * 0.9, B = font * 2.1;
    const pw = w - L - R, ph = h - T - B;
    const cells = [];
    for (const r of rows) for (const v of r.db) if (v !== null && isFinite(v)) cells.push(v);
    cells.sort((a, b) => a - b);
    const lo = cells[Math.floor(cells.length * 0.05)], hi = cells[Math.min(cells.length - 1, Math.floor(cells.length * 0.995))];
    const span = hi > lo ? hi - lo : 1;
    // one pixel per cell in an offscreen image, scaled onto the plot (no smoothing)
    const img = ctx.createImageData(n, rows.length);
    rows.forEach((r, i) => {
      for (let j = 0; j < n; j++) {
        const v = r.db[j];
        const k = (i * n + j) * 4;
        const [cr, cg, cb] = v === null || v === undefined ? [0, 0, 0] : ramp((v - lo) / span);
        img.data[k] = cr; img.data[k + 1] = cg; img.data[k + 2] = cb; img.data[k + 3] = 255;
      }
    });
    const off = document.createElement("canvas");
    off.width = n; off.height = rows.length;
    off.getContext("2d").putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, L, T, pw, ph);
    // axes: frequency below, time (UTC) of every k-th row on the left
    const x0 = opts.f0, x1 = opts.f0 + opts.df * n;
    const X = (v) => L + (v - x0) / (x1 - x0) * pw;
    ctx.strokeStyle = AXIS; ctx.strokeRect(L + 0.5, T + 0.5, pw, ph);
    ctx.fillStyle = AXIS; ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (const v of linearTicks(x0, x1, Math.max(2, Math.floor(pw / (font * 7))))) {
      const x = Math.round(X(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, T + ph); ctx.lineTo(x, T + ph + 4); ctx.stroke();
      ctx.fillText(fmt(v), x, T + ph + 4);
    }
    ctx.textAlign = "right"; ctx.fillText("Hz", L + pw, T + ph + font * 1.1);
    ctx.textBaseline = "middle";
    const rh = ph / rows.length;
    const every = Math.max(1, Math.ceil(font * 1.3 / rh));
    for (let i = 0; i < rows.length; i += every) {
      ctx.fillText(timeLabel(rows[i].t_ms, 1000), L - 5, T + (i + 0.5) * rh);
    }
    const drawn = [];
    for (const m of opts.markers || []) {
      if (!(m.x >= x0 && m.x <= x1)) continue;
      const x = Math.round(X(m.x)) + 0.5;
      ctx.strokeStyle = m.color; ctx.setLineDash([2, 4]); ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(x, T); ctx.lineTo(x, T + ph); ctx.stroke();
      drawn.push({ name: m.name || m.label, hz: m.x, px: +X(m.x).toFixed(2) });
    }
    ctx.setLineDash([]);
    canvas.dataset.markers = JSON.stringify(drawn);
    canvas.dataset.plot = JSON.stringify([L, T, pw, ph]);
    canvas.dataset.rows = String(rows.length);
    canvas.dataset.dbRange = JSON.stringify([lo, hi]);
    return rows.length;
  }

  return { draw, waterfall };
})();
