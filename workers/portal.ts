// workers/portal.ts — the customer portal: its own read model of trucks (RouteCalculated + EtaUpdated) and invoices
// (InvoiceGenerated), kept in KV and served as JSON and one small HTML page. It never calls another worker, so with
// routing, invoice or tracking down it still answers, from what it last applied, and says how old that is.
import type { KV } from "@nats-io/kv"
import { type IRequest, type RouterType, StatusError } from "itty-router"
import type { EtaUpdated, InvoiceGenerated, RouteCalculated, Stop } from "../contracts/mod.ts"
import { envInt, kvKey, type Logger, type Runtime, runWhenMain, updateJson, worker } from "../mesh/mod.ts"

const config = {
  staleSeconds: envInt("PORTAL_STALE_SECONDS", 300),
  refreshSeconds: envInt("PORTAL_REFRESH_SECONDS", 5),
}

export const TRUCKS_BUCKET = "portal-trucks"
export const INVOICES_BUCKET = "portal-invoices"

// --- the read model (pure) ------------------------------------------------------------------------------------

/**
 * One truck as stored. The route and the newest tracked ETA are kept apart, each replaced only by newer input,
 * because they come from different streams with no order between them: an EtaUpdated may arrive before the route
 * it belongs to, or after a newer route. Which ETA to show is decided when reading (truckView).
 */
export type TruckDoc = {
  truckId: string
  route?: { routeId: string; customerId: string; stops: Stop[]; distanceKm: number; eta: string; calculatedAt: string }
  tracked?: { routeId: string; eta: string; nextStopId?: string; remainingKm: number; at: string }
}

const ms = (iso: string) => Date.parse(iso)

export function applyRoute(prev: TruckDoc | undefined, r: RouteCalculated): TruckDoc {
  const old = prev?.route
  if (old) {
    if (old.routeId === r.routeId) return prev
    const d = ms(old.calculatedAt) - ms(r.calculatedAt)
    if (d > 0 || (d === 0 && old.routeId > r.routeId)) return prev
  }
  const { routeId, customerId, stops, distanceKm, eta, calculatedAt } = r
  return { truckId: r.truckId, route: { routeId, customerId, stops, distanceKm, eta, calculatedAt }, ...(prev?.tracked ? { tracked: prev.tracked } : {}) }
}

export function applyEta(prev: TruckDoc | undefined, e: EtaUpdated): TruckDoc {
  // the same or an older update (redelivery, replay, a late instance) never overwrites a newer one
  if (prev?.tracked && ms(e.updatedAt) <= ms(prev.tracked.at)) return prev
  const tracked = { routeId: e.routeId, eta: e.eta, remainingKm: e.remainingKm, at: e.updatedAt, ...(e.nextStopId ? { nextStopId: e.nextStopId } : {}) }
  return { ...(prev ?? { truckId: e.truckId }), tracked }
}

/** An invoice never changes once issued: the first one stored stays, a redelivery writes nothing. */
export const applyInvoice = (prev: InvoiceGenerated | undefined, inv: InvoiceGenerated): InvoiceGenerated => prev ?? inv

export type TruckView = {
  truckId: string
  routeId: string
  customerId: string
  stops: Stop[]
  nextStopId: string | null
  remainingKm: number | null
  eta: string
  etaSource: "planned" | "tracked"
  updatedAt: string
  stale: boolean
}

export type InvoiceView = InvoiceGenerated & { updatedAt: string; stale: boolean }

const isStale = (updatedAt: string, now: number, staleSeconds: number) => now - ms(updatedAt) > staleSeconds * 1000

/** Undefined until the truck's route is known: a customer sees a truck only once it has a route for them. */
export function truckView(doc: TruckDoc, now = Date.now(), staleSeconds = config.staleSeconds): TruckView | undefined {
  const route = doc.route
  if (!route) return undefined
  const tracked = doc.tracked?.routeId === route.routeId ? doc.tracked : undefined
  const updatedAt = tracked && ms(tracked.at) > ms(route.calculatedAt) ? tracked.at : route.calculatedAt
  return {
    truckId: doc.truckId,
    routeId: route.routeId,
    customerId: route.customerId,
    stops: route.stops,
    nextStopId: tracked ? (tracked.nextStopId ?? null) : (route.stops[0]?.id ?? null),
    remainingKm: tracked ? tracked.remainingKm : route.distanceKm,
    eta: tracked ? tracked.eta : route.eta,
    etaSource: tracked ? "tracked" : "planned",
    updatedAt,
    stale: isStale(updatedAt, now, staleSeconds),
  }
}

export const invoiceView = (inv: InvoiceGenerated, now = Date.now(), staleSeconds = config.staleSeconds): InvoiceView => ({
  ...inv,
  updatedAt: inv.issuedAt,
  stale: isStale(inv.issuedAt, now, staleSeconds),
})

/** Newest event time applied to a truck, whether shown or not: what "as of" means for the whole list. */
const appliedAt = (doc: TruckDoc) => [doc.route?.calculatedAt, doc.tracked?.at].filter((t): t is string => !!t)

// --- the in-memory copy ---------------------------------------------------------------------------------------

/**
 * Requests are served from memory, filled by a KV watch on both buckets: at start the watch delivers every key's
 * current value (the rebuild), then each change as it is written. Not filled by this instance's handlers, because
 * instances share one durable, so each handles only part of the events; the KV is the whole model. The cost is one
 * copy of both buckets per instance (fine for the demo's hundreds of trucks; a real fleet would shard or page), in
 * exchange for reads that never touch NATS, and answers that keep coming while NATS itself is away. kv.keys() per
 * request would instead cost a consumer create plus one get per key on every page refresh.
 */
export type ReadModel = {
  trucks: Map<string, TruckDoc>
  invoices: Map<string, InvoiceGenerated>
  asOf: { trucks: string | null; invoices: string | null }
  stops: (() => void)[]
}

const models = new WeakMap<Runtime, ReadModel>()

function modelOf(rt: Runtime): ReadModel {
  let m = models.get(rt)
  if (!m) models.set(rt, (m = { trucks: new Map(), invoices: new Map(), asOf: { trucks: null, invoices: null }, stops: [] }))
  return m
}

const later = (a: string | null, b: string) => (a === null || ms(b) > ms(a) ? b : a)

/** Mirrors a bucket into `into`; resolves once the values present at start are in (or after `waitMs`, logged). */
async function mirror<T>(bucket: string, kv: KV, into: Map<string, T>, onValue: (v: T) => void, log: Logger, waitMs = 10_000): Promise<() => void> {
  const state = (await kv.status()).streamInfo.state
  const watch = await kv.watch()
  let loaded!: () => void
  const initial = new Promise<void>((r) => (loaded = r))
  if (state.messages === 0) loaded()
  ;(async () => {
    for await (const e of watch) {
      if (e.operation === "PUT" && e.length > 0) {
        const value = e.json<T>()
        into.set(e.key, value)
        onValue(value)
      } else into.delete(e.key)
      if (e.revision >= state.last_seq) loaded()
    }
  })().catch((err) => log.error("KV watch ended; the portal serves what it has", { bucket, error: err }))
  let timer: ReturnType<typeof setTimeout> | undefined
  const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), waitMs)))
  const done = await Promise.race([initial.then(() => true), late])
  clearTimeout(timer)
  if (!done) log.warn("read model not fully loaded yet; serving while it fills", { bucket, waitMs })
  return () => watch.stop()
}

async function follow(rt: Runtime): Promise<void> {
  const m = modelOf(rt)
  const [trucks, invoices] = await Promise.all([rt.kv(TRUCKS_BUCKET), rt.kv(INVOICES_BUCKET)])
  m.stops.push(
    await mirror<TruckDoc>(TRUCKS_BUCKET, trucks, m.trucks, (d) => appliedAt(d).forEach((t) => (m.asOf.trucks = later(m.asOf.trucks, t))), rt.log),
    await mirror<InvoiceGenerated>(INVOICES_BUCKET, invoices, m.invoices, (i) => (m.asOf.invoices = later(m.asOf.invoices, i.issuedAt)), rt.log),
  )
  rt.log.info("read model loaded", { trucks: m.trucks.size, invoices: m.invoices.size })
}

// --- queries --------------------------------------------------------------------------------------------------

export function listTrucks(m: ReadModel, customerId?: string, now = Date.now()): { trucks: TruckView[]; asOf: string | null } {
  const trucks = [...m.trucks.values()]
    .map((d) => truckView(d, now))
    .filter((t): t is TruckView => !!t && (customerId === undefined || t.customerId === customerId))
    .sort((a, b) => (a.truckId < b.truckId ? -1 : a.truckId > b.truckId ? 1 : 0))
  return { trucks, asOf: m.asOf.trucks }
}

export function listInvoices(m: ReadModel, customerId: string, now = Date.now()): { invoices: InvoiceView[]; asOf: string | null } {
  const invoices = [...m.invoices.values()]
    .filter((i) => i.customerId === customerId)
    .sort((a, b) => ms(b.issuedAt) - ms(a.issuedAt) || (a.invoiceId < b.invoiceId ? -1 : 1))
    .map((i) => invoiceView(i, now))
  return { invoices, asOf: m.asOf.invoices }
}

// --- the page -------------------------------------------------------------------------------------------------

const ENTITIES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }

/** For text and quoted attribute values; every data value on the page goes through it. */
export const escapeHtml = (value: unknown): string => String(value ?? "").replace(/[&<>"']/g, (c) => ENTITIES[c]!)

/** 123456, "EUR" → "EUR 1,234.56": integer arithmetic, so no float ever rounds a cent. */
export function formatCents(cents: number, currency: string): string {
  const whole = String(Math.floor(cents / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ",")
  return `${currency} ${whole}.${String(cents % 100).padStart(2, "0")}`
}

/** "2026-11-25T10:00:00.000Z" → "2026-11-25 10:00:00 UTC" (one zone for every reader, no locale guessing). */
export const formatTime = (iso: string | null | undefined): string =>
  iso ? new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") : "—"

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
#status{margin-left:auto}#status.bad{color:var(--warn)}
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
  return iso ? new Date(iso).toISOString().replace("T", " ").replace(/\\.\\d+Z$/, " UTC") : "\\u2014";
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
  var customer = page.getAttribute("data-customer");
  var statusLine = document.getElementById("status");
  var q = customer ? "?customerId=" + encodeURIComponent(customer) : "";
  function get(path) {
    return fetch(path, { headers: { accept: "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    });
  }
  function refresh() {
    var jobs = [get("/api/trucks" + q).then(function (d) {
      fill("trucks", d.trucks.map(truckRow), 7, "No trucks on the road.");
      document.getElementById("trucks-asof").textContent = "as of " + when(d.asOf);
    })];
    if (customer) jobs.push(get("/api/invoices" + q).then(function (d) {
      fill("invoices", d.invoices.map(invoiceRow), 5, "No invoices yet.");
      document.getElementById("invoices-asof").textContent = "as of " + when(d.asOf);
    }));
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
const html = (s: TemplateStringsArray, ...values: unknown[]) => new Markup(s.reduce((out, part, i) => out + part + (i < values.length ? piece(values[i]) : ""), ""))

const asOfCell = (e: { updatedAt: string; stale: boolean }) =>
  html`<td>${formatTime(e.updatedAt)}${e.stale ? html` <span class="badge stale">stale</span>` : ""}</td>`

const emptyRow = (columns: number, text: string) => html`<tr><td class="empty" colspan="${columns}">${text}</td></tr>`

const truckRow = (t: TruckView) =>
  html`<tr><td>${t.truckId}</td><td>${t.customerId}</td><td>${t.routeId}</td><td>${t.nextStopId ?? "—"}</td>
<td class="num">${t.remainingKm === null ? "—" : `${t.remainingKm.toFixed(1)} km`}</td>
<td>${formatTime(t.eta)} <span class="badge ${t.etaSource}">${t.etaSource}</span></td>${asOfCell(t)}</tr>\n`

const invoiceRow = (i: InvoiceView) =>
  html`<tr><td>${i.invoiceId}</td><td>${i.routeId}</td><td>${i.truckId}</td><td class="num">${formatCents(i.totalCents, i.currency)}</td>${asOfCell(i)}</tr>\n`

export function renderPage(m: ReadModel, customerId: string | undefined, now = Date.now()): string {
  const trucks = listTrucks(m, customerId, now)
  const invoices = customerId ? listInvoices(m, customerId, now) : undefined
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>LogiFlow deliveries${customerId ? ` for ${customerId}` : ""}</title><style>${new Markup(CSS)}</style></head>
<body><div id="portal" data-customer="${customerId ?? ""}" data-refresh-ms="${config.refreshSeconds * 1000}">
<header><h1>LogiFlow deliveries</h1><span class="muted">${customerId ? `customer ${customerId}` : "all customers"}</span>
<span id="status" class="muted">updated ${formatTime(new Date(now).toISOString())}</span></header>
<main>
<section><h2>Trucks <span id="trucks-asof" class="muted">as of ${formatTime(trucks.asOf)}</span></h2>
<table><thead><tr><th>Truck</th><th>Customer</th><th>Route</th><th>Next stop</th><th>Remaining</th><th>ETA</th><th>As of</th></tr></thead>
<tbody id="trucks">${trucks.trucks.length ? trucks.trucks.map(truckRow) : emptyRow(7, "No trucks on the road.")}</tbody></table></section>
<section><h2>Invoices ${invoices ? html`<span id="invoices-asof" class="muted">as of ${formatTime(invoices.asOf)}</span>` : ""}</h2>
<form method="get" action="/"><label for="customerId">Customer</label><input id="customerId" name="customerId" value="${customerId ?? ""}" required maxlength="128"><button>Show</button></form>
${
  invoices
    ? html`<table><thead><tr><th>Invoice</th><th>Route</th><th>Truck</th><th>Total</th><th>As of</th></tr></thead>
<tbody id="invoices">${invoices.invoices.length ? invoices.invoices.map(invoiceRow) : emptyRow(5, "No invoices yet.")}</tbody></table>`
    : html`<p class="muted">Enter a customer id to see its invoices.</p>`
}
</section></main></div>
<script>${new Markup(CLIENT)}</script></body></html>`.text
}

const sha256 = async (s: string) => btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s)))))

let cspHeader: Promise<string> | undefined
// only the page's own script and style may run: markup that slipped past escaping still could not execute
const csp = () =>
  (cspHeader ??= Promise.all([sha256(CLIENT), sha256(CSS)]).then(
    ([script, style]) =>
      `default-src 'none'; script-src 'sha256-${script}'; style-src 'sha256-${style}'; connect-src 'self'; ` +
      `form-action 'self'; base-uri 'none'; frame-ancestors 'none'`,
  ))

// --- HTTP -----------------------------------------------------------------------------------------------------

const query = (request: Request, name: string) => new URL(request.url).searchParams.get(name) ?? undefined

function routes(router: RouterType<IRequest>, rt: Runtime) {
  const m = modelOf(rt)
  // customerId is optional here (all trucks without it): the page shows one customer's trucks next to its invoices
  router.get("/api/trucks", (request) => listTrucks(m, query(request, "customerId") || undefined))
  router.get("/api/trucks/:id", ({ params }) => {
    // itty-router hands over the raw path segment: "Lkw%207" must find truck "Lkw 7"
    let id: string
    try {
      id = decodeURIComponent(params.id!)
    } catch {
      throw new StatusError(400, "malformed truck id in the path")
    }
    const doc = m.trucks.get(kvKey(id))
    const view = doc && truckView(doc)
    if (!view) throw new StatusError(404, `no truck ${id} with a route`)
    return view
  })
  router.get("/api/invoices", (request) => {
    const customerId = query(request, "customerId")
    if (!customerId) throw new StatusError(400, "customerId is required, e.g. /api/invoices?customerId=acme")
    return listInvoices(m, customerId)
  })
  router.get("/", async (request) => {
    const body = renderPage(m, query(request, "customerId") || undefined)
    return new Response(body, {
      headers: { "content-type": "text/html; charset=utf-8", "content-security-policy": await csp(), "x-content-type-options": "nosniff" },
    })
  })
}

// --- wiring ---------------------------------------------------------------------------------------------------

// Each handler is a revision-checked read–modify–write keyed by business id (truckId, invoiceId) whose apply*
// function ignores what it has already seen, so a redelivery or replay writes the same state, or nothing.
const portal = worker({
  name: "portal",
  consumes: {
    RouteCalculated: async (r, ctx) => void (await updateJson<TruckDoc>(await ctx.kv(TRUCKS_BUCKET), r.truckId, (prev) => applyRoute(prev, r))),
    EtaUpdated: async (e, ctx) => void (await updateJson<TruckDoc>(await ctx.kv(TRUCKS_BUCKET), e.truckId, (prev) => applyEta(prev, e))),
    InvoiceGenerated: async (inv, ctx) =>
      void (await updateJson<InvoiceGenerated>(await ctx.kv(INVOICES_BUCKET), inv.invoiceId, (prev) => applyInvoice(prev, inv))),
  },
  routes,
  onStart: follow,
  onStop: (rt) => modelOf(rt).stops.splice(0).forEach((stop) => stop()),
})

export default portal
runWhenMain(import.meta, portal)
