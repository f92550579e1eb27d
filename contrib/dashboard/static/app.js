// DurableFuture dashboard: the single-page front end (no build step, no framework, works offline).
//
// Files: app.js (this: boot, navigation bar, router), lib.js (DOM, API client, formatting,
// messages, live streams), list.js (workflows list), workflow.js (one workflow), timeline.js
// (its SVG timeline), start.js (start form), ops.js (workers, queues, dead letters, schedules),
// charts.js (metrics). Every string from the API is inserted as text, never as HTML. The
// files are ES modules: the server must serve /static/*.js with a JavaScript MIME type.
//
// Stable data-testid attributes for browser tests:
//   layout     app-name, namespace, readonly-badge (only present when read-only), live-status
//              (data-state: connecting | live | down | off), message (the error/info area; each
//              message inside has data-kind="error|info|success"; the area's text is only the
//              messages), nav-<page> on the nav links (workflows, start, workers, metrics,
//              schedules, dead-letters)
//   list (/)   workflows-table, workflow-row (data-workflow-id, data-status), status-badge
//              (data-status; used on every page, exactly one on the workflow page),
//              count-<status> and count-all (badge buttons with data-count, aria-pressed when
//              they are the filter), total ("N matching"), filter-form, filter-status (the
//              fieldset), filter-status-<status> (its checkboxes), filter-type (text input with
//              a datalist of the known types), filter-queue, filter-id-prefix,
//              filter-started-after, filter-started-before (datetime-local), filter-apply,
//              filter-clear, next-page, prev-page, page-number
//   workflow   workflow-id, summary, actions, action-signal, signal-form, signal-name,
//              signal-payload, signal-send, action-cancel, cancel-form, cancel-reason,
//              cancel-confirm, action-restart, form-error (inline validation error), args,
//              result, failure, failure-traceback, recurring-error, timeline, timeline-bar
//              (data-kind, data-outcome, data-seq, data-attempt, data-open; child bars sit
//              inside an <a> to the child's page), timeline-workflow (the lifetime bar),
//              timeline-tooltip, history-table, history-row (data-index, data-type,
//              aria-expanded; a click or Enter toggles it), event-details (the expanded row's
//              details as pretty JSON)
//   start      start-types, start-type (links, data-type), start-form, param-<name> (the
//              input of each parameter), form-error (data-param), start-workflow-id,
//              start-task-queue, start-submit, start-args, start-kwargs (only for types
//              without a parameter list)
//   workers    workers-table, workers-summary, worker-row (data-worker-id, data-alive), worker-alive,
//              queues-table, queue-row (data-queue)
//   metrics    metrics-window, metrics-throughput (the per-minute chart), metrics-latency
//              (the percentile chart), latency-p50, latency-p90, latency-p99, latency-count,
//              metrics-totals, metrics-updated
//   dead       dead-letters-table, dead-letter-row (data-seq), dead-letter (the detail),
//              dead-letter-headers, dead-letter-data
//   schedules  schedules-table, schedule-row (data-schedule-id)

import { api, clearMessages, h, initLiveIndicator, initMessages, setCsrf, setLiveState, showError, showMessage, startTicker } from "./lib.js";
import { workflowsPage } from "./list.js";
import { workflowPage } from "./workflow.js";
import { startPage } from "./start.js";
import { deadLetterPage, deadLettersPage, schedulesPage, workersPage } from "./ops.js";
import { metricsPage } from "./charts.js";

const ROUTES = [
  [/^\/(?:workflows\/?)?$/, workflowsPage, "workflows"],
  [/^\/workflows\/(.+)$/, workflowPage, "workflows"],
  [/^\/start\/?$/, startPage, "start"],
  [/^\/start\/(.+)$/, startPage, "start"],
  [/^\/workers\/?$/, workersPage, "workers"],
  [/^\/metrics\/?$/, metricsPage, "metrics"],
  [/^\/dead-letters\/?$/, deadLettersPage, "dead-letters"],
  [/^\/dead-letters\/(.+)$/, deadLetterPage, "dead-letters"],
  [/^\/schedules\/?$/, schedulesPage, "schedules"],
];

function safeDecode(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

/** What a page gets: its parameters, the session, and a place to register its cleanups. */
class PageCtx {
  constructor(session, params) {
    this.session = session;
    this.params = params;
    this.query = new URLSearchParams(location.search);
    this.alive = true;
    this.cleanups = [];
  }

  onCleanup(fn) {
    if (this.alive) this.cleanups.push(fn);
    else fn();
  }

  every(ms, fn) {
    const id = setInterval(() => this.alive && fn(), ms);
    this.onCleanup(() => clearInterval(id));
  }

  setTitle(title) {
    const app = this.session.app ? ` · ${this.session.app}` : "";
    document.title = `${title}${app} · DurableFuture`;
  }

  navigate(path, opts) {
    navigate(path, opts);
  }

  dispose() {
    this.alive = false;
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch (err) {
        console.error(err);
      }
    }
  }
}

let session = null;
let current = null;

function render(flash) {
  if (current) current.dispose();
  clearMessages();
  setLiveState("off");
  const root = document.getElementById("page");
  root.replaceChildren();
  const path = location.pathname;
  let found = null;
  for (const [re, page, nav] of ROUTES) {
    const m = re.exec(path);
    if (m) {
      found = { page, nav, params: m.slice(1).filter((x) => x !== undefined).map(safeDecode) };
      break;
    }
  }
  for (const a of document.querySelectorAll("[data-nav]")) {
    const on = found && a.getAttribute("data-nav") === found.nav;
    a.classList.toggle("active", Boolean(on));
    if (on) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (flash) showMessage(flash.text, flash.kind || "info");
  if (!found) {
    document.title = "Not found · DurableFuture";
    root.append(h("h1", null, "Page not found"), h("p", null, "There is no dashboard page at this address. ", h("a", { href: "/" }, "Go to the workflows.")));
    return;
  }
  const ctx = new PageCtx(session, found.params);
  current = ctx;
  Promise.resolve()
    .then(() => found.page(root, ctx))
    .catch((err) => {
      if (ctx.alive) showError(err);
      if (!(err && err.name === "ApiError")) console.error(err);
    });
}

export function navigate(path, { replace = false, flash = null } = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  render(flash);
  window.scrollTo(0, 0);
}

function isAppPath(url) {
  if (url.origin !== location.origin) return false;
  const p = url.pathname;
  return !(p.startsWith("/api/") || p.startsWith("/static/") || p === "/login" || p === "/logout");
}

function onClick(ev) {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = ev.target instanceof Element ? ev.target.closest("a") : null;
  if (!a) return;
  const target = a.getAttribute("target");
  if (a.hasAttribute("download") || (target && target !== "_self")) return;
  const href = a.getAttribute("href");
  if (!href || href.startsWith("#")) return;
  const url = new URL(href, location.href);
  if (!isAppPath(url)) return;
  ev.preventDefault();
  navigate(url.pathname + url.search + url.hash);
}

function renderNav() {
  const appName = document.getElementById("app-name");
  const ns = document.getElementById("namespace");
  appName.textContent = session.app ? String(session.app) : "";
  appName.hidden = !session.app;
  ns.textContent = session.namespace ? `ns ${session.namespace}` : "";
  ns.hidden = !session.namespace;
  if (session.version) document.getElementById("brand").title = `DurableFuture ${session.version}`;
  const extras = document.getElementById("nav-extras");
  extras.replaceChildren();
  const codec = session.codec || {};
  if (codec.configured && !codec.can_decode) {
    extras.append(h("span", { class: "badge nav-note", title: "This dashboard has no key for the payload codec; arguments and results stay hidden." }, "encrypted"));
  }
  if (session.read_only) {
    extras.append(h("span", { class: "badge readonly", testid: "readonly-badge", title: "This dashboard cannot start, signal or cancel workflows." }, "read-only"));
  }
}

async function boot() {
  initMessages(document.getElementById("messages"));
  initLiveIndicator(document.getElementById("live-status"));
  startTicker();
  let flash = null;
  try {
    session = (await api("/api/session")) || {};
  } catch (err) {
    if (err && err.status === 401) return;
    session = { read_only: true };
    flash = { text: `Could not read the session, so actions are disabled: ${err.message || err}`, kind: "error" };
  }
  setCsrf(session.csrf_token);
  renderNav();
  document.addEventListener("click", onClick);
  window.addEventListener("popstate", () => render());
  render(flash);
}

boot();
