// The workflows list (/): filters kept in the URL, counts per status, cursor pages, live rows.

import {
  STATUSES,
  api,
  durationEl,
  fromLocalInput,
  h,
  hub,
  muted,
  parseTime,
  qs,
  showError,
  statusBadge,
  timeEl,
  toLocalInput,
  token,
  wfLink,
} from "./lib.js";

const PAGE_SIZE = 50;
const TEXT_FILTERS = ["type", "queue", "id_prefix", "started_after", "started_before"];

/** Filters from the page's query string; status may be repeated or comma separated. */
function readFilters(query) {
  const status = [];
  for (const raw of query.getAll("status")) {
    for (const part of raw.split(",")) {
      const st = part.trim();
      if (st && !status.includes(st)) status.push(st);
    }
  }
  const f = { status };
  for (const key of TEXT_FILTERS) f[key] = (query.get(key) || "").trim();
  return f;
}

function filterQuery(f) {
  const params = { status: f.status.join(",") };
  for (const key of TEXT_FILTERS) params[key] = f[key];
  return params;
}

function matches(w, f) {
  if (f.status.length && !f.status.includes(w.status)) return false;
  if (f.type && w.workflow_type !== f.type) return false;
  if (f.queue && w.task_queue !== f.queue) return false;
  if (f.id_prefix && !String(w.workflow_id ?? "").startsWith(f.id_prefix)) return false;
  const started = parseTime(w.started_at);
  const after = parseTime(f.started_after);
  const before = parseTime(f.started_before);
  if (after !== null && (started === null || started < after)) return false;
  if (before !== null && (started === null || started >= before)) return false;
  return true;
}

function rowCells(w) {
  const origin = [];
  if (w.parent_id) origin.push(h("span", { class: "origin" }, muted("child of "), wfLink(w.parent_id)));
  if (w.schedule_id) origin.push(h("span", { class: "origin" }, muted("schedule "), String(w.schedule_id)));
  return [
    h("td", { class: "col-id" }, wfLink(w.workflow_id)),
    h("td", null, w.workflow_type ? String(w.workflow_type) : muted("unknown")),
    h("td", null, w.task_queue ? String(w.task_queue) : muted("—")),
    h("td", null, statusBadge(w.status)),
    h("td", { class: "num" }, w.run ?? ""),
    h("td", { class: "nowrap" }, timeEl(w.started_at)),
    h("td", { class: "nowrap num" }, durationEl(w.started_at, w.ended_at)),
    h("td", { class: "col-origin" }, origin.length ? origin : muted("—")),
  ];
}

function fillRow(tr, w) {
  tr.setAttribute("data-workflow-id", String(w.workflow_id ?? ""));
  tr.setAttribute("data-status", String(w.status ?? ""));
  tr.replaceChildren(...rowCells(w));
}

function newRow(w) {
  const tr = h("tr", { testid: "workflow-row" });
  fillRow(tr, w);
  return tr;
}

function flash(tr) {
  tr.classList.remove("flash");
  void tr.offsetWidth; // restart the animation
  tr.classList.add("flash");
}

/** The suggestions of the type and queue inputs, from /api/workflow-types. */
function datalists(types) {
  const queues = [...new Set(types.map((t) => t.task_queue).filter(Boolean))];
  return [
    h("datalist", { id: "wf-type-options" }, types.map((t) => h("option", { value: String(t.name) }))),
    h("datalist", { id: "wf-queue-options" }, queues.map((q) => h("option", { value: String(q) }))),
  ];
}

function filterForm(f, onApply, onClear) {
  const statusBoxes = STATUSES.map((st) =>
    h(
      "label",
      { class: ["chk", "st-chk-" + st] },
      h("input", { type: "checkbox", name: "status", value: st, checked: f.status.includes(st), testid: "filter-status-" + st }),
      h("span", { class: ["dot", "st-" + st] }),
      st.replace("_", " "),
    ),
  );
  const field = (label, input) => h("label", { class: "field" }, h("span", { class: "field-label" }, label), input);
  const form = h(
    "form",
    { class: "filters", testid: "filter-form", autocomplete: "off" },
    h("fieldset", { class: "status-filter", testid: "filter-status" }, h("legend", null, "Status"), statusBoxes),
    field("Type", h("input", { type: "text", name: "type", list: "wf-type-options", value: f.type, placeholder: "any", testid: "filter-type" })),
    field("Task queue", h("input", { type: "text", name: "queue", list: "wf-queue-options", value: f.queue, placeholder: "any", testid: "filter-queue" })),
    field("ID prefix", h("input", { type: "text", name: "id_prefix", value: f.id_prefix, placeholder: "order-", testid: "filter-id-prefix" })),
    field("Started after", h("input", { type: "datetime-local", name: "started_after", step: "1", value: toLocalInput(f.started_after), testid: "filter-started-after" })),
    field("Started before", h("input", { type: "datetime-local", name: "started_before", step: "1", value: toLocalInput(f.started_before), testid: "filter-started-before" })),
    h(
      "div",
      { class: "filter-buttons" },
      h("button", { type: "submit", class: "btn primary", testid: "filter-apply" }, "Apply"),
      h("button", { type: "button", class: "btn", testid: "filter-clear", on: { click: onClear } }, "Clear"),
    ),
    datalists([]),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    const next = { status: data.getAll("status").map(String) };
    for (const key of ["type", "queue", "id_prefix"]) next[key] = String(data.get(key) || "").trim();
    next.started_after = fromLocalInput(String(data.get("started_after") || ""));
    next.started_before = fromLocalInput(String(data.get("started_before") || ""));
    onApply(next);
  });
  return form;
}

export async function workflowsPage(root, ctx) {
  ctx.setTitle("Workflows");
  const f = readFilters(ctx.query);
  const go = (next) => ctx.navigate("/" + qs(filterQuery(next)));

  const countsBar = h("div", { class: "counts", role: "group", "aria-label": "Workflows per status" });
  const total = h("span", { class: "total muted", testid: "total" });
  const formSlot = h("div", { class: "filters-slot" });
  const tbody = h("tbody");
  const table = h(
    "table",
    { class: "grid workflows", testid: "workflows-table" },
    h(
      "thead",
      null,
      h("tr", null, ["Workflow ID", "Type", "Queue", "Status", "Run", "Started", "Duration", "Origin"].map((c) => h("th", { scope: "col" }, c))),
    ),
    tbody,
  );
  const prev = h("button", { type: "button", class: "btn", testid: "prev-page", disabled: true }, "← Previous page");
  const next = h("button", { type: "button", class: "btn", testid: "next-page", disabled: true }, "Next page →");
  const pageNo = h("span", { class: "muted", testid: "page-number" });
  root.append(
    h("div", { class: "page-head" }, h("h1", null, "Workflows"), total, h("span", { class: "spacer" }), countsBar),
    formSlot,
    h("div", { class: "table-wrap" }, table),
    h("div", { class: "pager" }, prev, pageNo, next),
  );

  const state = { stack: [], cursor: null, nextCursor: null, rows: new Map(), total: null, counts: {}, full: false };

  function renderCounts() {
    const all = STATUSES.reduce((sum, st) => sum + (Number(state.counts[st]) || 0), 0);
    const only = f.status.length === 1 ? f.status[0] : null;
    const button = (key, label, n, pressed, onClick) =>
      h(
        "button",
        { type: "button", class: ["count", "st-" + token(key)], testid: "count-" + key, "data-count": n, "aria-pressed": pressed ? "true" : "false", on: { click: onClick } },
        h("span", { class: "count-label" }, label),
        h("span", { class: "count-n" }, String(n)),
      );
    const extra = Object.keys(state.counts).filter((k) => !STATUSES.includes(k));
    countsBar.replaceChildren(
      button("all", "all", all, f.status.length === 0, () => go({ ...f, status: [] })),
      ...[...STATUSES, ...extra].map((st) =>
        button(st, st.replace(/_/g, " "), Number(state.counts[st]) || 0, only === st, () => go({ ...f, status: [st] })),
      ),
    );
  }

  function renderTotal() {
    total.textContent = state.total === null || state.total === undefined ? "" : `${state.total} matching`;
  }

  function renderEmpty() {
    if (state.rows.size === 0 && !tbody.querySelector(".empty")) {
      const anyFilter = f.status.length || TEXT_FILTERS.some((k) => f[k]);
      tbody.append(h("tr", { class: "empty" }, h("td", { colspan: "8" }, anyFilter ? "No workflows match these filters." : "No workflows yet.")));
    } else if (state.rows.size > 0) {
      for (const el of tbody.querySelectorAll(".empty")) el.remove();
    }
  }

  async function load(cursor) {
    prev.disabled = next.disabled = true;
    table.classList.add("loading");
    let data;
    try {
      data = await api("/api/workflows" + qs({ ...filterQuery(f), limit: PAGE_SIZE, cursor }));
    } catch (err) {
      if (ctx.alive) showError(err, "Could not list the workflows");
      prev.disabled = state.stack.length === 0;
      next.disabled = !state.nextCursor;
      table.classList.remove("loading");
      return;
    }
    if (!ctx.alive) return;
    table.classList.remove("loading");
    data = data || {};
    const items = Array.isArray(data.items) ? data.items : [];
    state.cursor = cursor;
    state.nextCursor = data.next_cursor || null;
    state.total = data.total;
    state.full = items.length >= PAGE_SIZE || Boolean(state.nextCursor);
    if (data.counts && typeof data.counts === "object") state.counts = data.counts;
    state.rows.clear();
    tbody.replaceChildren();
    for (const w of items) {
      if (!w || typeof w !== "object") continue;
      const tr = newRow(w);
      state.rows.set(String(w.workflow_id), { tr, w });
      tbody.append(tr);
    }
    renderEmpty();
    renderCounts();
    renderTotal();
    prev.disabled = state.stack.length === 0;
    next.disabled = !state.nextCursor;
    pageNo.textContent = `page ${state.stack.length + 1}`;
  }

  next.addEventListener("click", () => {
    if (!state.nextCursor) return;
    state.stack.push(state.cursor);
    load(state.nextCursor).then(() => window.scrollTo(0, 0));
  });
  prev.addEventListener("click", () => {
    if (!state.stack.length) return;
    load(state.stack.pop()).then(() => window.scrollTo(0, 0));
  });

  function insertSorted(tr, w) {
    const started = parseTime(w.started_at);
    for (const { tr: other, w: ow } of state.rows.values()) {
      const os = parseTime(ow.started_at);
      if (started === null || os === null || os <= started) {
        tbody.insertBefore(tr, other);
        return true;
      }
    }
    if (state.full) return false; // older than every shown row: it belongs on a later page
    tbody.append(tr);
    return true;
  }

  function onWorkflow(w) {
    if (!w || typeof w !== "object" || w.workflow_id === undefined) return;
    const id = String(w.workflow_id);
    const shown = state.rows.get(id);
    if (shown) {
      const merged = { ...shown.w, ...w };
      const wasMatch = matches(shown.w, f);
      fillRow(shown.tr, merged);
      shown.w = merged;
      const isMatch = matches(merged, f);
      shown.tr.classList.toggle("stale", !isMatch);
      shown.tr.title = isMatch ? "" : "No longer matches the filters";
      if (wasMatch !== isMatch && typeof state.total === "number") state.total += isMatch ? 1 : -1;
      renderTotal();
      flash(shown.tr);
      return;
    }
    if (state.stack.length || state.cursor || !matches(w, f)) return;
    const tr = newRow(w);
    // state.rows keeps the order of the table (newest first), so rebuild it after inserting.
    if (!insertSorted(tr, w)) return;
    const order = new Map();
    for (const row of tbody.querySelectorAll("tr[data-testid='workflow-row']")) {
      const rid = row.getAttribute("data-workflow-id");
      order.set(rid, rid === id ? { tr, w } : state.rows.get(rid));
    }
    state.rows = order;
    if (typeof state.total === "number") state.total += 1;
    renderTotal();
    renderEmpty();
    flash(tr);
  }

  function onCounts(counts) {
    if (!counts || typeof counts !== "object") return;
    state.counts = counts;
    renderCounts();
  }

  renderCounts();
  ctx.onCleanup(hub.on("workflow", onWorkflow));
  ctx.onCleanup(hub.on("counts", onCounts));

  // The form first (with an empty type list), so the controls are there at once.
  const clear = () => go({ status: [], type: "", queue: "", id_prefix: "", started_after: "", started_before: "" });
  const form = filterForm(f, go, clear);
  formSlot.append(form);
  api("/api/workflow-types")
    .then((data) => {
      if (!ctx.alive) return;
      const types = data && Array.isArray(data.items) ? data.items.filter((t) => t && t.name) : [];
      // Only the suggestions change: the user may already be typing in the form.
      for (const el of form.querySelectorAll("datalist")) el.remove();
      form.append(...datalists(types));
    })
    .catch((err) => ctx.alive && showError(err, "Could not read the workflow types"));
  await load(null);
}
