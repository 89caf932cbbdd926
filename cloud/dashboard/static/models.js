// The Models page (models.html): each version's latest monitoring run, from /api/monitoring.
"use strict";
(async () => {
  const params = new URLSearchParams(location.search);
  if (params.get("token")) sessionStorage.setItem("pumpwatch-token", params.get("token"));
  const token = sessionStorage.getItem("pumpwatch-token");
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const cell = (tr, text) => { const td = document.createElement("td"); td.textContent = text; tr.append(td); return td; };
  try {
    const res = await fetch("/api/monitoring", { headers });
    if (!res.ok) throw new Error(`/api/monitoring: ${res.status}`);
    const body = await res.json();
    const tbody = document.querySelector("#models tbody");
    for (const m of body.models) {
      const tr = document.createElement("tr");
      tr.dataset.status = m.status;
      tr.dataset.version = m.model_version;
      cell(tr, m.model_version);
      cell(tr, m.status).className = "status";
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
    document.getElementById("models-empty").hidden = body.models.length > 0;
  } catch (err) {
    const p = document.getElementById("models-error");
    p.textContent = String(err);
    p.hidden = false;
  }
})();
