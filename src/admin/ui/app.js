// Seawall dashboard: the admin JSON API in four tabs. The token lives in sessionStorage only
// and travels as `Authorization: Bearer`; nothing here is inline (the CSP forbids it).
"use strict";

(() => {
  const KEY = "seawall-admin-token";
  const REFRESH_MS = 5000;
  const $ = (id) => document.getElementById(id);
  let role = null;
  let tab = "entries";
  let timer = null;

  // ---- API -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, opts) {
    opts = opts || {};
    const token = opts.token ?? sessionStorage.getItem(KEY);
    const headers = { Authorization: "Bearer " + token };
    let body;
    if (opts.json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(opts.json); }
    let res;
    try {
      res = await fetch(path, { method: opts.method || "GET", headers, body, cache: "no-store", credentials: "omit" });
    } catch (e) {
      throw new ApiError(0, "Seawall's admin listener did not answer (" + e.message + ")");
    }
    const text = await res.text();
    if (!res.ok) {
      let msg = text;
      try { msg = JSON.parse(text).error || text; } catch (_) { /* not JSON */ }
      if (res.status === 401 && !opts.token) {
        logout("The admin token was refused (401: " + msg + "). Log in again.");
      }
      if (res.status === 403) msg = "Forbidden (403): " + msg;
      throw new ApiError(res.status, msg || res.statusText);
    }
    if (opts.raw) return text;
    try { return JSON.parse(text); } catch (_) { return text; }
  }

  // ---- Formatting ------------------------------------------------------------------------

  function bytes(n) {
    if (n == null) return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  }
  function secs(s) {
    if (s == null) return "–";
    const neg = s < 0; s = Math.abs(s);
    const out = s < 120 ? s + " s" : s < 7200 ? Math.round(s / 60) + " min" : s < 172800 ? Math.round(s / 3600) + " h" : Math.round(s / 86400) + " d";
    return neg ? "−" + out : out;
  }
  function when(unix) {
    return unix ? new Date(unix * 1000).toLocaleString() : "–";
  }
  function td(row, text, cls) {
    const c = document.createElement("td");
    if (cls) c.className = cls;
    if (text instanceof Node) c.appendChild(text); else c.textContent = text == null ? "–" : String(text);
    row.appendChild(c);
    return c;
  }
  function button(label, action, cls) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = label; b.dataset.action = action; b.className = "small " + (cls || "");
    return b;
  }
  function say(id, text, kind) {
    const e = $(id);
    e.textContent = text;
    e.classList.toggle("bad", kind === "bad");
    e.classList.toggle("good", kind === "good");
  }
  function stateSpan(s) {
    const e = document.createElement("span");
    e.className = "state " + String(s).replace(/[^a-z_]/gi, "");
    e.textContent = s;
    return e;
  }
  function plural(n, one, many) { return n + " " + (n === 1 ? one : many); }

  // ---- Login -----------------------------------------------------------------------------

  async function login(token) {
    const who = await api("/admin/whoami", { token });
    sessionStorage.setItem(KEY, token);
    role = who.role;
    document.body.classList.toggle("read-only", role !== "full");
    $("whoami").textContent = role === "full" ? "full access" : "read-only";
    $("whoami").hidden = false;
    $("logout").hidden = false;
    $("login").hidden = true;
    $("app").hidden = false;
    $("login-error").hidden = true;
    loadBuild();
    show(tab);
  }

  function logout(message) {
    sessionStorage.removeItem(KEY);
    role = null;
    clearInterval(timer);
    $("app").hidden = true;
    $("whoami").hidden = true;
    $("logout").hidden = true;
    $("build").textContent = "";
    $("login").hidden = false;
    // Nothing read with the old token stays on the page.
    for (const id of ["entries-body", "mgmt-breakers-body", "health-breakers-body", "alerts-history-body", "health-alerts", "health-components", "health-evictions", "health-tls-body"]) $(id).replaceChildren();
    document.querySelectorAll(".chart svg, .chart .legend").forEach((n) => n.remove());
    if (message) { $("login-error").textContent = message; $("login-error").hidden = false; }
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    try {
      await login(token);
    } catch (e) {
      const msg = e.status === 401 ? "Wrong token: the admin API refused it (401). Nothing is shown without a valid token."
        : e.status === 403 ? "This token may not use the dashboard (403)."
        : "Login failed: " + e.message;
      logout(msg);
    }
  });
  $("logout").addEventListener("click", () => logout("Logged out."));

  async function loadBuild() {
    try {
      const st = await api("/admin/status");
      let slot = "";
      try {
        const m = await fetch("/metrics", { cache: "no-store", credentials: "omit" }).then((r) => r.text());
        const hit = m.match(/^seawall_build_info\{[^}]*slot="([^"]*)"/m);
        if (hit) slot = hit[1];
      } catch (_) { /* the slot is a nicety */ }
      $("build").textContent = "v" + st.version + (slot && slot !== "none" ? " · slot " + slot : "") + " · up " + secs(st.uptime_secs);
      $("build").dataset.slot = slot;
    } catch (_) { /* shown by the tab that needs it */ }
  }

  // ---- Tabs ------------------------------------------------------------------------------

  function show(name) {
    if (name === "management" && role !== "full") name = "entries";
    tab = name;
    document.querySelectorAll(".tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
    document.querySelectorAll(".panel").forEach((p) => { p.hidden = p.dataset.panel !== name; });
    $("app-error").hidden = true;
    clearInterval(timer);
    refresh();
    // Performance and health follow the live numbers; the entry list changes only on request.
    if (name === "performance" || name === "health" || name === "management") {
      timer = setInterval(() => {
        if (name !== "performance" || $("perf-auto").checked) refresh(true);
      }, REFRESH_MS);
    }
  }
  document.querySelectorAll(".tabs button").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));

  async function refresh(background) {
    if (!sessionStorage.getItem(KEY)) return;
    try {
      if (tab === "entries") await loadEntries();
      else if (tab === "performance") await loadHistory();
      else if (tab === "management") await loadManagement();
      else if (tab === "health") await loadHealth();
      $("app-error").hidden = true;
    } catch (e) {
      if (e.status === 401) return;
      if (!background || e.status !== 0) { $("app-error").textContent = e.message; $("app-error").hidden = false; }
    }
  }

  // ---- Top entries -----------------------------------------------------------------------

  async function loadEntries() {
    const q = new URLSearchParams({ top: $("entries-top").value, sort: $("entries-sort").value });
    const prefix = $("entries-prefix").value.trim(), tag = $("entries-tag").value.trim();
    if (prefix) q.set("prefix", prefix);
    if (tag) q.set("tag", tag);
    const data = await api("/admin/cache/entries?" + q);
    const rows = data.entries || [];
    const body = $("entries-body");
    body.replaceChildren();
    for (const e of rows) {
      const tr = document.createElement("tr");
      tr.dataset.key = e.key;
      td(tr, e.key, "key mono");
      // `route` is null when no route serves the key any more (after a reload).
      td(tr, e.route === undefined ? hostOf(e.key) : e.route ?? "(none)");
      const state = e.state || (e.ttl >= 0 ? "fresh" : "stale");
      const st = td(tr, stateSpan(state));
      if (e.status) st.prepend(e.status + " ");
      td(tr, bytes(e.size), "num");
      td(tr, secs(e.age), "num");
      td(tr, secs(e.ttl), "num");
      td(tr, e.hits, "num");
      td(tr, e.variants + (e.vary && e.vary.length ? " (" + e.vary.join(", ") + ")" : ""), "num");
      const tags = document.createElement("span");
      for (const t of e.tags || []) { const s = document.createElement("span"); s.className = "tag"; s.textContent = t; tags.appendChild(s); }
      td(tr, tags);
      const a = td(tr, "", "actions");
      a.appendChild(button("Headers", "headers"));
      const soft = button("Soft purge", "purge-soft", "full-only");
      const hard = button("Purge", "purge-hard", "danger full-only");
      a.append(soft, hard);
      body.appendChild(tr);
    }
    say("entries-message", rows.length ? plural(rows.length, "entry", "entries") + " shown." : "No entries match.");
  }

  function hostOf(key) {
    const m = /^https?:\/\/([^/]+)/.exec(key);
    return m ? m[1] : "";
  }

  $("entries-form").addEventListener("submit", (ev) => { ev.preventDefault(); refresh(); });
  $("entries-sort").addEventListener("change", () => refresh());
  $("entries-top").addEventListener("change", () => refresh());

  $("entries-body").addEventListener("click", async (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    const key = b.closest("tr").dataset.key;
    try {
      if (b.dataset.action === "headers") return await showEntry(key);
      const soft = b.dataset.action === "purge-soft";
      const r = await api("/admin/cache/purge", { method: "POST", json: { url: key, soft } });
      await loadEntries();
      say("entries-message", (soft ? "Soft-purged " : "Purged ") + plural(r.purged, "entry", "entries") + " of " + key + ".", "good");
    } catch (e) {
      say("entries-message", e.message, "bad");
    }
  });

  async function showEntry(key) {
    const v = await api("/admin/cache/entry?" + new URLSearchParams({ url: key }));
    const box = $("entry-detail-body");
    box.replaceChildren();
    $("entry-detail-title").textContent = key;
    for (const variant of v.variants || []) {
      const h = document.createElement("h4");
      const vary = (variant.vary || []).map((x) => x.field + ": " + (x.value ?? "(absent)")).join(", ");
      h.textContent = "Status " + variant.status + " · " + bytes(variant.size) + " · " + variant.hits + " hits" +
        (variant.policy ? " · TTL " + secs(variant.policy.ttl_secs) : "") + (vary ? " · Vary " + vary : "");
      const table = document.createElement("table");
      table.className = "headers data";
      for (const [k, val] of variant.headers || []) {
        const tr = document.createElement("tr");
        td(tr, k, "mono"); td(tr, val, "mono");
        table.appendChild(tr);
      }
      box.append(h, table);
    }
    $("entry-detail").hidden = false;
  }
  $("entry-detail-close").addEventListener("click", () => { $("entry-detail").hidden = true; });

  // ---- Performance -----------------------------------------------------------------------

  const RANGE_SECS = { "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, "30d": 2592000 };

  function historyQuery(format) {
    const q = new URLSearchParams({ range: $("perf-range").value });
    if ($("perf-route").value) q.set("route", $("perf-route").value);
    if (format) q.set("format", format);
    return "/admin/stats/history?" + q;
  }

  async function loadHistory() {
    const h = await api(historyQuery());
    const sel = $("perf-route");
    const routes = h.routes || [];
    const have = [...sel.options].map((o) => o.value).slice(1);
    if (routes.join("\n") !== have.join("\n")) {
      const keep = sel.value;
      sel.replaceChildren(new Option("all routes", ""));
      for (const r of routes) sel.appendChild(new Option(r, r));
      sel.value = routes.includes(keep) ? keep : "";
    }
    const pts = h.points || [];
    const now = Date.now() / 1000;
    // Points are stamped with the start of their step, which may precede the process start.
    const from = Math.min(Math.max(h.since || 0, now - (RANGE_SECS[h.range] || 3600)), ...pts.map((p) => p.t));
    const step = h.step_secs || 10;
    $("perf-since").textContent = "History starts at process start, " + when(h.since) + "; one point per " + (step % 3600 === 0 ? step / 3600 + " h" : step % 60 === 0 ? step / 60 + " min" : step + " s") +
      (h.route ? "; route " + h.route : "; all routes") + ". Prometheus keeps the long-term series.";
    const opts = { from, to: now, step };
    const rate = (k) => (p) => (p.by_status ? (p.by_status[k] || 0) / step : null);
    const lat = (which, q) => (p) => p.latency_ms?.[which]?.[q] ?? null;
    const C = SeawallCharts;
    C.draw($("chart-hit-ratio"), pts, [{ name: "hit ratio", get: (p) => p.hit_ratio }], { ...opts, yMax: 1 });
    // The API's classes (`/admin/stats/history`); 5xx answers are counted apart, across classes.
    const series = ["hit", "miss", "stale", "uncacheable", "revalidated"].map((k) => ({ name: k, get: rate(k) }));
    series.push({ name: "5xx", get: (p) => (p.errors_5xx ?? 0) / step });
    C.draw($("chart-requests"), pts, series, opts);
    C.draw($("chart-origin"), pts, [{ name: "origin requests", get: (p) => p.origin_requests }, { name: "saved", get: (p) => p.origin_saved }], opts);
    C.draw($("chart-latency-hit"), pts, ["p50", "p95", "p99"].map((q) => ({ name: "hit " + q, get: lat("hit", q) })), opts);
    C.draw($("chart-latency-miss"), pts, ["p50", "p95", "p99"].map((q) => ({ name: "miss " + q, get: lat("miss", q) })), opts);
    C.draw($("chart-upstream"), pts, ["p50", "p95", "p99"].map((q) => ({ name: q, get: (p) => p.upstream_latency_ms?.[q] ?? null })), opts);
    C.draw($("chart-coalesced"), pts, [{ name: "coalesced", get: (p) => p.coalesced }], { ...opts, bars: true });
    C.draw($("chart-breakers"), pts, [{ name: "breaker changes", get: (p) => p.breaker_changes }], { ...opts, bars: true });
    // Which answer the charts show (tests and scripts wait on it after switching the range).
    $("panel-performance").dataset.range = h.range;
    $("panel-performance").dataset.route = h.route || "";
    const partial = pts.some((p) => p.partial);
    say("perf-message", pts.length ? plural(pts.length, "point", "points") + (partial ? " (the newest is still filling)" : "") + ", updated " + new Date().toLocaleTimeString() + "." : "No points yet in this range.");
  }

  $("perf-range").addEventListener("change", () => refresh());
  $("perf-route").addEventListener("change", () => refresh());

  async function download(format) {
    try {
      const text = await api(historyQuery(format), { raw: true });
      const name = "seawall-history-" + $("perf-range").value + ($("perf-route").value ? "-" + $("perf-route").value.replace(/[^\w.-]/g, "_") : "") + "." + format;
      const blob = new Blob([text], { type: format === "csv" ? "text/csv" : "application/json" });
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = name;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
      say("perf-message", "Exported " + name + " (" + bytes(blob.size) + ").", "good");
    } catch (e) {
      say("perf-message", "Export failed: " + e.message, "bad");
    }
  }
  $("export-json").addEventListener("click", () => download("json"));
  $("export-csv").addEventListener("click", () => download("csv"));

  // ---- Management ------------------------------------------------------------------------

  async function loadManagement() {
    const [stats, br] = await Promise.all([api("/admin/cache/stats"), api("/admin/breakers")]);
    $("cache-state").textContent = stats.enabled ? "enabled" : "disabled (every request goes to the origin)";
    $("cache-state").className = "state " + (stats.enabled ? "enabled" : "disabled");
    $("cache-toggle").textContent = stats.enabled ? "Disable the cache" : "Enable the cache";
    $("cache-toggle").dataset.enabled = String(stats.enabled);
    $("cache-toggle").classList.toggle("danger", stats.enabled);
    const body = $("mgmt-breakers-body");
    body.replaceChildren();
    for (const b of br.breakers || []) {
      const tr = document.createElement("tr");
      tr.dataset.upstream = b.upstream;
      td(tr, b.upstream);
      td(tr, stateSpan(b.state + (b.forced ? " (forced)" : "")));
      td(tr, b.trips, "num");
      const a = td(tr, "", "actions");
      a.append(button("Open", "open", "danger"), button("Close", "close"), button("Reset", "reset"));
      body.appendChild(tr);
    }
  }

  $("mgmt-breakers-body").addEventListener("click", async (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    const up = b.closest("tr").dataset.upstream;
    try {
      const r = await api("/admin/breakers/" + encodeURIComponent(up) + "/" + b.dataset.action, { method: "POST" });
      say("breaker-result", "Breaker of " + up + " is now " + r.state + ".", "good");
      await loadManagement();
    } catch (e) { say("breaker-result", e.message, "bad"); }
  });

  function purgeBody(dryRun) {
    const kind = $("purge-kind").value, value = $("purge-value").value.trim();
    const b = { soft: $("purge-soft").checked, dry_run: dryRun };
    b[kind] = value;
    return b;
  }
  let dryRunFor = null;
  function resetPurge() { dryRunFor = null; $("purge-confirm").disabled = true; $("purge-confirm").textContent = "Purge"; }
  ["purge-kind", "purge-value", "purge-soft"].forEach((id) => $(id).addEventListener("input", resetPurge));
  $("purge-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    resetPurge();
    try {
      const r = await api("/admin/cache/purge", { method: "POST", json: purgeBody(true) });
      dryRunFor = JSON.stringify(purgeBody(false));
      const n = r.purged;
      say("purge-result", "Dry run: " + plural(n, "entry", "entries") + " (" + plural(r.keys, "key", "keys") + ") would be " + (r.soft ? "marked stale" : "removed") + "." +
        (r.confirm_required ? " That is everything: use the emergency clear below." : ""), n ? "" : "bad");
      if (!r.confirm_required) {
        $("purge-confirm").disabled = false;
        $("purge-confirm").textContent = "Purge " + plural(n, "entry", "entries");
      }
    } catch (e) { say("purge-result", e.message, "bad"); }
  });
  $("purge-confirm").addEventListener("click", async () => {
    if (!dryRunFor) return;
    try {
      const r = await api("/admin/cache/purge", { method: "POST", json: JSON.parse(dryRunFor) });
      say("purge-result", (r.soft ? "Soft-purged " : "Purged ") + plural(r.purged, "entry", "entries") + "." +
        (r.shared && r.shared.error ? " Shared tier: " + r.shared.error : ""), "good");
    } catch (e) { say("purge-result", e.message, "bad"); }
    resetPurge();
  });

  $("warm-kind").addEventListener("change", () => {
    const urls = $("warm-kind").value === "urls";
    $("warm-urls").hidden = !urls;
    $("warm-from").hidden = urls;
    $("warm-top-label").hidden = urls;
  });
  $("warm-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = $("warm-kind").value === "urls"
      ? { urls: $("warm-urls").value.split(/\s+/).filter(Boolean) }
      : { from: $("warm-from").value.trim(), top: Number($("warm-top").value) || 1000 };
    try {
      const { id } = await api("/admin/cache/warm", { method: "POST", json: body });
      $("warm-progress").hidden = false;
      $("warm-start").disabled = true;
      for (let i = 0; i < 7200; i++) {
        const j = await api("/admin/cache/warm/" + id);
        $("warm-progress").max = Math.max(j.total, 1);
        $("warm-progress").value = j.total ? j.done : 0;
        say("warm-status", "Warm-up " + id + ": " + j.state + ", " + j.done + (j.total ? "/" + j.total : "") + " handled, " + j.imported + " stored, " + j.errors + " failed" + (j.error ? " (" + j.error + ")" : "") + ".",
          j.state === "failed" ? "bad" : j.state === "done" ? "good" : "");
        if (j.state !== "running") break;
        await new Promise((r) => setTimeout(r, 500));
      }
    } catch (e) { say("warm-status", e.message, "bad"); }
    $("warm-start").disabled = false;
  });

  $("cache-toggle").addEventListener("click", async () => {
    const on = $("cache-toggle").dataset.enabled === "true";
    try {
      await api("/admin/cache/" + (on ? "disable" : "enable"), { method: "POST" });
      say("cache-toggle-result", on ? "Cache disabled: Seawall is a plain proxy now." : "Cache enabled.", "good");
      await loadManagement();
    } catch (e) { say("cache-toggle-result", e.message, "bad"); }
  });

  $("reload").addEventListener("click", async () => {
    const out = $("reload-result");
    out.hidden = false;
    try {
      const r = await api("/admin/reload", { method: "POST" });
      out.textContent = JSON.stringify(r, null, 2);
      out.classList.remove("error");
    } catch (e) {
      out.textContent = "Reload refused (" + e.status + "): " + e.message;
      out.classList.add("error");
    }
  });

  $("clear-confirm").addEventListener("input", () => { $("clear-submit").disabled = $("clear-confirm").value !== "CLEAR-ALL"; });
  $("clear-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if ($("clear-confirm").value !== "CLEAR-ALL") return;
    try {
      const r = await api("/admin/cache/clear", { method: "POST", json: { confirm: "CLEAR-ALL", soft: $("clear-soft").checked } });
      say("clear-result", "Cleared: " + plural(r.purged, "entry", "entries") + (r.soft ? " marked stale." : " removed."), "good");
    } catch (e) { say("clear-result", e.message, "bad"); }
    $("clear-confirm").value = "";
    $("clear-submit").disabled = true;
  });

  // ---- Maintenance & health --------------------------------------------------------------

  async function loadHealth() {
    const [st, stats, br, tls, alerts] = await Promise.all([
      api("/admin/status"), api("/admin/cache/stats"), api("/admin/breakers"),
      api("/admin/tls").catch(() => null), api("/admin/alerts?history=1").catch(() => null),
    ]);
    const facts = (id, pairs) => {
      const dl = $(id);
      dl.replaceChildren();
      for (const [k, v, cls] of pairs) {
        const dt = document.createElement("dt"); dt.textContent = k;
        const dd = document.createElement("dd");
        dd.dataset.fact = k;
        if (cls) dd.appendChild(stateSpan(v)); else dd.textContent = v;
        dl.append(dt, dd);
      }
    };
    const comp = st.components || {};
    facts("health-components", [
      ["overall", st.healthy ? "ok" : "degraded", true],
      ["cache", comp.cache || (stats.enabled ? "ok" : "disabled"), true],
      // A shared tier that is not configured is no fault: plain text, not a red state.
      ["shared tier", comp.shared_tier || "disabled", !!comp.shared_tier && comp.shared_tier !== "disabled"],
      ["trace exporter", comp.trace_exporter || "–"],
      ["phase", st.phase + (st.ready ? ", ready" : ", not ready")],
      ["version", st.version],
      ["slot", $("build").dataset.slot || "none"],
      ["uptime", secs(st.uptime_secs)],
      ["hit ratio (" + secs(st.window_secs) + ")", st.hit_ratio == null ? "not enough requests" : (st.hit_ratio * 100).toFixed(1) + " %"],
    ]);
    const used = stats.bytes || 0, cap = stats.capacity || 0;
    $("health-memory").max = Math.max(cap, 1);
    $("health-memory").value = used;
    $("health-memory-text").textContent = bytes(used) + " of " + bytes(cap) + " (" + (cap ? ((used / cap) * 100).toFixed(1) : "0") + " %), " +
      plural(stats.entries, "entry", "entries") + ", " + bytes(stats.inflight_fill_bytes) + " filling";
    const ev = stats.evictions || {};
    facts("health-evictions", [["evicted for size", ev.size], ["expired", ev.expired], ["purged or replaced", ev.explicit]]);

    const body = $("health-breakers-body");
    body.replaceChildren();
    for (const b of br.breakers || []) {
      const tr = document.createElement("tr");
      tr.dataset.upstream = b.upstream;
      tr.dataset.state = b.state;
      td(tr, b.upstream);
      td(tr, stateSpan(b.state)).dataset.testid = "breaker-state";
      td(tr, b.trips, "num");
      td(tr, b.window_failures + " of " + b.window_requests, "num");
      td(tr, b.last_transition ? b.last_transition.from + " → " + b.last_transition.to + ", " + when(b.last_transition.at) : "–");
      body.appendChild(tr);
    }

    const current = (alerts && alerts.alerts) || st.alerts || [];
    const ul = $("health-alerts");
    ul.replaceChildren();
    for (const a of current) {
      const li = document.createElement("li");
      li.className = a.severity || "warning";
      li.dataset.alert = a.name;
      li.textContent = (a.severity || "warning") + ": " + a.name + " — " + (a.message || a.detail || "");
      ul.appendChild(li);
    }
    if (!current.length) {
      const li = document.createElement("li"); li.className = "none"; li.textContent = "No alerts now."; ul.appendChild(li);
    }
    const hist = $("alerts-history-body");
    hist.replaceChildren();
    // Newest first, as the API lists them.
    const items = (alerts && alerts.history) || [];
    for (const a of items) {
      const tr = document.createElement("tr");
      td(tr, when(a.at)); td(tr, a.name); td(tr, stateSpan(a.severity)); td(tr, stateSpan(a.state)); td(tr, a.detail || a.message || "");
      hist.appendChild(tr);
    }
    if (!items.length) {
      const tr = document.createElement("tr");
      td(tr, alerts ? "No alert has fired since the process started." : "Alert history unavailable.").colSpan = 5;
      hist.appendChild(tr);
    }

    const certs = (tls && tls.certificates) || [];
    $("health-tls").hidden = !(tls && tls.listener);
    const tb = $("health-tls-body");
    tb.replaceChildren();
    for (const c of certs) {
      const tr = document.createElement("tr");
      td(tr, (c.names || []).join(", ")); td(tr, c.issuer);
      td(tr, (c.not_after || "–") + (c.days_left != null ? " (" + c.days_left + " days)" : "")); td(tr, c.file, "mono");
      tb.appendChild(tr);
    }
  }

  // ---- Start -----------------------------------------------------------------------------

  const saved = sessionStorage.getItem(KEY);
  if (saved) login(saved).catch(() => logout("Your session's token is no longer accepted. Log in again."));
})();
