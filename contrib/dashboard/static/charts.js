// Metrics (/metrics): workflows started/completed/failed per minute and the latency
// percentiles, drawn in SVG, refreshed every 10 s.

import { api, fmtDuration, h, parseTime, s, showError, timeEl } from "./lib.js";

const WINDOWS = [15, 60, 180, 360, 1440];
const SERIES = [
  { key: "started", label: "started", cls: "ser-started" },
  { key: "completed", label: "completed", cls: "ser-completed" },
  { key: "failed", label: "failed", cls: "ser-failed" },
];
const MINUTE = 60000;
const pad = (n) => String(n).padStart(2, "0");

function windowLabel(minutes) {
  if (minutes === 60) return "last hour";
  return minutes < 60 || minutes % 60 ? `last ${minutes} min` : `last ${minutes / 60} h`;
}

function clock(t) {
  const d = new Date(t);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A "nice" step (1, 2, 5 × 10^k) so that max/step is about count. */
function niceStep(max, count) {
  const raw = Math.max(max, 1e-9) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/** The per-minute points over the whole window, missing minutes as zeros. */
function fillMinutes(perMinute, windowMinutes) {
  const byMinute = new Map();
  for (const p of Array.isArray(perMinute) ? perMinute : []) {
    const t = parseTime(p && p.minute);
    if (t === null) continue;
    const m = Math.floor(t / MINUTE) * MINUTE;
    byMinute.set(m, p);
  }
  let end = Math.floor(Date.now() / MINUTE) * MINUTE;
  let start = end - (Math.max(1, windowMinutes) - 1) * MINUTE;
  for (const m of byMinute.keys()) {
    end = Math.max(end, m);
    start = Math.min(start, m);
  }
  const points = [];
  for (let m = start; m <= end; m += MINUTE) {
    const p = byMinute.get(m) || {};
    const values = {};
    for (const ser of SERIES) values[ser.key] = Number(p[ser.key]) || 0;
    points.push({ t: m, values });
  }
  return points;
}

function throughputChart(container, tip, points) {
  const width = Math.max(360, container.clientWidth || 800);
  const height = 250;
  const m = { l: 46, r: 16, t: 14, b: 34 };
  const pw = width - m.l - m.r;
  const ph = height - m.t - m.b;
  const t0 = points[0].t;
  const t1 = Math.max(points[points.length - 1].t, t0 + MINUTE);
  const max = Math.max(1, ...points.flatMap((p) => SERIES.map((ser) => p.values[ser.key])));
  const yStep = Math.max(1, niceStep(max, 4));
  const yMax = Math.ceil(max / yStep) * yStep;
  const sx = (t) => m.l + ((t - t0) / (t1 - t0)) * pw;
  const sy = (v) => m.t + ph - (v / yMax) * ph;

  const svg = s("svg", { class: "chart", width: String(width), height: String(height), viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Workflows started, completed and failed per minute" });
  const grid = s("g", { class: "grid-lines" });
  for (let v = 0; v <= yMax + 1e-9; v += yStep) {
    grid.append(
      s("line", { x1: String(m.l), x2: String(width - m.r), y1: String(sy(v)), y2: String(sy(v)), class: v === 0 ? "axis" : "gridline" }),
      s("text", { x: String(m.l - 6), y: String(sy(v) + 4), "text-anchor": "end", class: "tick" }, String(Math.round(v * 100) / 100)),
    );
  }
  const spanMin = (t1 - t0) / MINUTE;
  const xStepMin = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720].find((k) => spanMin / k <= Math.max(2, pw / 80)) || 1440;
  const firstTick = Math.ceil(t0 / (xStepMin * MINUTE)) * xStepMin * MINUTE;
  for (let t = firstTick; t <= t1; t += xStepMin * MINUTE) {
    grid.append(
      s("line", { x1: String(sx(t)), x2: String(sx(t)), y1: String(m.t + ph), y2: String(m.t + ph + 4), class: "axis" }),
      s("text", { x: String(sx(t)), y: String(m.t + ph + 17), "text-anchor": "middle", class: "tick" }, clock(t)),
    );
  }
  grid.append(
    s("text", { x: String(m.l + pw), y: String(height - 3), "text-anchor": "end", class: "axis-title" }, "minute (local time)"),
    s("text", { x: "12", y: String(m.t + ph / 2), "text-anchor": "middle", class: "axis-title", transform: `rotate(-90 12 ${m.t + ph / 2})` }, "workflows / min"),
  );
  svg.append(grid);

  for (const ser of SERIES) {
    const coords = points.map((p) => `${sx(p.t).toFixed(1)},${sy(p.values[ser.key]).toFixed(1)}`).join(" ");
    const g = s("g", { class: ["series", ser.cls], "data-series": ser.key });
    g.append(s("polyline", { points: coords, class: "line" }));
    if (points.length <= 120) {
      for (const p of points) {
        if (p.values[ser.key] > 0) g.append(s("circle", { cx: String(sx(p.t)), cy: String(sy(p.values[ser.key])), r: "2.5", class: "dot" }));
      }
    }
    svg.append(g);
  }

  const guide = s("line", { class: "guide hidden", y1: String(m.t), y2: String(m.t + ph) });
  const overlay = s("rect", { x: String(m.l), y: String(m.t), width: String(pw), height: String(ph), class: "overlay" });
  svg.append(guide, overlay);
  overlay.addEventListener("mousemove", (ev) => {
    const box = svg.getBoundingClientRect();
    const x = ev.clientX - box.left;
    const t = t0 + ((x - m.l) / pw) * (t1 - t0);
    let best = points[0];
    for (const p of points) if (Math.abs(p.t - t) < Math.abs(best.t - t)) best = p;
    guide.setAttribute("x1", String(sx(best.t)));
    guide.setAttribute("x2", String(sx(best.t)));
    guide.classList.remove("hidden");
    tip.replaceChildren(
      h("div", { class: "tip-title" }, clock(best.t)),
      ...SERIES.map((ser) => h("div", null, h("span", { class: ["lg-swatch", "lg-line", ser.cls] }), `${ser.label} ${best.values[ser.key]}`)),
    );
    tip.hidden = false;
    const cbox = container.getBoundingClientRect();
    const left = Math.min(ev.clientX - cbox.left + 14, cbox.width - (tip.offsetWidth || 140) - 4);
    tip.style.left = `${Math.round(left)}px`;
    tip.style.top = `${Math.round(ev.clientY - cbox.top + 10)}px`;
  });
  overlay.addEventListener("mouseleave", () => {
    guide.classList.add("hidden");
    tip.hidden = true;
  });
  return svg;
}

function latencyChart(container, latency) {
  const keys = ["p50", "p90", "p99"];
  const vals = keys.map((k) => (typeof latency[k] === "number" && Number.isFinite(latency[k]) ? latency[k] : null));
  const width = Math.max(260, container.clientWidth || 400);
  const rowH = 26;
  const height = keys.length * rowH + 24;
  const labelW = 40;
  const valueW = 78;
  const pw = width - labelW - valueW - 8;
  const max = Math.max(1, ...vals.filter((v) => v !== null));
  const svg = s("svg", { class: "chart latency-chart", width: String(width), height: String(height), viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Latency percentiles" });
  keys.forEach((k, i) => {
    const y = 6 + i * rowH;
    const v = vals[i];
    const w = v === null ? 0 : Math.max(2, (v / max) * pw);
    svg.append(
      s("text", { x: "0", y: String(y + 15), class: "tick strong" }, k),
      s("rect", { x: String(labelW), y: String(y + 3), width: String(pw), height: "16", rx: "2", class: "track" }),
      s("rect", { x: String(labelW), y: String(y + 3), width: String(w), height: "16", rx: "2", class: ["bar", "lat-" + k].join(" ") }),
      s("text", { x: String(labelW + pw + 8), y: String(y + 15), class: "tick" }, v === null ? "—" : fmtDuration(v)),
    );
  });
  svg.append(s("text", { x: String(labelW), y: String(height - 2), class: "axis-title" }, `0 … ${fmtDuration(max)} (scale: the largest percentile)`));
  return svg;
}

export async function metricsPage(root, ctx) {
  ctx.setTitle("Metrics");
  const asked = parseInt(ctx.query.get("minutes") || "", 10);
  const minutes = WINDOWS.includes(asked) ? asked : 60;
  const select = h(
    "select",
    { testid: "metrics-window", "aria-label": "Time window" },
    WINDOWS.map((w) => h("option", { value: String(w), selected: w === minutes }, windowLabel(w))),
  );
  select.addEventListener("change", () => ctx.navigate(`/metrics?minutes=${encodeURIComponent(select.value)}`, { replace: true }));
  const updated = h("span", { class: "muted", testid: "metrics-updated" });
  const chartBox = h("div", { class: "chart-box", testid: "metrics-throughput" });
  const chartTip = h("div", { class: "tl-tip chart-tip", hidden: true });
  const totals = h("div", { class: "totals", testid: "metrics-totals" });
  const latNums = h("div", { class: "lat-nums" });
  const latBox = h("div", { class: "chart-box small", testid: "metrics-latency" });
  const legend = h(
    "div",
    { class: "chart-legend" },
    SERIES.map((ser) => h("span", { class: "lg" }, h("span", { class: ["lg-swatch", "lg-line", ser.cls] }), ser.label)),
  );
  root.append(
    h("div", { class: "page-head" }, h("h1", null, "Metrics"), select, h("span", { class: "spacer" }), updated),
    h(
      "div",
      { class: "metrics-grid" },
      h("section", { class: "card chart-card" }, h("div", { class: "card-head" }, h("h2", null, "Workflows per minute"), h("span", { class: "spacer" }), legend), h("div", { class: "chart-wrap" }, chartBox, chartTip), totals),
      h(
        "section",
        { class: "card" },
        h("div", { class: "card-head" }, h("h2", null, "Latency"), h("span", { class: "muted section-note" }, "start to end, of workflows that ended in the window")),
        latNums,
        latBox,
      ),
    ),
  );

  let last = null;
  function draw() {
    if (!last) return;
    const points = fillMinutes(last.per_minute, Number(last.window_minutes) || minutes);
    chartBox.replaceChildren(throughputChart(chartBox, chartTip, points));
    const sum = (key) => points.reduce((acc, p) => acc + p.values[key], 0);
    totals.replaceChildren(
      ...SERIES.map((ser) => h("span", { class: ["total-item", ser.cls] }, h("span", { class: "total-n" }, String(sum(ser.key))), ` ${ser.label}`)),
      h("span", { class: "muted" }, ` in the ${windowLabel(Number(last.window_minutes) || minutes)}`),
    );
    const lat = last.latency_ms && typeof last.latency_ms === "object" ? last.latency_ms : {};
    const num = (k) => (typeof lat[k] === "number" && Number.isFinite(lat[k]) ? fmtDuration(lat[k]) : "—");
    latNums.replaceChildren(
      ...["p50", "p90", "p99"].map((k) => h("div", { class: "lat-num" }, h("div", { class: "lat-label" }, k), h("div", { class: "lat-value", testid: "latency-" + k }, num(k)))),
      h("div", { class: "lat-num" }, h("div", { class: "lat-label" }, "ended"), h("div", { class: "lat-value", testid: "latency-count" }, String(lat.count ?? 0))),
    );
    latBox.replaceChildren(latencyChart(latBox, lat));
  }

  async function load() {
    try {
      last = (await api(`/api/metrics?minutes=${minutes}`)) || {};
    } catch (err) {
      if (ctx.alive) showError(err, "Could not read the metrics");
      return;
    }
    if (!ctx.alive) return;
    draw();
    updated.replaceChildren("updated ", timeEl(new Date().toISOString(), { relOnly: true }));
  }

  if (typeof ResizeObserver === "function") {
    let lastW = 0;
    const ro = new ResizeObserver(() => {
      if (chartBox.clientWidth !== lastW) {
        lastW = chartBox.clientWidth;
        draw();
      }
    });
    ro.observe(chartBox);
    ctx.onCleanup(() => ro.disconnect());
  }
  ctx.every(10000, load);
  await load();
}
