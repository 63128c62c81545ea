// workers/ops-dlq-page.ts — the dashboard's editor of a dead letter, served as GET /ops-dlq.js (a file of its own,
// loaded with the page's nonce: the page's Content-Security-Policy runs no inline handler). It opens on any button
// with `data-edit="<entry id>"`, draws a form from the form the API generates from the event's schema
// (GET /api/dlq/:id/edit), checks each change against the schema (POST …/check: the valibot issues, by field),
// saves the correction (…/edit), runs the dry run (…/dry-run) and only then offers the replay. Every value from the
// API goes into the page as text, never as markup. Keyboard: native controls throughout, Escape closes.

/** The editor's look, in the dashboard's own <style> (the policy applies no style the page did not carry). */
export const dlqEditorCss = `
  #dlq-editor fieldset { border: 1px solid #d5d9e2; margin: .3rem 0; padding: .3rem .6rem; }
  #dlq-editor .row { display: flex; gap: .6rem; align-items: baseline; margin: .2rem 0; flex-wrap: wrap; }
  #dlq-editor .row > label { min-width: 9rem; color: #5a6275; }
  #dlq-editor input[aria-invalid=true] { outline: 2px solid #c0392b; }
  #dlq-editor .issue { color: #c0392b; }
  #dlq-editor .ok { color: #2e7d32; }
  #dlq-editor .hint { color: #7a7f8c; font-size: .85em; }
  #dlq-editor .buttons { display: flex; gap: .6rem; margin: .6rem 0; flex-wrap: wrap; }
`

export const dlqEditorScript = String.raw`"use strict";
(() => {
const $ = (s) => document.querySelector(s);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== undefined && c !== null) e.append(c instanceof Node ? c : String(c));
  return e;
}
async function call(path, body) {
  const r = await fetch(path, body === undefined ? { headers: { accept: "application/json" } }
    : { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: r.status, body: await r.json().catch(() => ({})) };
}
const enc = encodeURIComponent;


// --- the form, drawn from the schema's form ---------------------------------------------------------------------
// render(field, value, path) → { node, value() }: each part reads itself back
function render(field, value, path, label) {
  if (field.kind === "object") {
    const parts = field.fields.map((f) => {
      const v = value && typeof value === "object" ? value[f.name] : undefined;
      return { f, part: render(f.field, v, path ? path + "." + f.name : f.name, f.name + (f.optional ? " (optional)" : "")) };
    });
    const box = el(path ? "fieldset" : "div", {}, path ? el("legend", {}, label) : null, ...parts.map((p) => p.part.node));
    return { node: box, value() {
      const out = {};
      for (const { f, part } of parts) {
        const v = part.value();
        // an empty optional field is left out; an empty required string is sent as "" (the schema says what is wrong)
        if ((v === undefined || v === "") && f.optional) continue;
        out[f.name] = v;
      }
      return out;
    } };
  }
  if (field.kind === "array") {
    const items = Array.isArray(value) ? value.slice() : [];
    const box = el("fieldset", { "data-path": path }, el("legend", {}, label + " (" + [field.minItems !== undefined ? "at least " + field.minItems : "", field.maxItems !== undefined ? "at most " + field.maxItems : ""].filter(Boolean).join(", ") + ")"));
    let parts = [];
    const draw = () => {
      box.replaceChildren(box.firstChild);
      parts = items.map((v, i) => render(field.item, v, path + "." + i, label + " " + (i + 1)));
      parts.forEach((p, i) => box.append(el("div", {}, p.node,
        el("button", { type: "button", class: "remove", onclick: () => { sync(); items.splice(i, 1); draw(); changed(); } }, "remove " + label + " " + (i + 1)))));
      box.append(el("button", { type: "button", class: "add", onclick: () => { sync(); items.push(undefined); draw(); changed(); } }, "add to " + label));
    };
    const sync = () => parts.forEach((p, i) => (items[i] = p.value()));
    draw();
    return { node: box, value: () => parts.map((p) => p.value()) };
  }
  if (field.kind === "json") {
    const area = el("textarea", { rows: 3, cols: 50, "data-path": path, "aria-label": label });
    area.value = value === undefined ? "" : JSON.stringify(value);
    area.addEventListener("input", changed);
    return { node: row(label, area, path, "JSON"), value() { try { return area.value === "" ? undefined : JSON.parse(area.value); } catch { return area.value; } } };
  }
  const id = "f-" + path.replace(/[^A-Za-z0-9]/g, "-");
  if (field.kind === "boolean") {
    const box = el("input", { type: "checkbox", id, "data-path": path });
    box.checked = value === true;
    box.addEventListener("input", changed);
    return { node: row(label, box, path, "", id), value: () => box.checked };
  }
  const number = field.kind === "number";
  const input = el("input", {
    id, "data-path": path, type: number ? "number" : "text", step: number ? (field.integer ? "1" : "any") : undefined,
    min: field.min, max: field.max, maxlength: field.maxLength, size: number ? 12 : 36, autocomplete: "off",
  });
  input.value = value === undefined || value === null ? "" : String(value);
  input.addEventListener("input", changed);
  const hint = [field.format === "date-time" ? "RFC 3339 time, e.g. 2026-11-25T08:00:00Z" : "", field.integer ? "whole number" : "",
    field.min !== undefined ? "≥ " + field.min : "", field.max !== undefined ? "≤ " + field.max : "",
    field.minLength ? "at least " + field.minLength + (field.minLength === 1 ? " character" : " characters") : "", field.maxLength ? "at most " + field.maxLength : ""].filter(Boolean).join(", ");
  return { node: row(label, input, path, hint, id), value() {
    if (!number) return input.value;
    if (input.value === "") return undefined;
    const n = Number(input.value);
    return Number.isNaN(n) ? input.value : n;
  } };
}
function row(label, control, path, hint, id) {
  return el("div", { class: "row" }, el("label", { for: id }, label), control,
    hint ? el("span", { class: "hint" }, hint) : null, el("span", { class: "issue", "data-issue": path, role: "status" }));
}

// --- the editor -------------------------------------------------------------------------------------------------
let state = null; // { id, form, saved: JSON of the stored edit, dryRun: JSON of the payload the last clean dry run ran }
let checkTimer = 0;
function changed() {
  if (!state) return;
  updateReplay();
  clearTimeout(checkTimer);
  checkTimer = setTimeout(check, 250);
}
const current = () => state.form.value();
function showIssues(issues) {
  document.querySelectorAll("#dlq-editor [data-path]").forEach((n) => n.removeAttribute("aria-invalid"));
  document.querySelectorAll("#dlq-editor [data-issue]").forEach((n) => (n.textContent = ""));
  const list = $("#dlq-issues");
  list.replaceChildren(...issues.map((i) => el("li", { class: "issue" }, (i.path || "payload") + ": " + i.message)));
  $("#dlq-valid").textContent = issues.length ? issues.length + " issue" + (issues.length === 1 ? "" : "s") : "valid";
  $("#dlq-valid").className = issues.length ? "issue" : "ok";
  for (const i of issues) {
    const input = document.querySelector('#dlq-editor [data-path="' + CSS.escape(i.path) + '"]');
    if (input) input.setAttribute("aria-invalid", "true");
    const slot = document.querySelector('#dlq-editor [data-issue="' + CSS.escape(i.path) + '"]');
    if (slot) slot.textContent = i.message;
  }
}
async function check() {
  if (!state) return;
  const r = await call("/api/dlq/" + enc(state.id) + "/check", { payload: current() });
  if (r.status === 200) showIssues(r.body.issues);
  else say(r.body.error || "check failed: " + r.status);
}
function say(text, good) {
  const m = $("#dlq-said");
  m.textContent = text;
  m.className = good ? "ok" : "issue";
}
function updateReplay() {
  const now = JSON.stringify(current());
  // replay only what was saved and dry-run as it stands now
  const ready = state.saved !== null && now === state.saved && state.dryRun === now;
  $("#dlq-replay").disabled = !ready;
  $("#dlq-replay-why").textContent = ready ? "" : state.saved !== now ? "save the correction first" : "run the dry run on the saved correction first";
}
async function save() {
  const payload = current();
  const r = await call("/api/dlq/" + enc(state.id) + "/edit", { payload });
  if (r.status !== 200) {
    if (r.body.issues) showIssues(r.body.issues);
    return say(r.body.error || "not saved: " + r.status);
  }
  state.saved = JSON.stringify(payload);
  say("saved as edit " + r.body.edit.n + " by " + r.body.edit.by, true);
  updateReplay();
  document.dispatchEvent(new Event("dlq:changed"));
}
async function dryRun() {
  const payload = current();
  const r = await call("/api/dlq/" + enc(state.id) + "/dry-run", { payload });
  const out = $("#dlq-dry");
  if (r.status !== 200) return say(r.body.error || "dry run failed: " + r.status);
  const d = r.body;
  const lines = [el("p", { class: "outcome" }, d.consumer + " handles " + d.event + ": " + d.outcome + (d.reason ? " (" + d.reason + ")" : "") + (d.error ? ": " + d.error : ""))];
  for (const i of d.issues) lines.push(el("p", { class: "issue" }, (i.path || "payload") + ": " + i.message));
  for (const n of d.notEvaluated) lines.push(el("p", { class: "issue" }, "not evaluated: " + n));
  if (d.outcome === "emits" && !d.emitted.length) lines.push(el("p", {}, "emits nothing"));
  for (const e of d.emitted)
    lines.push(el("div", { class: "emitted" }, el("p", {}, "would emit " + e.name + " on " + e.subject + " (msg id " + e.id + ")" + (e.refused ? " — refused: " + e.refused : "") + (e.invalid ? " — invalid: " + e.invalid : "")),
      el("pre", {}, JSON.stringify(e.data, null, 2))));
  out.replaceChildren(...lines);
  state.dryRun = d.outcome === "emits" && d.emitted.every((e) => !e.invalid) ? JSON.stringify(payload) : null;
  updateReplay();
}
async function replay() {
  const r = await call("/api/dlq/" + enc(state.id) + "/replay", {});
  if (r.status !== 200) return say(r.body.error || "replay failed: " + r.status);
  say(r.body.id + " replayed by " + r.body.history.at(-1).by + "; the original stays in its history", true);
  $("#dlq-replay").disabled = true;
  document.dispatchEvent(new Event("dlq:changed"));
}
function close() {
  state = null;
  const box = $("#dlq-editor");
  if (box) box.remove();
}
async function open(id, opener) {
  const r = await call("/api/dlq/" + enc(id) + "/edit");
  if (r.status !== 200) return void alertText(r.body.error || "cannot edit: " + r.status);
  close();
  const v = r.body;
  const form = render(v.form, v.payload, "", v.event);
  state = { id, form, saved: v.edited ? JSON.stringify(v.payload) : null, dryRun: null, opener };
  const box = el("section", { id: "dlq-editor", "aria-label": "correct dead letter " + id },
    el("h2", {}, "Correct " + v.event + " of ", el("code", {}, id), " ", el("span", { id: "dlq-valid" })),
    el("p", { class: "hint" }, v.edited ? "showing edit " + v.entry.edit.n + " by " + v.entry.edit.by + "; the original stays in the DLQ" : "the original payload; a saved correction is replayed instead of it, and the original stays"),
    el("form", { id: "dlq-form", onsubmit: (e) => e.preventDefault() }, form.node),
    el("ul", { id: "dlq-issues" }),
    el("div", { class: "buttons" },
      el("button", { type: "button", id: "dlq-save", onclick: save }, "save correction"),
      el("button", { type: "button", id: "dlq-dry-run", onclick: dryRun }, "dry run"),
      el("button", { type: "button", id: "dlq-replay", onclick: replay, disabled: true }, "replay"),
      el("span", { id: "dlq-replay-why", class: "hint" }),
      el("button", { type: "button", id: "dlq-close", onclick: () => { const o = state && state.opener; close(); if (o) o.focus(); } }, "close")),
    el("p", { id: "dlq-said", role: "status" }),
    el("div", { id: "dlq-dry", "aria-live": "polite" }));
  const main = document.querySelector("main");
  main.insertBefore(box, main.querySelector("section.desk") || null);
  showIssues(v.issues);
  updateReplay();
  const first = box.querySelector("input, textarea");
  if (first) first.focus();
}
function alertText(text) {
  const m = $("#message");
  if (m) { m.textContent = text; m.className = "bad"; }
}
document.addEventListener("click", (ev) => {
  const b = ev.target instanceof Element ? ev.target.closest("button[data-edit]") : null;
  if (!b) return;
  ev.stopPropagation();
  open(b.getAttribute("data-edit"), b).catch((err) => alertText(err.message));
}, true);
document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape" && state) { const o = state.opener; close(); if (o) o.focus(); }
});
})();
`
