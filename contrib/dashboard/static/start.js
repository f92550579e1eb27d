// The start form (/start, /start/<type>): one field per parameter of the chosen workflow type.

import { api, fieldError, h, jsonText, muted, parseJsonField, showError, showMessage, wfPath } from "./lib.js";

function compact(value) {
  try {
    return JSON.stringify(value ?? null);
  } catch {
    return String(value);
  }
}

function defaultText(p) {
  const d = p.default;
  if (d === null || d === undefined) return "";
  switch (p.kind) {
    case "str":
      return typeof d === "string" ? d : "";
    case "int":
    case "float":
      return typeof d === "number" && Number.isFinite(d) ? String(d) : "";
    default:
      return jsonText(d);
  }
}

/** One parameter's field: {el, input, read()} where read() gives {ok, value, omit, error}. */
function paramField(p) {
  const name = String(p.name);
  const kind = ["str", "int", "float", "bool", "json"].includes(p.kind) ? p.kind : "json";
  const common = { name, testid: "param-" + name, "aria-required": p.required ? "true" : null, id: "param-" + name, autocomplete: "off" };
  let input;
  if (kind === "bool") input = h("input", { ...common, type: "checkbox", checked: p.default === true });
  else if (kind === "int") input = h("input", { ...common, type: "number", step: "1", inputmode: "numeric", value: defaultText(p) });
  else if (kind === "float") input = h("input", { ...common, type: "number", step: "any", inputmode: "decimal", value: defaultText(p) });
  else if (kind === "str") input = h("input", { ...common, type: "text", value: defaultText(p) });
  else {
    input = h("textarea", { ...common, rows: "3", spellcheck: "false", placeholder: "JSON, e.g. {\"a\": 1}" });
    input.value = defaultText(p);
  }
  const err = h("div", { class: "err-slot" });
  const hint = [];
  if (p.annotation) hint.push(h("code", { class: "annotation" }, String(p.annotation)));
  if (!p.required && p.default !== undefined) hint.push(muted(`default ${compact(p.default)}`));
  if (kind === "json") hint.push(muted("JSON"));
  const labelText = [h("span", { class: "param-name" }, name), p.required ? h("span", { class: "req", title: "required" }, " *") : null];
  const control = kind === "bool" ? h("label", { class: "bool-line chk" }, input, muted("true when checked")) : input;
  const el = h("div", { class: "field param" }, h("label", { class: "field-label", for: common.id }, labelText), control, h("div", { class: "hint" }, hint), err);

  function fail(error) {
    return { ok: false, error };
  }

  function read() {
    if (kind === "bool") return { ok: true, value: input.checked };
    const raw = input.value;
    if (input.validity && input.validity.badInput) return fail(kind === "int" ? "Enter a whole number." : "Enter a number.");
    if (raw.trim() === "") {
      if (p.required) return fail("This parameter is required.");
      return { ok: true, omit: true };
    }
    if (kind === "str") return { ok: true, value: raw };
    if (kind === "int") {
      const n = Number(raw);
      if (!Number.isInteger(n)) return fail("Enter a whole number.");
      if (!Number.isSafeInteger(n)) return fail("This number is too large to send exactly from a browser.");
      return { ok: true, value: n };
    }
    if (kind === "float") {
      const n = Number(raw);
      return Number.isFinite(n) ? { ok: true, value: n } : fail("Enter a number.");
    }
    const parsed = parseJsonField(raw, null);
    return parsed.ok ? { ok: true, value: parsed.value } : fail(`Not valid JSON: ${parsed.error}`);
  }

  function check(focus) {
    const res = read();
    fieldError(err, res.ok ? "" : res.error, input, { focus, attrs: { "data-param": name } });
    return res;
  }
  input.addEventListener(kind === "bool" ? "change" : "input", () => fieldError(err, "", input));
  input.addEventListener("blur", () => kind === "json" && input.value.trim() && check(false));
  return { name, el, input, check };
}

/** For a type whose parameters are unknown: raw args and kwargs as JSON. */
function rawFields() {
  const mk = (name, label, placeholder, want) => {
    const input = h("textarea", { name, rows: "3", spellcheck: "false", placeholder, testid: "start-" + name, id: "start-" + name });
    const err = h("div", { class: "err-slot" });
    const el = h("div", { class: "field param" }, h("label", { class: "field-label", for: "start-" + name }, label), input, err);
    const check = (focus) => {
      const parsed = parseJsonField(input.value, undefined);
      let error = parsed.ok ? "" : `Not valid JSON: ${parsed.error}`;
      if (!error && parsed.value !== undefined && !want(parsed.value)) error = name === "args" ? "Enter a JSON array." : "Enter a JSON object.";
      fieldError(err, error, input, { focus, attrs: { "data-param": name } });
      return error ? { ok: false } : { ok: true, value: parsed.value, omit: parsed.value === undefined };
    };
    return { name, el, input, check, raw: true };
  };
  return [
    mk("args", "Positional arguments (JSON array)", '["Bob", 2]', Array.isArray),
    mk("kwargs", "Keyword arguments (JSON object)", '{"customer_id": "Bob"}', (v) => v !== null && typeof v === "object" && !Array.isArray(v)),
  ];
}

function startForm(type, ctx) {
  const params = Array.isArray(type.parameters) ? type.parameters.filter((p) => p && p.name !== undefined && p.name !== null) : null;
  const fields = params ? params.map(paramField) : rawFields();
  const wfId = h("input", { type: "text", name: "workflow_id", placeholder: "generated when empty", testid: "start-workflow-id", id: "start-workflow-id", autocomplete: "off" });
  const queue = h("input", { type: "text", name: "task_queue", placeholder: type.task_queue ? String(type.task_queue) : "the type's queue", testid: "start-task-queue", id: "start-task-queue", autocomplete: "off" });
  const submit = ctx.session.read_only
    ? h("p", { class: "notice" }, "This dashboard is read-only: it cannot start workflows.")
    : h("button", { type: "submit", class: "btn primary", testid: "start-submit" }, `Start ${type.name}`);
  const form = h(
    "form",
    { class: "start-form card", testid: "start-form", novalidate: true, "data-type": String(type.name) },
    h("h2", null, String(type.name)),
    type.doc ? h("p", { class: "type-doc" }, String(type.doc)) : null,
    fields.length ? h("div", { class: "params" }, fields.map((f) => f.el)) : muted("This workflow takes no parameters."),
    h(
      "div",
      { class: "advanced" },
      h("h3", null, "Options"),
      h(
        "div",
        { class: "params" },
        h("div", { class: "field" }, h("label", { class: "field-label", for: "start-workflow-id" }, "Workflow id"), wfId, h("div", { class: "hint muted" }, "Starting twice with the same id runs it once.")),
        h("div", { class: "field" }, h("label", { class: "field-label", for: "start-task-queue" }, "Task queue"), queue),
      ),
    ),
    h("div", { class: "form-buttons" }, submit),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (ctx.session.read_only) return;
    const body = { workflow_type: String(type.name) };
    let firstBad = null;
    const kwargs = {};
    for (const f of fields) {
      const res = f.check(false);
      if (!res.ok) {
        firstBad = firstBad || f.input;
        continue;
      }
      if (res.omit) continue;
      if (f.raw) body[f.name] = res.value;
      else kwargs[f.name] = res.value;
    }
    if (firstBad) {
      firstBad.focus();
      return;
    }
    if (params) body.kwargs = kwargs;
    if (wfId.value.trim()) body.workflow_id = wfId.value.trim();
    if (queue.value.trim()) body.task_queue = queue.value.trim();
    submit.disabled = true;
    try {
      const res = await api("/api/workflows", { method: "POST", body });
      if (!ctx.alive) return;
      const id = res && res.workflow_id;
      if (id === undefined || id === null) throw new Error("The server did not say which workflow it started.");
      ctx.navigate(wfPath(id), { flash: { text: `Started ${id}.`, kind: "success" } });
    } catch (err) {
      if (ctx.alive) showError(err, "Could not start the workflow");
      submit.disabled = false;
    }
  });
  return form;
}

export async function startPage(root, ctx) {
  const chosen = ctx.params.length ? ctx.params[0] : null;
  ctx.setTitle(chosen ? `Start ${chosen}` : "Start a workflow");
  root.append(h("div", { class: "page-head" }, h("h1", null, "Start a workflow")));
  const data = await api("/api/workflow-types");
  if (!ctx.alive) return;
  const types = data && Array.isArray(data.items) ? data.items.filter((t) => t && t.name !== undefined && t.name !== null) : [];
  const list = h(
    "nav",
    { class: "type-list card", testid: "start-types", "aria-label": "Workflow types" },
    h("h2", null, "Workflow types"),
    types.length ? null : muted("No workflow types are registered with this dashboard's app."),
    types.map((t) =>
      h(
        "a",
        { href: "/start/" + encodeURIComponent(String(t.name)), class: ["type-link", String(t.name) === chosen && "active"], testid: "start-type", "data-type": String(t.name), "aria-current": String(t.name) === chosen ? "page" : null },
        h("span", { class: "type-name" }, String(t.name)),
        t.doc ? h("span", { class: "type-doc" }, String(t.doc)) : null,
        t.task_queue ? h("span", { class: "type-queue" }, `queue ${t.task_queue}`) : null,
      ),
    ),
  );
  const main = h("div", { class: "start-main" });
  root.append(h("div", { class: "start-layout" }, list, main));
  if (chosen === null) {
    main.append(h("p", { class: "muted pad" }, types.length ? "Choose a workflow type to start." : ""));
    return;
  }
  const type = types.find((t) => String(t.name) === chosen);
  if (!type) {
    showMessage(`There is no workflow type "${chosen}" in this app.`, "error");
    return;
  }
  main.append(startForm(type, ctx));
}
