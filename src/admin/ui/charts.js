// Seawall dashboard charts: small SVG line and bar charts, coloured by CSS class (no inline style).
"use strict";

const SeawallCharts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 600, H = 190, L = 52, R = 10, T = 10, B = 24;

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (parent) parent.appendChild(e);
    return e;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function clock(t, spanSecs) {
    const d = new Date(t * 1000);
    // Seconds matter only on a short span (a process that just started).
    const hm = d.toLocaleTimeString([], spanSecs < 600 ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" });
    return spanSecs > 86400 ? d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + hm : hm;
  }

  // Draws `series` ([{name, get: point => number|null}]) over `points` into the figure `fig`.
  // opts: {bars, yMax, fmt, from, to}; the SVG carries data-points (values drawn) for tests.
  function draw(fig, points, series, opts) {
    opts = opts || {};
    fig.querySelectorAll("svg, .legend").forEach((n) => n.remove());
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": fig.querySelector("figcaption")?.textContent || "chart" }, fig);
    const fmt = opts.fmt || ((v) => (Number.isInteger(v) || Math.abs(v) >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : +v.toFixed(2) + ""));
    const values = [];
    for (const s of series) for (const p of points) { const v = s.get(p); if (v != null && isFinite(v)) values.push(v); }
    const ts = points.map((p) => p.t);
    const from = opts.from ?? (ts.length ? Math.min(...ts) : 0);
    const to = Math.max(opts.to ?? (ts.length ? Math.max(...ts) : 1), from + 1);
    const yMax = opts.yMax ?? niceMax(values.length ? Math.max(...values) : 0);
    const x = (t) => L + ((t - from) / (to - from)) * (W - L - R);
    const y = (v) => T + (1 - Math.min(v, yMax) / yMax) * (H - T - B);

    for (const f of [0, 0.5, 1]) {
      const gy = y(yMax * f);
      el("line", { x1: L, x2: W - R, y1: gy, y2: gy, class: f === 0 ? "axis" : "grid-line" }, svg);
      el("text", { x: L - 6, y: gy + 4, "text-anchor": "end" }, svg).textContent = fmt(yMax * f);
    }
    el("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }, svg);
    el("text", { x: L, y: H - 6, "text-anchor": "start" }, svg).textContent = clock(from, to - from);
    el("text", { x: W - R, y: H - 6, "text-anchor": "end" }, svg).textContent = clock(to, to - from);

    svg.setAttribute("data-points", String(values.length));
    if (!values.length) {
      el("text", { x: (L + W) / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg).textContent = "no data in this range yet";
    }
    const step = opts.step || 10;
    series.forEach((s, i) => {
      const cls = "s" + (i % 6);
      if (opts.bars) {
        const bw = Math.max(1, ((W - L - R) * step) / (to - from) / series.length - 1);
        for (const p of points) {
          const v = s.get(p);
          if (v == null || !(v > 0)) continue;
          const r = el("rect", { class: "bar " + cls, x: x(p.t) + i * bw, y: y(v), width: bw, height: Math.max(1, H - B - y(v)) }, svg);
          el("title", {}, r).textContent = `${s.name}: ${fmt(v)} at ${new Date(p.t * 1000).toLocaleString()}`;
        }
        return;
      }
      // A gap in the data (null) breaks the line rather than drawing through it.
      let d = "", pen = false;
      const pts = [];
      for (const p of points) {
        const v = s.get(p);
        if (v == null || !isFinite(v)) { pen = false; continue; }
        d += (pen ? "L" : "M") + x(p.t).toFixed(1) + " " + y(v).toFixed(1);
        pen = true;
        pts.push([p, v]);
      }
      if (d) el("path", { d, class: "series " + cls }, svg);
      if (pts.length <= 120) {
        for (const [p, v] of pts) {
          const c = el("circle", { cx: x(p.t).toFixed(1), cy: y(v).toFixed(1), r: 2.5, class: "pt " + cls }, svg);
          el("title", {}, c).textContent = `${s.name}: ${fmt(v)} at ${new Date(p.t * 1000).toLocaleString()}`;
        }
      }
    });
    const legend = document.createElement("div");
    legend.className = "legend";
    series.forEach((s, i) => {
      const span = document.createElement("span");
      span.className = "s" + (i % 6);
      span.textContent = s.name;
      legend.appendChild(span);
    });
    fig.appendChild(legend);
  }

  return { draw };
})();
