// The SVG timeline of one workflow: a time axis, one row per activity (its attempts and retries
// as bars on that row), timers, child workflows (bars linking to their page), and signals and
// cancel requests as point markers. Open spans reach "now" and grow with the ticker.

import { ENDED, fmtDuration, fmtTime, h, onTick, parseTime, s, token, wfPath } from "./lib.js";

const AXIS_H = 26;
const ROW_H = 24;
const BAR_H = 14;
const POINT_KINDS = new Set(["signal", "cancel", "workflow_task_failed"]);
const STEPS = [
  1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 108e5, 216e5,
  432e5, 864e5, 1728e5, 6048e5,
];

function str(v) {
  return v === null || v === undefined ? "" : String(v);
}

/** The row a span belongs to: [key, label]. Unknown kinds get a row of their own per name. */
function rowOf(sp) {
  const kind = str(sp.kind) || "other";
  const name = str(sp.name);
  const seq = sp.seq === null || sp.seq === undefined ? "" : String(sp.seq);
  switch (kind) {
    case "activity":
      return [`activity:${seq || name || str(sp.label)}`, `${name || "activity"}${seq ? " #" + seq : ""}`];
    case "timer":
      return [`timer:${seq || str(sp.label)}`, `timer${seq ? " #" + seq : ""}${name && name !== "timer" ? " " + name : ""}`];
    case "child":
      return [`child:${str(sp.child_id) || seq || name}`, `child ${str(sp.child_id) || name || "#" + seq}`];
    case "signal":
      return ["signal", "signals"];
    case "cancel":
      return ["cancel", "cancel requests"];
    case "workflow_task_failed":
      return ["workflow_task_failed", "workflow task failures"];
    default:
      return [`other:${kind}:${name}`, `${kind}${name ? " " + name : ""}`];
  }
}

/** An axis offset: "+500 ms", "+2 s", "+1.5 s", "+1 min 30 s". */
function tickText(ms) {
  return fmtDuration(ms).replace(/\.0 s$/, " s");
}

function fitText(text, px) {
  const max = Math.max(3, Math.floor(px / 6.6));
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

function legend() {
  const entry = (cls, label, shape = "bar") => h("span", { class: "lg" }, h("span", { class: ["lg-swatch", "lg-" + shape, cls] }), label);
  return h(
    "div",
    { class: "tl-legend", "aria-hidden": "true" },
    entry("c-completed", "completed"),
    entry("c-failed", "failed"),
    entry("c-running", "running"),
    entry("c-timed_out", "timed out"),
    entry("c-cancelled", "cancelled"),
    entry("c-timer", "timer"),
    entry("c-child", "child workflow"),
    entry("c-signal", "signal", "diamond"),
    entry("c-cancel", "cancel request", "triangle"),
    entry("c-wtf", "workflow task failed", "circle"),
  );
}

export class Timeline {
  constructor() {
    this.el = h("div", { class: "timeline", testid: "timeline" });
    this.svg = s("svg", { class: "tl-svg", role: "group", "aria-label": "Timeline of the workflow" });
    this.tip = h("div", { class: "tl-tip", testid: "timeline-tooltip", role: "tooltip", hidden: true });
    this.empty = h("p", { class: "muted tl-empty", hidden: true }, "Nothing on the timeline yet.");
    this.el.append(this.svg, this.empty, this.tip, legend());
    this.spans = [];
    this.summary = null;
    this.rows = [];
    this.items = [];
    this.tipItem = null;
    this.lastWidth = 0;
    this.ro = typeof ResizeObserver === "function" ? new ResizeObserver(() => this.onResize()) : null;
    if (this.ro) this.ro.observe(this.el);
    this.untick = onTick(() => this.isOpen() && this.layout());
  }

  destroy() {
    if (this.ro) this.ro.disconnect();
    this.untick();
  }

  onResize() {
    const w = this.el.clientWidth;
    if (w && w !== this.lastWidth) this.layout();
  }

  /** Replaces the spans (the whole timeline, as the API sends it) and redraws. */
  update(spans, summary) {
    this.spans = (Array.isArray(spans) ? spans : []).filter((sp) => sp && typeof sp === "object" && parseTime(sp.start) !== null);
    if (summary) this.summary = summary;
    this.build();
    this.layout();
  }

  workflowOpen() {
    const sm = this.summary;
    return Boolean(sm && parseTime(sm.started_at) !== null && parseTime(sm.ended_at) === null && !ENDED.has(sm.status));
  }

  isOpen() {
    return this.workflowOpen() || this.items.some((it) => it.open);
  }

  build() {
    this.hideTip();
    this.svg.replaceChildren();
    this.rows = [];
    this.items = [];
    this.gAxis = s("g", { class: "tl-axis" });
    this.gRows = s("g", { class: "tl-rows" });
    this.gItems = s("g", { class: "tl-items" });
    this.nowLine = s("line", { class: "tl-now" });
    this.svg.append(this.gRows, this.gAxis, this.nowLine, this.gItems);

    const sm = this.summary;
    if (sm && parseTime(sm.started_at) !== null) {
      const row = this.addRow(`workflow ${str(sm.workflow_type) || ""}`.trim());
      const open = parseTime(sm.ended_at) === null;
      const g = s("g", {
        class: ["tl-item", "tl-wf", "st-" + token(sm.status), open && "open"],
        testid: "timeline-workflow",
        "data-status": str(sm.status),
        tabindex: "0",
        "aria-label": `workflow ${str(sm.workflow_id)}, ${str(sm.status)}`,
      });
      const rect = s("rect", { rx: "3", height: String(BAR_H - 4) });
      g.append(rect);
      this.gItems.append(g);
      const item = {
        g,
        shape: rect,
        text: null,
        row,
        point: false,
        open,
        start: parseTime(sm.started_at),
        end: parseTime(sm.ended_at),
        span: { kind: "workflow", label: `workflow ${str(sm.workflow_id)}`, outcome: sm.status, start: sm.started_at, end: sm.ended_at },
        wf: true,
      };
      this.items.push(item);
      this.wireTip(g, item);
    }

    // Group spans into rows, ordered by their first start.
    const groups = new Map();
    for (const sp of this.spans) {
      const [key, label] = rowOf(sp);
      if (!groups.has(key)) groups.set(key, { label, spans: [] });
      groups.get(key).spans.push(sp);
    }
    const ordered = [...groups.values()].sort(
      (a, b) => Math.min(...a.spans.map((x) => parseTime(x.start))) - Math.min(...b.spans.map((x) => parseTime(x.start))),
    );
    for (const group of ordered) this.buildGroup(group);
  }

  addRow(label, sub = false) {
    const row = { index: this.rows.length, label, sub };
    this.rows.push(row);
    return row;
  }

  /** A group's bars go on one row; a bar that overlaps the previous one goes on the next row. */
  buildGroup(group) {
    const spans = [...group.spans].sort((a, b) => parseTime(a.start) - parseTime(b.start));
    const lanes = []; // [{row, end}]
    for (const sp of spans) {
      const kind = str(sp.kind) || "other";
      const start = parseTime(sp.start);
      const end = parseTime(sp.end);
      const point = POINT_KINDS.has(kind) || (!["activity", "timer", "child"].includes(kind) && end !== null && end === start);
      // lane.end: where the lane's last bar ends (null while it is open, so nothing fits after it).
      let lane = point ? lanes[0] : lanes.find((ln) => ln.end !== null && ln.end <= start);
      if (!lane) {
        lane = { row: this.addRow(lanes.length ? "" : group.label, lanes.length > 0), end: -Infinity };
        lanes.push(lane);
      }
      if (!point) lane.end = end;
      this.addItem(sp, lane.row, point, start, end);
    }
  }

  addItem(sp, row, point, start, end) {
    const kind = str(sp.kind) || "other";
    const open = end === null;
    const outcome = str(sp.outcome) || (open ? "running" : "unknown");
    const attrs = {
      class: ["tl-item", "kind-" + token(kind), "out-" + token(outcome), open && !point && "open", point && "point"],
      testid: "timeline-bar",
      "data-kind": kind,
      "data-outcome": outcome,
      "data-seq": sp.seq === null || sp.seq === undefined ? null : String(sp.seq),
      "data-attempt": sp.attempt === null || sp.attempt === undefined ? null : String(sp.attempt),
      "data-open": open ? "true" : null,
    };
    const label = str(sp.label) || `${kind} ${str(sp.name)}`.trim();
    const g = s("g", attrs);
    let shape;
    let text = null;
    if (point) {
      shape = s("path", { class: "tl-mark" });
      g.append(s("circle", { class: "tl-hit", r: "9" }), shape);
    } else {
      shape = s("rect", { rx: "2", height: String(BAR_H) });
      text = s("text", { class: "tl-bar-text" });
      g.append(shape, text);
    }
    const item = { g, shape, text, row, point, open, start, end, span: sp, label, kind };
    let outer = g;
    if (kind === "child" && sp.child_id !== null && sp.child_id !== undefined && sp.child_id !== "") {
      outer = s("a", { href: wfPath(sp.child_id), class: "tl-link", "aria-label": `${label} (open the child workflow)` }, g);
    } else {
      g.setAttribute("tabindex", "0");
      g.setAttribute("aria-label", label);
    }
    this.gItems.append(outer);
    this.items.push(item);
    this.wireTip(outer, item);
  }

  wireTip(el, item) {
    el.addEventListener("mouseenter", (ev) => this.showTip(item, ev));
    el.addEventListener("mousemove", (ev) => this.placeTip(item, ev));
    el.addEventListener("mouseleave", () => this.hideTip());
    el.addEventListener("focus", () => this.showTip(item, null));
    el.addEventListener("blur", () => this.hideTip());
  }

  tipContent(item) {
    const sp = item.span;
    const lines = [h("div", { class: "tip-title" }, item.wf ? sp.label : item.label)];
    lines.push(h("div", { class: "tip-meta" }, `${item.wf ? "workflow" : item.kind} · ${str(sp.outcome) || (item.open ? "running" : "")}`));
    if (item.point) {
      lines.push(h("div", null, fmtTime(item.start, { ms: true })));
    } else {
      const end = item.end === null ? Date.now() : item.end;
      lines.push(h("div", null, `${fmtTime(item.start, { ms: true })} → ${item.end === null ? "still open" : fmtTime(item.end, { ms: true })}`));
      lines.push(h("div", null, `${item.end === null ? "running for" : "took"} ${fmtDuration(end - item.start)}`));
    }
    if (sp.child_id) lines.push(h("div", null, `child workflow ${str(sp.child_id)} (click to open)`));
    if (sp.error) lines.push(h("div", { class: "tip-error" }, str(sp.error)));
    return lines;
  }

  showTip(item, ev) {
    this.tipItem = item;
    this.tip.replaceChildren(...this.tipContent(item));
    this.tip.hidden = false;
    this.placeTip(item, ev);
  }

  placeTip(item, ev) {
    if (this.tipItem !== item) return;
    const box = this.el.getBoundingClientRect();
    const target = item.g.getBoundingClientRect();
    let left = ev ? ev.clientX - box.left + 12 : target.left - box.left;
    const top = target.bottom - box.top + 6;
    const width = this.tip.offsetWidth || 240;
    left = Math.max(0, Math.min(left, box.width - width - 4));
    this.tip.style.left = `${Math.round(left)}px`;
    this.tip.style.top = `${Math.round(top)}px`;
  }

  hideTip() {
    this.tipItem = null;
    this.tip.hidden = true;
  }

  domain(now) {
    let t0 = Infinity;
    let t1 = -Infinity;
    for (const it of this.items) {
      t0 = Math.min(t0, it.start);
      t1 = Math.max(t1, it.end === null ? now : it.end, it.start);
    }
    if (this.isOpen()) t1 = Math.max(t1, now);
    if (t1 - t0 < 1000) t1 = t0 + 1000;
    return [t0, t1 + (t1 - t0) * 0.02];
  }

  layout() {
    const width = Math.max(420, this.el.clientWidth || 0);
    this.lastWidth = this.el.clientWidth;
    const empty = this.items.length === 0;
    this.empty.hidden = !empty;
    this.svg.classList.toggle("is-empty", empty);
    if (empty) return;
    const now = Date.now();
    const labelW = Math.min(230, Math.max(110, Math.round(width * 0.2)));
    const x0 = labelW + 10;
    const x1 = width - 14;
    const [t0, t1] = this.domain(now);
    const sx = (t) => x0 + ((t - t0) / (t1 - t0)) * (x1 - x0);
    const height = AXIS_H + this.rows.length * ROW_H + 8;
    this.svg.setAttribute("width", String(width));
    this.svg.setAttribute("height", String(height));
    this.svg.setAttribute("viewBox", `0 0 ${width} ${height}`);

    // Row stripes and labels.
    this.gRows.replaceChildren();
    for (const row of this.rows) {
      const y = AXIS_H + row.index * ROW_H;
      this.gRows.append(s("rect", { class: row.index % 2 ? "tl-stripe odd" : "tl-stripe", x: "0", y: String(y), width: String(width), height: String(ROW_H) }));
      if (row.label) {
        const t = s("text", { class: "tl-label", x: "8", y: String(y + ROW_H / 2 + 4) }, fitText(row.label, labelW - 8));
        t.append(s("title", null, row.label));
        this.gRows.append(t);
      }
    }

    // Axis: offsets from the first start.
    this.gAxis.replaceChildren();
    const target = (t1 - t0) / Math.max(2, (x1 - x0) / 95);
    const step = STEPS.find((st) => st >= target) || STEPS[STEPS.length - 1];
    this.gAxis.append(s("line", { class: "tl-axis-line", x1: String(x0), x2: String(x1), y1: String(AXIS_H - 0.5), y2: String(AXIS_H - 0.5) }));
    for (let off = 0; t0 + off <= t1; off += step) {
      const x = sx(t0 + off);
      this.gAxis.append(s("line", { class: "tl-grid", x1: String(x), x2: String(x), y1: String(AXIS_H - 5), y2: String(height - 8) }));
      // The first tick names the start time; the next ones are offsets, unless too close to it.
      if (off !== 0 && x - x0 < 112) continue;
      this.gAxis.append(
        s("text", { class: "tl-tick", x: String(x), y: String(AXIS_H - 9), "text-anchor": off === 0 ? "start" : "middle" }, off === 0 ? fmtTime(t0, { ms: true }) : "+" + tickText(off)),
      );
    }
    const showNow = this.isOpen();
    this.nowLine.setAttribute("x1", String(sx(now)));
    this.nowLine.setAttribute("x2", String(sx(now)));
    this.nowLine.setAttribute("y1", String(AXIS_H - 4));
    this.nowLine.setAttribute("y2", String(height - 8));
    this.nowLine.classList.toggle("hidden", !showNow);

    for (const it of this.items) this.place(it, sx, now, x1);
    if (this.tipItem && this.tipItem.open) this.tip.replaceChildren(...this.tipContent(this.tipItem));
  }

  place(it, sx, now, xMax) {
    const cy = AXIS_H + it.row.index * ROW_H + ROW_H / 2;
    if (it.point) {
      const x = sx(it.start);
      const r = 6;
      let d;
      if (it.kind === "signal") d = `M${x} ${cy - r} L${x + r} ${cy} L${x} ${cy + r} L${x - r} ${cy} Z`;
      else if (it.kind === "cancel") d = `M${x - r} ${cy - r + 1} L${x + r} ${cy - r + 1} L${x} ${cy + r} Z`;
      else d = `M${x - r} ${cy} a${r} ${r} 0 1 0 ${2 * r} 0 a${r} ${r} 0 1 0 ${-2 * r} 0`;
      it.shape.setAttribute("d", d);
      const hit = it.g.querySelector(".tl-hit");
      hit.setAttribute("cx", String(x));
      hit.setAttribute("cy", String(cy));
      return;
    }
    const xs = sx(it.start);
    const xe = it.end === null ? sx(now) : sx(it.end);
    const w = Math.max(3, Math.min(xe, xMax) - xs);
    const barH = it.wf ? BAR_H - 4 : BAR_H;
    it.shape.setAttribute("x", String(xs));
    it.shape.setAttribute("y", String(cy - barH / 2));
    it.shape.setAttribute("width", String(w));
    if (it.text) {
      const attempt = it.span.attempt;
      const label = it.kind === "activity" && attempt ? `attempt ${attempt}` : it.kind === "child" ? str(it.span.child_id) : "";
      const fits = label && w > label.length * 6.4 + 10;
      it.text.textContent = fits ? label : "";
      it.text.setAttribute("x", String(xs + 5));
      it.text.setAttribute("y", String(cy + 4));
    }
  }
}
