// Shared helpers of the dashboard: DOM building (text only, never HTML strings), the JSON API
// client, formatting of times and durations, the message area, live streams and the ticker.

export const STATUSES = ["running", "failing", "completed", "failed", "cancelled", "timed_out"];
export const ENDED = new Set(["completed", "failed", "cancelled", "timed_out"]);

// ---------------------------------------------------------------------------------------------
// DOM
// ---------------------------------------------------------------------------------------------

const SVG_NS = "http://www.w3.org/2000/svg";
// Attributes that must be set as properties so they reflect the live state of a control.
const PROPS = new Set(["value", "checked", "selected", "indeterminate"]);

function applyAttrs(el, attrs) {
  if (!attrs) return;
  for (const [key, val] of Object.entries(attrs)) {
    if (val === undefined || val === null || val === false) continue;
    if (key === "on") {
      for (const [name, fn] of Object.entries(val)) el.addEventListener(name, fn);
    } else if (key === "class") {
      const cls = Array.isArray(val) ? val.filter(Boolean).join(" ") : String(val);
      if (cls) el.setAttribute("class", cls);
    } else if (key === "testid") {
      el.setAttribute("data-testid", String(val));
    } else if (PROPS.has(key)) {
      el[key] = val;
    } else {
      el.setAttribute(key, val === true ? "" : String(val));
    }
  }
}

function appendKids(el, kids) {
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
}

/** Builds an HTML element; string children become text nodes, attributes go through setAttribute. */
export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  applyAttrs(el, attrs);
  appendKids(el, kids);
  return el;
}

/** Builds an SVG element the same way. */
export function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG_NS, tag);
  applyAttrs(el, attrs);
  appendKids(el, kids);
  return el;
}

/** Replaces the children of el. */
export function fill(el, ...kids) {
  el.replaceChildren();
  appendKids(el, kids);
  return el;
}

export function wfPath(id) {
  return "/workflows/" + encodeURIComponent(String(id));
}

export function wfLink(id, attrs) {
  if (id === null || id === undefined || id === "") return h("span", { class: "muted" }, "—");
  return h("a", { href: wfPath(id), class: "wf-link", ...attrs }, String(id));
}

/** A class-name-safe token for an API value (status, kind, outcome). */
export function token(v) {
  return String(v ?? "unknown").toLowerCase().replace(/[^a-z0-9_-]+/g, "-");
}

export function statusBadge(status, attrs) {
  const st = status ? String(status) : "unknown";
  return h(
    "span",
    { class: ["badge", "st-" + token(st)], testid: "status-badge", "data-status": st, ...attrs },
    st.replace(/_/g, " "),
  );
}

export function jsonText(value) {
  if (value === undefined) return "null";
  try {
    const out = JSON.stringify(value, null, 2);
    return out === undefined ? String(value) : out;
  } catch {
    return String(value);
  }
}

export function jsonPre(value, attrs) {
  return h("pre", { class: "json", ...attrs }, jsonText(value));
}

export function muted(text) {
  return h("span", { class: "muted" }, text);
}

export function dash() {
  return muted("—");
}

/** A small definition grid: [[label, node], ...]. */
export function defList(rows, attrs) {
  const dl = h("dl", { class: "deflist", ...attrs });
  for (const [label, value, extra] of rows) {
    dl.append(h("dt", null, label), h("dd", extra || null, value ?? dash()));
  }
  return dl;
}

/** An inline validation error under a field (data-testid="form-error"). */
export function fieldError(slot, text, input, { focus = true, attrs = null } = {}) {
  slot.replaceChildren();
  if (input) input.removeAttribute("aria-invalid");
  if (!text) return;
  slot.append(h("div", { class: "form-error", testid: "form-error", role: "alert", ...attrs }, text));
  if (input) {
    input.setAttribute("aria-invalid", "true");
    if (focus) input.focus();
  }
}

/** Parses a JSON text field; "" gives fallback. Returns {ok, value, error}. */
export function parseJsonField(text, fallback) {
  const src = String(text ?? "").trim();
  if (!src) return { ok: true, value: fallback };
  try {
    return { ok: true, value: JSON.parse(src) };
  } catch (err) {
    return { ok: false, error: String(err.message || err) };
  }
}

// ---------------------------------------------------------------------------------------------
// Times and durations
// ---------------------------------------------------------------------------------------------

const pad = (n, w = 2) => String(n).padStart(w, "0");

export function parseTime(iso) {
  if (iso === null || iso === undefined || iso === "") return null;
  const t = typeof iso === "number" ? iso : Date.parse(iso);
  return Number.isFinite(t) ? t : null;
}

/** Local time: "21:01:02" today, "2026-12-03 21:01:02" on another day. */
export function fmtTime(iso, { ms = false, date = false } = {}) {
  const t = parseTime(iso);
  if (t === null) return "—";
  const d = new Date(t);
  let out = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (ms) out += "." + pad(d.getMilliseconds(), 3);
  if (date || d.toDateString() !== new Date().toDateString()) {
    out = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${out}`;
  }
  return out;
}

export function fmtFull(iso) {
  const t = parseTime(iso);
  if (t === null) return "";
  return `${fmtTime(t, { ms: true, date: true })} local (${new Date(t).toISOString()} UTC)`;
}

/** Humanised duration: 850 ms, 3.2 s, 42 s, 4 min 12 s, 35 min, 2 h 5 min, 3 d 4 h. */
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "—";
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 9950) return `${(ms / 1000).toFixed(1)} s`;
  const sec = Math.round(ms / 1000);
  if (sec < 60) return `${sec} s`;
  if (sec < 600) return sec % 60 ? `${Math.floor(sec / 60)} min ${sec % 60} s` : `${sec / 60} min`;
  const min = Math.round(sec / 60);
  if (min < 60) return `${min} min`;
  if (min < 1440) return min % 60 ? `${Math.floor(min / 60)} h ${min % 60} min` : `${min / 60} h`;
  const hours = Math.round(min / 60);
  return hours % 24 ? `${Math.floor(hours / 24)} d ${hours % 24} h` : `${hours / 24} d`;
}

function coarse(ms) {
  const sec = Math.floor(ms / 1000);
  if (sec < 60) return `${sec} s`;
  const min = Math.floor(sec / 60);
  if (min < 60) return `${min} min`;
  const hours = Math.floor(min / 60);
  if (hours < 48) return `${hours} h`;
  return `${Math.floor(hours / 24)} d`;
}

/** "12 s ago", "in 5 s", "just now". */
export function fmtRel(iso) {
  const t = parseTime(iso);
  if (t === null) return "";
  const diff = Date.now() - t;
  if (Math.abs(diff) < 1000) return "just now";
  return diff > 0 ? `${coarse(diff)} ago` : `in ${coarse(-diff)}`;
}

/** A <time> with the local time and a relative hint that the ticker keeps current. */
export function timeEl(iso, { rel = true, ms = false, relOnly = false } = {}) {
  const t = parseTime(iso);
  if (t === null) return dash();
  const el = h("time", { datetime: new Date(t).toISOString(), title: fmtFull(t), class: "ts" });
  if (!relOnly) el.append(fmtTime(t, { ms }));
  if (rel || relOnly) {
    el.append(h("span", { class: relOnly ? "rel rel-only" : "rel", "data-rel": String(t) }, fmtRel(t)));
  }
  return el;
}

/** A duration that keeps growing while end is null (the ticker updates it). */
export function durationEl(startIso, endIso) {
  const start = parseTime(startIso);
  const end = parseTime(endIso);
  if (start === null) return dash();
  if (end !== null) return h("span", { class: "dur" }, fmtDuration(end - start));
  return h("span", { class: "dur open", "data-elapsed": String(start) }, fmtDuration(Date.now() - start));
}

const tickers = new Set();

/** Calls fn every second until the returned function is called. */
export function onTick(fn) {
  tickers.add(fn);
  return () => tickers.delete(fn);
}

function tick() {
  for (const el of document.querySelectorAll("[data-rel]")) {
    el.textContent = fmtRel(Number(el.getAttribute("data-rel")));
  }
  const now = Date.now();
  for (const el of document.querySelectorAll("[data-elapsed]")) {
    el.textContent = fmtDuration(now - Number(el.getAttribute("data-elapsed")));
  }
  for (const fn of [...tickers]) {
    try {
      fn(now);
    } catch (err) {
      console.error(err);
    }
  }
}

let tickTimer = null;
export function startTicker() {
  if (tickTimer === null) tickTimer = setInterval(tick, 1000);
}

/** The value of a datetime-local input for an ISO time (local wall clock, minutes). */
export function toLocalInput(iso) {
  const t = parseTime(iso);
  if (t === null) return "";
  const d = new Date(t);
  const base = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return d.getSeconds() || d.getMilliseconds() ? `${base}:${pad(d.getSeconds())}` : base;
}

/** The ISO UTC time of a datetime-local input's value, or "" when empty or invalid. */
export function fromLocalInput(value) {
  if (!value) return "";
  const d = new Date(value); // a date-time string without offset is local time
  return Number.isFinite(d.getTime()) ? d.toISOString() : "";
}

// ---------------------------------------------------------------------------------------------
// The JSON API
// ---------------------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

let csrfToken = "";
export function setCsrf(token_) {
  csrfToken = token_ || "";
}

let leaving = false;
export function goLogin() {
  if (leaving) return;
  leaving = true;
  location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
}

/** Calls the API; throws ApiError with the server's error.message. A 401 goes to the login page. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", signal };
  if (method !== "GET" && method !== "HEAD") {
    headers["Content-Type"] = "application/json";
    headers["X-CSRF-Token"] = csrfToken;
    init.body = JSON.stringify(body === undefined ? {} : body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "Cannot reach the dashboard server; check that it is running, then retry.");
  }
  if (resp.status === 401) {
    goLogin();
    throw new ApiError(401, "unauthorized", "Not logged in; going to the login page.");
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      if (resp.ok) throw new ApiError(resp.status, "bad_response", `The server's answer to ${path} is not JSON.`);
    }
  }
  if (!resp.ok) {
    const err = (data && typeof data === "object" && data.error) || {};
    const message = err.message ? String(err.message) : `${resp.status} ${resp.statusText || "error"} from ${path}`;
    throw new ApiError(resp.status, err.code ? String(err.code) : `http_${resp.status}`, message);
  }
  return data;
}

export function qs(params) {
  const out = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    out.set(k, String(v));
  }
  const str = out.toString();
  return str ? "?" + str : "";
}

// ---------------------------------------------------------------------------------------------
// The message area
// ---------------------------------------------------------------------------------------------

let messageBox = null;
export function initMessages(el) {
  messageBox = el;
}

/** Shows a message; kind is error, info or success. Errors stay until dismissed. */
export function showMessage(text, kind = "error") {
  if (!messageBox) return null;
  const msg = String(text);
  for (const old of messageBox.children) {
    if (old.getAttribute("data-kind") === kind && old.firstChild && old.firstChild.textContent === msg) old.remove();
  }
  const item = h(
    "div",
    { class: ["msg", "msg-" + kind], role: kind === "error" ? "alert" : "status", "data-kind": kind },
    h("span", { class: "msg-text" }, msg),
    h("button", { type: "button", class: "msg-close", "aria-label": "Dismiss", title: "Dismiss", on: { click: () => item.remove() } }),
  );
  messageBox.append(item);
  while (messageBox.children.length > 4) messageBox.firstElementChild.remove();
  if (kind !== "error") setTimeout(() => item.remove(), 10000);
  return item;
}

export function showError(err, prefix) {
  if (err && err.name === "AbortError") return;
  if (err && err.status === 401) return; // on the way to the login page
  const text = err && err.message ? err.message : String(err);
  showMessage(prefix ? `${prefix}: ${text}` : text, "error");
}

export function clearMessages() {
  if (messageBox) messageBox.replaceChildren();
}

// ---------------------------------------------------------------------------------------------
// Live streams (EventSource)
// ---------------------------------------------------------------------------------------------

let liveIndicator = null;
export function initLiveIndicator(el) {
  liveIndicator = el;
}

const LIVE_TEXT = { live: "live", connecting: "connecting…", down: "disconnected", off: "" };
export function setLiveState(state) {
  if (!liveIndicator) return;
  liveIndicator.setAttribute("data-state", state);
  liveIndicator.textContent = LIVE_TEXT[state] ?? state;
  liveIndicator.title =
    state === "down" ? "The live stream is down; retrying. Shown data may be stale." : state === "live" ? "Receiving live updates" : "";
}

/**
 * An EventSource that parses JSON data, dispatches named events to handlers, and reconnects
 * with backoff when the server closed it for good (checking the session first, so an expired
 * login goes to the login page instead of retrying forever).
 */
export class Stream {
  constructor(url, handlers, { onState } = {}) {
    this.url = url;
    this.handlers = handlers;
    this.onState = onState || setLiveState;
    this.closed = false;
    this.retries = 0;
    this.timer = null;
    this.es = null;
    this.state = "connecting";
    this.connect();
  }

  setState(state) {
    this.state = state;
    if (!this.closed) this.onState(state);
  }

  connect() {
    if (this.closed) return;
    this.setState("connecting");
    const es = new EventSource(this.url, { withCredentials: true });
    this.es = es;
    es.addEventListener("open", () => {
      this.retries = 0;
      this.setState("live");
    });
    es.addEventListener("error", () => {
      if (this.closed) return;
      if (es.readyState === EventSource.CLOSED) {
        this.setState("down");
        this.reconnectLater();
      } else {
        this.setState("connecting");
      }
    });
    for (const [name, fn] of Object.entries(this.handlers)) {
      es.addEventListener(name, (ev) => {
        if (this.closed) return;
        let data;
        try {
          data = JSON.parse(ev.data);
        } catch {
          return; // not JSON: nothing we can show
        }
        try {
          fn(data);
        } catch (err) {
          console.error(err);
        }
      });
    }
  }

  reconnectLater() {
    if (this.es) this.es.close();
    const delay = Math.min(30000, 1000 * 2 ** Math.min(this.retries, 5));
    this.retries += 1;
    this.timer = setTimeout(async () => {
      if (this.closed) return;
      try {
        await api("/api/session");
      } catch (err) {
        if (err && err.status === 401) return;
      }
      this.connect();
    }, delay);
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.es) this.es.close();
  }
}

/** The one connection to /api/stream, shared by the pages that need it. */
class Hub {
  constructor() {
    this.subs = new Map();
    this.stream = null;
    this.closeTimer = null;
  }

  on(name, fn) {
    clearTimeout(this.closeTimer);
    if (!this.subs.has(name)) this.subs.set(name, new Set());
    this.subs.get(name).add(fn);
    if (!this.stream) {
      const dispatch = (event) => (data) => {
        for (const sub of [...(this.subs.get(event) || [])]) sub(data);
      };
      this.stream = new Stream(
        "/api/stream",
        {
          workflow: dispatch("workflow"),
          counts: dispatch("counts"),
          workers: dispatch("workers"),
          queues: dispatch("queues"),
        },
        { onState: (state) => this.hasSubs() && setLiveState(state) },
      );
    } else {
      setLiveState(this.stream.state);
    }
    return () => this.off(name, fn);
  }

  hasSubs() {
    return [...this.subs.values()].some((x) => x.size > 0);
  }

  off(name, fn) {
    const set = this.subs.get(name);
    if (set) set.delete(fn);
    if (!this.hasSubs() && this.stream) {
      // Kept a moment so that going from one live page to another reuses the connection.
      this.closeTimer = setTimeout(() => {
        if (this.stream) this.stream.close();
        this.stream = null;
      }, 3000);
    }
  }
}

export const hub = new Hub();
