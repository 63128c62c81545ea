// workers/portal-page.ts — the portal's HTML: the signed-in customer's page (no build step; its one script, in
// portal-client.ts, draws the map and refreshes everything from the JSON API) and the sign-in page. Every data value
// is escaped on the server and set as text in the browser; a Content-Security-Policy lets only the page's own script
// and style run, and nothing load from anywhere else.
import { parseTime } from "../contracts/mod.ts"
import type { InvoicePage, InvoiceView, TruckView } from "./portal-model.ts"
import { CSS, SCRIPT } from "./portal-client.ts"
import { AGES } from "./portal-map.ts"

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
  html`<tr data-invoice="${i.invoiceId}"><td>${i.invoiceId}</td><td>${i.routeId}</td><td>${i.truckId}</td><td class="num">${formatCents(i.totalCents, i.currency)}</td>${asOfCell(i)}</tr>\n`

export type PageData = {
  customerId: string
  trucks: { trucks: TruckView[]; asOf: string | null }
  /** undefined: the invoices could not be read just now (the script tries again) */
  invoices: InvoicePage | undefined
  refreshSeconds: number
  now?: number
}

const head = (title: string, refreshSeconds?: number) =>
  html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer">${refreshSeconds ? html`<meta http-equiv="refresh" content="${refreshSeconds}">` : ""}<title>${title}</title><style>${new Markup(CSS)}</style></head>`

const legend = html`<ul class="legend" aria-label="Legend">${AGES.map((a) => html`<li><span class="dot age-${a.age}"></span>${a.label}</li>`)}<li>line: planned route through its stops; dashed: to the next stop</li></ul>`

/** The signed-in customer's map, trucks and invoices; the browser script draws the map and keeps it all fresh. */
export function renderPage({ customerId, trucks, invoices, refreshSeconds, now = Date.now() }: PageData): string {
  const list = invoices?.invoices ?? []
  return html`${head(`LogiFlow deliveries for ${customerId}`)}
<body><div id="portal" data-customer="${customerId}" data-refresh-ms="${refreshSeconds * 1000}" data-next="${invoices?.next ?? ""}">
<header><h1>LogiFlow deliveries</h1><span class="muted">customer ${customerId}</span>
<span id="status" class="muted" role="status">updated ${formatTime(new Date(now).toISOString())}</span><a href="/logout">Sign out</a></header>
<main>
<section aria-labelledby="map-title"><h2 id="map-title">Map</h2>
<div class="map-wrap"><svg id="map" viewBox="0 0 1000 560" role="group" aria-label="Map of your trucks: Tab moves from truck to truck, each says its ETA"></svg></div>
${legend}<p id="map-detail" aria-live="polite" class="muted">Point at a truck, or Tab to it, for its ETA.</p></section>
<section><h2>Trucks <span id="trucks-asof" class="muted">as of ${formatTime(trucks.asOf)}</span></h2>
<table><thead><tr><th>Truck</th><th>Customer</th><th>Route</th><th>Next stop</th><th>Remaining</th><th>ETA</th><th>As of</th></tr></thead>
<tbody id="trucks">${trucks.trucks.length ? trucks.trucks.map(truckRow) : emptyRow(7, "No trucks on the road.")}</tbody></table></section>
<section><h2>Invoices <span id="invoices-asof" class="muted">as of ${formatTime(invoices?.asOf)}</span></h2>
<table><thead><tr><th>Invoice</th><th>Route</th><th>Truck</th><th>Total</th><th>As of</th></tr></thead>
<tbody id="invoices">${list.length ? list.map(invoiceRow) : emptyRow(5, invoices ? "No invoices yet." : "Invoices could not be loaded just now; retrying.")}</tbody></table>
<button id="more" class="more" type="button"${invoices?.next ? "" : new Markup(" hidden")}>Older invoices</button>
</section></main></div>
<script>${new Markup(SCRIPT)}</script></body></html>`.text
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
  (cspHeader ??= Promise.all([sha256(SCRIPT), sha256(CSS)]).then(
    ([script, style]) =>
      `default-src 'none'; script-src 'sha256-${script}'; style-src 'sha256-${style}'; connect-src 'self'; img-src 'none'; ` +
      `form-action 'self'; base-uri 'none'; frame-ancestors 'none'`,
  ))
