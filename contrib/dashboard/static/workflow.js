// One workflow (/workflows/<id>): summary, arguments, result or failure, actions, the history
// table and the timeline, kept live from /api/workflows/<id>/stream.

import {
  ENDED,
  Stream,
  api,
  dash,
  defList,
  durationEl,
  fieldError,
  fmtDuration,
  fmtTime,
  h,
  jsonPre,
  muted,
  parseJsonField,
  parseTime,
  showError,
  showMessage,
  statusBadge,
  timeEl,
  wfLink,
  wfPath,
} from "./lib.js";
import { Timeline } from "./timeline.js";

const HIDDEN_TEXT = "payloads are encrypted; this dashboard has no key";

function card(title, attrs, ...body) {
  return h("section", { class: "card", ...attrs }, title ? h("h2", null, title) : null, ...body);
}

function eventClass(type) {
  const t = String(type || "");
  if (/Failed|TimedOut/.test(t)) return "bad";
  if (/Completed|Fired/.test(t)) return "good";
  if (/Started|Scheduled/.test(t)) return "info";
  if (/Signal|Cancel/.test(t)) return "note";
  return "plain";
}

export async function workflowPage(root, ctx) {
  const id = ctx.params[0];
  const apiBase = "/api/workflows/" + encodeURIComponent(id);
  ctx.setTitle(`Workflow ${id}`);
  const statusSlot = h("span", { class: "head-status" });
  const actionsSlot = h("div", { class: "actions-slot" });
  root.append(
    h("div", { class: "page-head" }, h("h1", null, "Workflow ", h("code", { class: "wf-id", testid: "workflow-id" }, id)), statusSlot, h("span", { class: "spacer" }), actionsSlot),
  );

  let data;
  try {
    data = await api(apiBase);
  } catch (err) {
    if (!ctx.alive) return;
    if (err.status === 404) {
      root.append(h("p", { class: "notice" }, "There is no workflow with this id. ", h("a", { href: "/" }, "Back to the list.")));
    }
    throw err;
  }
  if (!ctx.alive) return;
  data = data || {};

  const st = {
    summary: data.summary || { workflow_id: id },
    args: data.args ?? null,
    kwargs: data.kwargs ?? null,
    hidden: Boolean(data.args_hidden),
    result: data.result ?? null,
    failure: data.failure ?? null,
    recurring: data.recurring_error ?? null,
    seq: data.history_seq ?? null,
    lastIndex: -Infinity,
    count: 0,
  };

  const recurringSlot = h("div");
  const panel = h("div", { class: "action-panel", hidden: true });
  const summaryCard = card("Summary", { testid: "summary" });
  const argsCard = card("Arguments", { testid: "args" });
  const outcomeSlot = h("div", { class: "outcome-slot" });
  const timeline = new Timeline();
  ctx.onCleanup(() => timeline.destroy());
  const rangeText = h("span", { class: "muted section-note" });
  const historyBody = h("tbody");
  const historyCount = h("span", { class: "muted section-note" });
  const expandAll = h("button", { type: "button", class: "btn small" }, "Expand all");
  const collapseAll = h("button", { type: "button", class: "btn small" }, "Collapse all");

  root.append(
    panel,
    recurringSlot,
    h("div", { class: "cols" }, summaryCard, h("div", { class: "col-stack" }, argsCard, outcomeSlot)),
    h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", null, "Timeline"), rangeText), timeline.el),
    h(
      "section",
      { class: "card" },
      h("div", { class: "card-head" }, h("h2", null, "History"), historyCount, h("span", { class: "spacer" }), expandAll, collapseAll),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "grid history", testid: "history-table" },
          h(
            "thead",
            null,
            h(
              "tr",
              null,
              h("th", { scope: "col", class: "col-index num" }, "#"),
              h("th", { scope: "col", class: "col-time" }, "Time"),
              h("th", { scope: "col", class: "col-offset num", title: "since the workflow started" }, "+"),
              h("th", { scope: "col", class: "col-type" }, "Type"),
              h("th", { scope: "col" }, "Summary"),
            ),
          ),
          historyBody,
        ),
      ),
    ),
  );

  // ---- rendering ---------------------------------------------------------------------------

  function renderHead() {
    const badge = statusBadge(st.summary.status);
    badge.classList.add("big");
    statusSlot.replaceChildren(badge);
  }

  function renderSummary() {
    const sm = st.summary;
    const ended = parseTime(sm.ended_at) !== null;
    summaryCard.replaceChildren(
      h("h2", null, "Summary"),
      defList([
        ["Type", sm.workflow_type ? String(sm.workflow_type) : muted("unknown (cannot be decoded)")],
        ["Task queue", sm.task_queue ? String(sm.task_queue) : dash()],
        ["Run", sm.run ?? dash()],
        ["Started", timeEl(sm.started_at, { ms: true })],
        ["Ended", ended ? timeEl(sm.ended_at, { ms: true }) : muted(ENDED.has(sm.status) ? "—" : "not yet")],
        ["Duration", durationEl(sm.started_at, sm.ended_at)],
        ["Parent", sm.parent_id ? wfLink(sm.parent_id) : dash()],
        ["Schedule", sm.schedule_id ? String(sm.schedule_id) : dash()],
        ["History", `${st.count} events${st.seq !== null ? ` · stream seq ${st.seq}` : ""}`],
      ]),
    );
  }

  function renderArgs() {
    const body = [];
    const noArgs = (!Array.isArray(st.args) || st.args.length === 0) && (!st.kwargs || Object.keys(st.kwargs).length === 0);
    if (st.hidden) body.push(h("p", { class: "hidden-note" }, HIDDEN_TEXT));
    else if (noArgs) body.push(muted(st.args === null && st.kwargs === null ? "none recorded" : "no arguments"));
    else {
      if (Array.isArray(st.args) && st.args.length) body.push(h("div", { class: "sub" }, "positional"), jsonPre(st.args));
      if (st.kwargs && Object.keys(st.kwargs).length) body.push(h("div", { class: "sub" }, "keyword"), jsonPre(st.kwargs));
    }
    argsCard.replaceChildren(h("h2", null, "Arguments"), ...body);
  }

  function renderOutcome() {
    const status = st.summary.status;
    const out = [];
    if (st.failure) {
      const f = st.failure;
      out.push(
        card(
          "Failure",
          { testid: "failure", class: "card failure" },
          h("div", { class: "err-line" }, h("strong", null, String(f.type || "Error")), f.message ? `: ${f.message}` : ""),
          f.traceback ? h("pre", { class: "traceback", testid: "failure-traceback" }, String(f.traceback)) : muted("no traceback recorded"),
        ),
      );
    }
    if (status === "completed" || (st.result !== null && st.result !== undefined)) {
      out.push(card("Result", { testid: "result" }, st.hidden ? h("p", { class: "hidden-note" }, HIDDEN_TEXT) : jsonPre(st.result)));
    } else if (!st.failure) {
      const text = ENDED.has(status) ? `Ended as ${String(status).replace("_", " ")}, with no result.` : "No result yet.";
      out.push(card("Result", { class: "card pending" }, muted(text)));
    }
    outcomeSlot.replaceChildren(...out);

    recurringSlot.replaceChildren();
    if (st.recurring || status === "failing") {
      const r = st.recurring || {};
      recurringSlot.append(
        h(
          "div",
          { class: "alert failing", testid: "recurring-error", role: "alert" },
          h("div", { class: "alert-title" }, "This workflow is failing: the same error keeps recurring and it will keep retrying."),
          r.type || r.message
            ? h("div", { class: "err-line" }, h("strong", null, String(r.type || "Error")), r.message ? `: ${r.message}` : "")
            : muted("The error was not reported."),
        ),
      );
    }
  }

  function renderRange() {
    const sm = st.summary;
    const start = parseTime(sm.started_at);
    if (start === null) {
      rangeText.textContent = "";
      return;
    }
    const end = parseTime(sm.ended_at);
    rangeText.textContent = end === null
      ? `started ${fmtTime(start, { ms: true })}, still going`
      : `${fmtTime(start, { ms: true })} → ${fmtTime(end, { ms: true })} · ${fmtDuration(end - start)}`;
  }

  function detailsRow(ev) {
    let body;
    if (ev.details === null || ev.details === undefined) {
      body = h("div", { class: "muted", testid: "event-details" }, st.hidden ? `hidden: ${HIDDEN_TEXT}` : "no details");
    } else {
      body = jsonPre(ev.details, { testid: "event-details" });
    }
    return h("tr", { class: "ev-details" }, h("td", { colspan: "5" }, body));
  }

  function toggle(tr, ev, force) {
    const open = tr.getAttribute("aria-expanded") === "true";
    const want = force === undefined ? !open : force;
    if (want === open) return;
    tr.setAttribute("aria-expanded", want ? "true" : "false");
    if (want) tr.after(detailsRow(ev));
    else if (tr.nextElementSibling && tr.nextElementSibling.classList.contains("ev-details")) tr.nextElementSibling.remove();
  }

  function eventRow(ev) {
    const start = parseTime(st.summary.started_at);
    const t = parseTime(ev.time);
    const type = ev.type ? String(ev.type) : "unknown";
    const tr = h(
      "tr",
      {
        class: ["ev", "ev-" + eventClass(type)],
        testid: "history-row",
        "data-index": ev.index ?? "",
        "data-type": type,
        tabindex: "0",
        "aria-expanded": "false",
        title: ev.seq !== null && ev.seq !== undefined ? `stream seq ${ev.seq}` : null,
      },
      h("td", { class: "num nowrap" }, h("span", { class: "caret", "aria-hidden": "true" }), String(ev.index ?? "")),
      h("td", { class: "nowrap" }, timeEl(ev.time, { rel: false, ms: true })),
      h("td", { class: "num nowrap muted" }, start !== null && t !== null ? "+" + fmtDuration(t - start) : ""),
      h("td", { class: "nowrap" }, h("span", { class: "ev-type" }, type)),
      h("td", { class: "ev-summary" }, ev.summary ? String(ev.summary) : ""),
    );
    tr.addEventListener("click", (e) => {
      if (e.target instanceof Element && e.target.closest("a")) return;
      toggle(tr, ev);
    });
    tr.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        toggle(tr, ev);
      }
    });
    tr._event = ev;
    return tr;
  }

  function appendEvents(events, live = false) {
    if (!Array.isArray(events)) return;
    const fresh = events
      .filter((ev) => ev && typeof ev === "object" && Number.isFinite(Number(ev.index)) && Number(ev.index) > st.lastIndex)
      .sort((a, b) => Number(a.index) - Number(b.index));
    for (const ev of fresh) {
      if (Number(ev.index) <= st.lastIndex) continue; // a duplicate inside one message
      historyBody.querySelector(".empty")?.remove();
      const tr = eventRow(ev);
      historyBody.append(tr);
      if (live) tr.classList.add("flash");
      st.lastIndex = Number(ev.index);
      st.count += 1;
    }
    if (st.count === 0 && !historyBody.querySelector(".empty")) {
      historyBody.append(h("tr", { class: "empty" }, h("td", { colspan: "5" }, "No events.")));
    }
    historyCount.textContent = `${st.count} events`;
  }

  expandAll.addEventListener("click", () => {
    for (const tr of historyBody.querySelectorAll("tr.ev")) toggle(tr, tr._event, true);
  });
  collapseAll.addEventListener("click", () => {
    for (const tr of historyBody.querySelectorAll("tr.ev")) toggle(tr, tr._event, false);
  });

  // ---- actions -----------------------------------------------------------------------------

  function closePanel() {
    panel.hidden = true;
    panel.replaceChildren();
    for (const b of actionsSlot.querySelectorAll("[aria-expanded]")) b.setAttribute("aria-expanded", "false");
  }

  function openPanel(button, form) {
    const wasOpen = button.getAttribute("aria-expanded") === "true";
    closePanel();
    if (wasOpen) return;
    button.setAttribute("aria-expanded", "true");
    panel.append(form);
    panel.hidden = false;
    const first = form.querySelector("input, textarea");
    if (first) first.focus();
  }

  function signalForm() {
    const name = h("input", { type: "text", name: "name", required: true, placeholder: "approve", testid: "signal-name", autocomplete: "off" });
    const payload = h("textarea", { name: "payload", rows: "4", placeholder: '{"approved": true}   (empty sends null)', testid: "signal-payload", spellcheck: "false" });
    const nameErr = h("div");
    const payloadErr = h("div");
    const send = h("button", { type: "submit", class: "btn primary", testid: "signal-send" }, "Send signal");
    const form = h(
      "form",
      { class: "panel-form", testid: "signal-form", novalidate: true },
      h("h2", null, "Send a signal"),
      h("label", { class: "field" }, h("span", { class: "field-label" }, "Signal name", h("span", { class: "req", title: "required" }, " *")), name),
      nameErr,
      h("label", { class: "field" }, h("span", { class: "field-label" }, "Payload (JSON)"), payload),
      payloadErr,
      h("div", { class: "form-buttons" }, send, h("button", { type: "button", class: "btn", on: { click: closePanel } }, "Close")),
    );
    payload.addEventListener("input", () => fieldError(payloadErr, "", payload));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      fieldError(nameErr, "", name);
      fieldError(payloadErr, "", payload);
      const signalName = name.value.trim();
      if (!signalName) return fieldError(nameErr, "Give the signal a name.", name);
      const parsed = parseJsonField(payload.value, null);
      if (!parsed.ok) return fieldError(payloadErr, `The payload is not valid JSON: ${parsed.error}`, payload);
      send.disabled = true;
      try {
        await api(apiBase + "/signal", { method: "POST", body: { name: signalName, payload: parsed.value } });
        if (!ctx.alive) return;
        showMessage(`Signal "${signalName}" sent.`, "success");
        closePanel();
      } catch (err) {
        if (ctx.alive) showError(err, "Could not send the signal");
      } finally {
        send.disabled = false;
      }
    });
    return form;
  }

  function cancelForm() {
    const reason = h("input", { type: "text", name: "reason", placeholder: "why (optional)", testid: "cancel-reason", autocomplete: "off" });
    const confirm = h("button", { type: "submit", class: "btn danger", testid: "cancel-confirm" }, "Cancel the workflow");
    const form = h(
      "form",
      { class: "panel-form", testid: "cancel-form" },
      h("h2", null, "Cancel this workflow?"),
      h("p", { class: "muted" }, "The workflow's code receives a cancellation request and can clean up before it ends as cancelled."),
      h("label", { class: "field" }, h("span", { class: "field-label" }, "Reason"), reason),
      h("div", { class: "form-buttons" }, confirm, h("button", { type: "button", class: "btn", on: { click: closePanel } }, "Keep it running")),
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      confirm.disabled = true;
      try {
        await api(apiBase + "/cancel", { method: "POST", body: { reason: reason.value.trim() } });
        if (!ctx.alive) return;
        showMessage("Cancellation requested.", "success");
        closePanel();
      } catch (err) {
        if (ctx.alive) showError(err, "Could not cancel");
      } finally {
        confirm.disabled = false;
      }
    });
    return form;
  }

  function renderActions() {
    if (ctx.session.read_only) return;
    const signal = h("button", { type: "button", class: "btn", testid: "action-signal", "aria-expanded": "false" }, "Signal…");
    const cancel = h("button", { type: "button", class: "btn danger-outline", testid: "action-cancel", "aria-expanded": "false" }, "Cancel…");
    const restart = h("button", { type: "button", class: "btn", testid: "action-restart", title: "Start a new workflow of the same type with the same arguments" }, "Start again");
    signal.addEventListener("click", () => openPanel(signal, signalForm()));
    cancel.addEventListener("click", () => openPanel(cancel, cancelForm()));
    restart.addEventListener("click", async () => {
      restart.disabled = true;
      try {
        const res = await api(apiBase + "/restart", { method: "POST", body: {} });
        if (!ctx.alive) return;
        const newId = res && res.workflow_id;
        if (newId === undefined || newId === null) throw new Error("The server did not say which workflow it started.");
        ctx.navigate(wfPath(newId), { flash: { text: `Started again as ${newId}.`, kind: "success" } });
      } catch (err) {
        if (ctx.alive) showError(err, "Could not start it again");
        restart.disabled = false;
      }
    });
    actionsSlot.append(h("div", { class: "actions", testid: "actions" }, signal, cancel, restart));
    openOnly = [signal, cancel];
    syncActions();
  }

  // Signal and cancel are for open workflows: an ended one hides them (the API would say 409).
  let openOnly = [];
  function syncActions() {
    const ended = ENDED.has(st.summary && st.summary.status);
    for (const button of openOnly) {
      button.hidden = ended;
      if (ended && button.getAttribute("aria-expanded") === "true") closePanel();
    }
  }

  // ---- live --------------------------------------------------------------------------------

  function applyUpdate(u) {
    if (!u || typeof u !== "object") return;
    if (u.summary && typeof u.summary === "object") st.summary = { ...st.summary, ...u.summary };
    if ("result" in u) st.result = u.result ?? null;
    if ("failure" in u) st.failure = u.failure ?? null;
    if ("recurring_error" in u) st.recurring = u.recurring_error ?? null;
    if ("history_seq" in u) st.seq = u.history_seq ?? st.seq;
    appendEvents(u.events, true);
    syncActions();
    renderHead();
    renderSummary();
    renderOutcome();
    renderRange();
    if (Array.isArray(u.timeline)) timeline.update(u.timeline, st.summary);
    else timeline.update(timeline.spans, st.summary);
  }

  renderHead();
  renderActions();
  renderArgs();
  appendEvents(data.events);
  renderSummary();
  renderOutcome();
  renderRange();
  timeline.update(data.timeline, st.summary);

  const stream = new Stream(apiBase + "/stream", { update: applyUpdate });
  ctx.onCleanup(() => stream.close());
}
