// workers/portal-page.ts — the portal's HTML: the signed-in customer's page (no build step, a small script that
// refreshes it from the JSON API) and the sign-in page. Every data value is escaped on the server and set as text in
// the browser; a Content-Security-Policy lets only the page's own script and style run.
import { parseTime } from "../contracts/mod.ts"
import type { InvoiceView, TruckView } from "./portal.ts"

const ENTITIES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }

/** For text and quoted attribute values; every data value on the page goes through it. */
export const escapeHtml = (value: unknown): string => String(value ?? "").replace(/[&<>"']/g, (c) => ENTITIES[c]!)

/** 123456, "EUR" → "EUR 1,234.56": integer arithmetic, so no float ever rounds a cent. */
export function formatCents(cents: number, currency: string): string {
  const whole = String(Math.floor(cents / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ",")
  return `${currency} ${whole}.${String(cents % 100).padStart(2, "0")}`
}

/** "2026-11-25T10:00:00.000Z" → "2026-11-25 10:00:00 UTC" (one zone for every reader, no locale guessing). */
export function formatTime(iso: string | null | undefined): string {
  const t = parseTime(iso)
  return t === undefined
    ? "—"
    : new Date(t)
        .toISOString()
        .replace("T", " ")
        .replace(/\.\d+Z$/, " UTC")
}

const CSS = `
:root{--ink:#1d2430;--mute:#5b6675;--line:#e3e7ee;--bg:#f6f8fb;--accent:#0b63ce;--warn:#b54708;--warnbg:#fff4e5}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--ink);background:var(--bg)}
header{background:#fff;border-bottom:1px solid var(--line);padding:14px 24px;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
h1{font-size:18px;margin:0}h2{font-size:16px;margin:0 0 8px}main{max-width:1100px;margin:0 auto;padding:20px 24px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:16px;margin-bottom:20px;overflow-x:auto}
table{width:100%;border-collapse:collapse}th,td{text-align:left;padding:7px 8px;border-bottom:1px solid var(--line);vertical-align:top}
td{white-space:nowrap}th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--mute)}td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:var(--mute);font-size:13px}.empty{color:var(--mute);padding:12px 8px}
.badge{display:inline-block;font-size:11px;font-weight:600;padding:1px 7px;border-radius:10px;margin-left:6px;vertical-align:1px}
.stale{background:var(--warnbg);color:var(--warn);border:1px solid #f5c58a}.tracked{background:#e8f1fd;color:var(--accent)}.planned{background:#eef0f3;color:var(--mute)}
form{display:flex;gap:8px;align-items:center;margin-bottom:10px}input{font:inherit;padding:5px 8px;border:1px solid var(--line);border-radius:6px}
button{font:inherit;padding:5px 12px;border:1px solid var(--accent);background:var(--accent);color:#fff;border-radius:6px;cursor:pointer}
#status{margin-left:auto}#status.bad{color:var(--warn)}header a{color:var(--accent)}.problem{color:var(--warn);font-weight:600}
`

/**
 * Runs in the browser. It builds every cell with textContent, never innerHTML: data can carry markup (a customer id
 * like `<script>`), and textContent shows it as text. Without a #portal element only the functions are defined, so a
 * test can run them against a stand-in document.
 */
const CLIENT = `
"use strict";
function money(cents, currency) {
  var whole = String(Math.floor(cents / 100)).replace(/\\B(?=(\\d{3})+(?!\\d))/g, ",");
  return currency + " " + whole + "." + String(cents % 100).padStart(2, "0");
}
function when(iso) {
  var d = iso ? new Date(iso) : null;
  // a time the browser cannot read (a leap second) is shown as sent
  return d === null ? "\\u2014" : isNaN(d.getTime()) ? String(iso) : d.toISOString().replace("T", " ").replace(/\\.\\d+Z$/, " UTC");
}
function cell(text, cls) {
  var td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text == null ? "\\u2014" : String(text);
  return td;
}
function badge(text, cls) {
  var b = document.createElement("span");
  b.className = "badge " + cls;
  b.textContent = text;
  return b;
}
function asOfCell(entry) {
  var td = cell(when(entry.updatedAt));
  if (entry.stale) td.appendChild(badge("stale", "stale"));
  return td;
}
function row(cells) {
  var tr = document.createElement("tr");
  cells.forEach(function (c) { tr.appendChild(c); });
  return tr;
}
function fill(id, rows, columns, emptyText) {
  var body = document.getElementById(id);
  if (rows.length === 0) {
    var td = cell(emptyText, "empty");
    td.colSpan = columns;
    rows = [row([td])];
  }
  body.replaceChildren.apply(body, rows);
}
function truckRow(t) {
  var eta = cell(when(t.eta));
  eta.appendChild(badge(t.etaSource, t.etaSource));
  return row([cell(t.truckId), cell(t.customerId), cell(t.routeId), cell(t.nextStopId),
    cell(t.remainingKm == null ? null : t.remainingKm.toFixed(1) + " km", "num"), eta, asOfCell(t)]);
}
function invoiceRow(i) {
  return row([cell(i.invoiceId), cell(i.routeId), cell(i.truckId), cell(money(i.totalCents, i.currency), "num"), asOfCell(i)]);
}
// inside a function: a global "var status" would be window.status, which turns whatever is assigned into a string
function main(page) {
  var statusLine = document.getElementById("status");
  // the session cookie goes along: the API answers for the signed-in customer only
  function get(path) {
    return fetch(path, { headers: { accept: "application/json" } }).then(function (r) {
      // the sign-in expired: the page itself then shows how to sign in again
      if (r.status === 401) location.assign("/");
      // the portal is rebuilding its data from the streams: nothing partial is shown as the whole
      if (r.status === 503) return r.json().then(function (b) { throw new Error(b && b.rebuilding ? "rebuilding, " + Math.round(100 * b.progress) + "% done" : "HTTP 503"); });
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    });
  }
  function refresh() {
    var jobs = [get("/api/trucks").then(function (d) {
      fill("trucks", d.trucks.map(truckRow), 7, "No trucks on the road.");
      document.getElementById("trucks-asof").textContent = "as of " + when(d.asOf);
    }), get("/api/invoices").then(function (d) {
      fill("invoices", d.invoices.map(invoiceRow), 5, "No invoices yet.");
      document.getElementById("invoices-asof").textContent = "as of " + when(d.asOf);
    })];
    Promise.all(jobs).then(function () {
      statusLine.className = "muted";
      statusLine.textContent = "updated " + when(new Date().toISOString());
    }, function (err) {
      statusLine.className = "muted bad";
      statusLine.textContent = "could not refresh (" + err.message + "); showing the last data";
    });
  }
  setInterval(refresh, Number(page.getAttribute("data-refresh-ms")) || 5000);
}
if (typeof document !== "undefined" && document.getElementById("portal")) main(document.getElementById("portal"));
`

/** Trusted markup: the only way past `html`'s escaping. */
class Markup {
  constructor(readonly text: string) {}
  toString() {
    return this.text
  }
}

const piece = (v: unknown): string => (v instanceof Markup ? v.text : Array.isArray(v) ? v.map(piece).join("") : escapeHtml(v))

/** Every interpolated value is escaped unless it is Markup (built by `html` itself, or the page's own CSS/JS). */
const html = (s: TemplateStringsArray, ...values: unknown[]) =>
  new Markup(s.reduce((out, part, i) => out + part + (i < values.length ? piece(values[i]) : ""), ""))

const asOfCell = (e: { updatedAt: string; stale: boolean }) =>
  html`<td>${formatTime(e.updatedAt)}${e.stale ? html` <span class="badge stale">stale</span>` : ""}</td>`

const emptyRow = (columns: number, text: string) => html`<tr><td class="empty" colspan="${columns}">${text}</td></tr>`

const truckRow = (t: TruckView) =>
  html`<tr><td>${t.truckId}</td><td>${t.customerId}</td><td>${t.routeId}</td><td>${t.nextStopId ?? "—"}</td>
<td class="num">${t.remainingKm === null ? "—" : `${t.remainingKm.toFixed(1)} km`}</td>
<td>${formatTime(t.eta)} <span class="badge ${t.etaSource}">${t.etaSource}</span></td>${asOfCell(t)}</tr>\n`

const invoiceRow = (i: InvoiceView) =>
  html`<tr><td>${i.invoiceId}</td><td>${i.routeId}</td><td>${i.truckId}</td><td class="num">${formatCents(i.totalCents, i.currency)}</td>${asOfCell(i)}</tr>\n`

export type PageData = {
  customerId: string
  trucks: { trucks: TruckView[]; asOf: string | null }
  invoices: { invoices: InvoiceView[]; asOf: string | null }
  refreshSeconds: number
  now?: number
}

const head = (title: string, refreshSeconds?: number) =>
  html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer">${refreshSeconds ? html`<meta http-equiv="refresh" content="${refreshSeconds}">` : ""}<title>${title}</title><style>${new Markup(CSS)}</style></head>`

/** The signed-in customer's trucks and invoices; the browser script keeps them fresh. */
export function renderPage({ customerId, trucks, invoices, refreshSeconds, now = Date.now() }: PageData): string {
  return html`${head(`LogiFlow deliveries for ${customerId}`)}
<body><div id="portal" data-customer="${customerId}" data-refresh-ms="${refreshSeconds * 1000}">
<header><h1>LogiFlow deliveries</h1><span class="muted">customer ${customerId}</span>
<span id="status" class="muted">updated ${formatTime(new Date(now).toISOString())}</span><a href="/logout">Sign out</a></header>
<main>
<section><h2>Trucks <span id="trucks-asof" class="muted">as of ${formatTime(trucks.asOf)}</span></h2>
<table><thead><tr><th>Truck</th><th>Customer</th><th>Route</th><th>Next stop</th><th>Remaining</th><th>ETA</th><th>As of</th></tr></thead>
<tbody id="trucks">${trucks.trucks.length ? trucks.trucks.map(truckRow) : emptyRow(7, "No trucks on the road.")}</tbody></table></section>
<section><h2>Invoices <span id="invoices-asof" class="muted">as of ${formatTime(invoices.asOf)}</span></h2>
<table><thead><tr><th>Invoice</th><th>Route</th><th>Truck</th><th>Total</th><th>As of</th></tr></thead>
<tbody id="invoices">${invoices.invoices.length ? invoices.invoices.map(invoiceRow) : emptyRow(5, "No invoices yet.")}</tbody></table>
</section></main></div>
<script>${new Markup(CLIENT)}</script></body></html>`.text
}

/** What a visitor without a valid sign-in sees (with status 401): how to get in. No script. */
export function signInPage(problem?: string): string {
  return html`${head("Sign in · LogiFlow deliveries")}
<body><header><h1>LogiFlow deliveries</h1></header>
<main><section><h2>Sign in</h2>
${problem ? html`<p class="problem">${problem}</p>` : ""}
<p>This portal shows your company's trucks, their arrival times and your invoices. You sign in with the personal link
your LogiFlow contact sends you: open it in this browser and you are in. Links expire; when yours has, ask for a new one.</p>
<p>If you were given the token itself, paste it here:</p>
<form method="get" action="/login"><label for="token">Token</label><input id="token" name="token" type="password" autocomplete="off" required maxlength="1024"><button>Sign in</button></form>
</section></main></body></html>`.text
}

/** While the portal rebuilds its data from the streams (status 503): no data rather than part of it. No script. */
export function rebuildingPage(progress: number, refreshSeconds: number): string {
  return html`${head("Updating · LogiFlow deliveries", refreshSeconds)}
<body><header><h1>LogiFlow deliveries</h1></header>
<main><section><h2>Updating</h2>
<p>The portal is rebuilding its data (${Math.round(progress * 100)}% done). Your trucks and invoices are back in a moment; this
page reloads by itself.</p>
</section></main></body></html>`.text
}

const sha256 = async (s: string) =>
  btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)))))

let cspHeader: Promise<string> | undefined
// only the page's own script and style may run: markup that slipped past escaping still could not execute
export const csp = () =>
  (cspHeader ??= Promise.all([sha256(CLIENT), sha256(CSS)]).then(
    ([script, style]) =>
      `default-src 'none'; script-src 'sha256-${script}'; style-src 'sha256-${style}'; connect-src 'self'; ` +
      `form-action 'self'; base-uri 'none'; frame-ancestors 'none'`,
  ))
