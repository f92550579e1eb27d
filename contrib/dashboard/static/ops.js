// Operations pages: workers and queues (/workers), dead letters (/dead-letters[/<seq>]) and
// schedules (/schedules).

import { api, dash, defList, h, hub, muted, showError, timeEl, wfLink } from "./lib.js";

function table(testid, columns, tbody, extra) {
  return h(
    "div",
    { class: "table-wrap" },
    h("table", { class: ["grid", extra], testid }, h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col", class: c.cls || null }, c.label ?? c)))), tbody),
  );
}

function emptyRow(cols, text) {
  return h("tr", { class: "empty" }, h("td", { colspan: String(cols) }, text));
}

function list(values) {
  const xs = Array.isArray(values) ? values.filter((v) => v !== null && v !== undefined) : [];
  return xs.length ? h("span", { class: "tags" }, xs.map((v) => h("span", { class: "tag" }, String(v)))) : dash();
}

function num(v) {
  return v === null || v === undefined ? "—" : String(v);
}

// ---------------------------------------------------------------------------------------------
// Workers and queues
// ---------------------------------------------------------------------------------------------

function runningCell(running) {
  const xs = Array.isArray(running) ? running.filter((r) => r && typeof r === "object") : [];
  if (!xs.length) return muted("idle");
  return h(
    "ul",
    { class: "running-list" },
    xs.map((r) =>
      h(
        "li",
        null,
        r.workflow_id !== undefined && r.workflow_id !== null ? wfLink(r.workflow_id) : muted("?"),
        r.activity ? h("span", null, " · ", h("code", null, String(r.activity))) : null,
        r.attempt && r.attempt > 1 ? h("span", { class: "muted" }, ` attempt ${r.attempt}`) : null,
        r.since ? h("span", { class: "muted" }, " · ", timeEl(r.since, { relOnly: true })) : null,
      ),
    ),
  );
}

function workerRow(w) {
  const alive = w.alive !== false;
  return h(
    "tr",
    { testid: "worker-row", "data-worker-id": String(w.id ?? ""), "data-alive": alive ? "true" : "false", class: alive ? null : "lost" },
    h("td", { class: "mono" }, String(w.id ?? "—"), w.name ? h("div", { class: "muted small" }, String(w.name)) : null),
    h("td", null, w.host ? String(w.host) : dash()),
    h("td", { class: "num" }, num(w.pid)),
    h("td", null, list(w.workflow_queues)),
    h("td", null, list(w.activity_queues)),
    h("td", { class: "col-running" }, runningCell(w.running)),
    h("td", { class: "num" }, num(w.cached_workflows)),
    h("td", { class: "nowrap" }, timeEl(w.started_at)),
    h("td", { class: "nowrap" }, timeEl(w.last_seen, { relOnly: true })),
    h("td", null, h("span", { class: ["badge", alive ? "alive" : "lost"], testid: "worker-alive" }, alive ? "alive" : "lost")),
  );
}

function queueRow(q) {
  const cell = (v, warn) => h("td", { class: ["num", warn && Number(v) > 0 && "warn"] }, num(v));
  return h(
    "tr",
    { testid: "queue-row", "data-queue": String(q.name ?? "") },
    h("td", { class: "mono" }, String(q.name ?? "—")),
    cell(q.activity_backlog, true),
    cell(q.activity_in_flight),
    cell(q.workflow_backlog, true),
    cell(q.workflow_in_flight),
    cell(q.starts_waiting, true),
  );
}

export async function workersPage(root, ctx) {
  ctx.setTitle("Workers");
  const workersBody = h("tbody");
  const queuesBody = h("tbody");
  const workersNote = h("span", { class: "muted section-note", testid: "workers-summary" });
  root.append(
    h("div", { class: "page-head" }, h("h1", null, "Workers")),
    h(
      "section",
      { class: "card" },
      h("div", { class: "card-head" }, h("h2", null, "Worker processes"), workersNote),
      table(
        "workers-table",
        ["ID", "Host", "PID", "Workflow queues", "Activity queues", "Running", { label: "Cached", cls: "num" }, "Started", "Last seen", "State"],
        workersBody,
      ),
    ),
    h(
      "section",
      { class: "card" },
      h("div", { class: "card-head" }, h("h2", null, "Task queues")),
      table(
        "queues-table",
        [
          "Queue",
          { label: "Activity backlog", cls: "num" },
          { label: "Activities in flight", cls: "num" },
          { label: "Workflow backlog", cls: "num" },
          { label: "Workflow tasks in flight", cls: "num" },
          { label: "Starts waiting", cls: "num" },
        ],
        queuesBody,
      ),
    ),
  );

  function renderWorkers(data) {
    const items = data && Array.isArray(data.items) ? data.items.filter((w) => w && typeof w === "object") : [];
    workersBody.replaceChildren(...(items.length ? items.map(workerRow) : [emptyRow(10, "No workers have reported in.")]));
    const alive = items.filter((w) => w.alive !== false).length;
    workersNote.textContent = `${items.length} known, ${alive} alive`;
  }

  function renderQueues(data) {
    const items = data && Array.isArray(data.items) ? data.items.filter((q) => q && typeof q === "object") : [];
    queuesBody.replaceChildren(...(items.length ? items.map(queueRow) : [emptyRow(6, "No task queues yet.")]));
  }

  ctx.onCleanup(hub.on("workers", (d) => renderWorkers(d)));
  ctx.onCleanup(hub.on("queues", (d) => renderQueues(d)));
  const [workers, queues] = await Promise.allSettled([api("/api/workers"), api("/api/queues")]);
  if (!ctx.alive) return;
  if (workers.status === "fulfilled") renderWorkers(workers.value);
  else showError(workers.reason, "Could not list the workers");
  if (queues.status === "fulfilled") renderQueues(queues.value);
  else showError(queues.reason, "Could not list the queues");
}

// ---------------------------------------------------------------------------------------------
// Dead letters
// ---------------------------------------------------------------------------------------------

function dlPath(seq) {
  return "/dead-letters/" + encodeURIComponent(String(seq));
}

export async function deadLettersPage(root, ctx) {
  ctx.setTitle("Dead letters");
  const tbody = h("tbody");
  root.append(
    h("div", { class: "page-head" }, h("h1", null, "Dead letters"), h("span", { class: "muted" }, "messages a worker could not use, with the reason")),
    table("dead-letters-table", [{ label: "Seq", cls: "num" }, "Time", "Source", "Subject", "Reason", "Workflow", { label: "Size", cls: "num" }], tbody),
  );
  const data = await api("/api/dead-letters?limit=50");
  if (!ctx.alive) return;
  const items = data && Array.isArray(data.items) ? data.items.filter((d) => d && typeof d === "object") : [];
  tbody.replaceChildren(
    ...(items.length
      ? items.map((d) =>
          h(
            "tr",
            { testid: "dead-letter-row", "data-seq": String(d.seq ?? "") },
            h("td", { class: "num" }, d.seq !== undefined && d.seq !== null ? h("a", { href: dlPath(d.seq) }, String(d.seq)) : "—"),
            h("td", { class: "nowrap" }, timeEl(d.time)),
            h("td", null, h("span", { class: "tag" }, String(d.source ?? "?"))),
            h("td", { class: "mono small" }, String(d.subject ?? "")),
            h("td", { class: "reason" }, String(d.reason ?? "")),
            h("td", null, d.workflow_id ? wfLink(d.workflow_id) : dash()),
            h("td", { class: "num" }, num(d.size)),
          ),
        )
      : [emptyRow(7, "No dead letters. Every message was usable.")]),
  );
}

export async function deadLetterPage(root, ctx) {
  const seq = ctx.params[0];
  ctx.setTitle(`Dead letter ${seq}`);
  root.append(h("div", { class: "page-head" }, h("h1", null, `Dead letter ${seq}`), h("span", { class: "spacer" }), h("a", { href: "/dead-letters" }, "← all dead letters")));
  let d;
  try {
    d = await api("/api/dead-letters/" + encodeURIComponent(seq));
  } catch (err) {
    if (ctx.alive && err.status === 404) root.append(h("p", { class: "notice" }, "There is no dead letter with this sequence (it may have expired)."));
    throw err;
  }
  if (!ctx.alive) return;
  d = d || {};
  const headers = d.headers && typeof d.headers === "object" ? Object.entries(d.headers) : [];
  const data = d.data === null || d.data === undefined ? "" : String(d.data);
  const truncated = typeof d.size === "number" && d.size > new TextEncoder().encode(data).length;
  root.append(
    h(
      "div",
      { class: "card", testid: "dead-letter" },
      defList([
        ["Time", timeEl(d.time, { ms: true })],
        ["Source", String(d.source ?? "—")],
        ["Subject", h("code", null, String(d.subject ?? "—"))],
        ["Reason", String(d.reason ?? "—")],
        ["Workflow", d.workflow_id ? wfLink(d.workflow_id) : dash()],
        ["Size", d.size !== undefined && d.size !== null ? `${d.size} bytes` : dash()],
      ]),
    ),
    h(
      "section",
      { class: "card" },
      h("h2", null, "Headers"),
      headers.length
        ? h(
            "table",
            { class: "grid kv", testid: "dead-letter-headers" },
            h("thead", null, h("tr", null, h("th", null, "Header"), h("th", null, "Value"))),
            h(
              "tbody",
              null,
              headers.map(([k, v]) => h("tr", null, h("td", { class: "mono" }, k), h("td", { class: "mono" }, Array.isArray(v) ? v.map(String).join(", ") : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v ?? "")))),
            ),
          )
        : h("div", { testid: "dead-letter-headers" }, muted("no headers")),
    ),
    h(
      "section",
      { class: "card" },
      h("div", { class: "card-head" }, h("h2", null, "Data"), truncated ? h("span", { class: "muted section-note" }, "the first 4 KB, decoded as UTF-8") : null),
      h("pre", { class: "data", testid: "dead-letter-data" }, data),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------------------------

export async function schedulesPage(root, ctx) {
  ctx.setTitle("Schedules");
  const tbody = h("tbody");
  root.append(
    h("div", { class: "page-head" }, h("h1", null, "Schedules")),
    table("schedules-table", ["Schedule", "Workflow type", "Spec", "State", "Next run", "Last run", "Last workflow"], tbody),
  );
  async function load() {
    let data;
    try {
      data = await api("/api/schedules");
    } catch (err) {
      if (ctx.alive) showError(err, "Could not list the schedules");
      return;
    }
    if (!ctx.alive) return;
    const items = data && Array.isArray(data.items) ? data.items.filter((x) => x && typeof x === "object") : [];
    tbody.replaceChildren(
      ...(items.length
        ? items.map((sc) =>
            h(
              "tr",
              { testid: "schedule-row", "data-schedule-id": String(sc.schedule_id ?? "") },
              h("td", { class: "mono" }, String(sc.schedule_id ?? "—")),
              h("td", null, sc.workflow_type ? String(sc.workflow_type) : muted("unknown")),
              h("td", null, h("code", null, String(sc.spec ?? ""))),
              h("td", null, h("span", { class: ["badge", sc.paused ? "paused" : "active"] }, sc.paused ? "paused" : "active")),
              h("td", { class: "nowrap" }, sc.paused ? muted("—") : timeEl(sc.next_run)),
              h("td", { class: "nowrap" }, timeEl(sc.last_run)),
              h("td", null, sc.last_workflow_id ? wfLink(sc.last_workflow_id) : dash()),
            ),
          )
        : [emptyRow(7, "No schedules.")]),
    );
  }
  ctx.every(10000, load);
  await load();
}
