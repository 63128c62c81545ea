// workers/portal.ts — the customer portal: its own read model of trucks (RouteCalculated + EtaUpdated) and invoices
// (InvoiceGenerated), kept in KV and served as JSON and one small HTML page to each signed-in customer, about that
// customer only. It never calls another worker, so with routing, invoice or tracking down it still answers, from
// what it last applied, and says how old that is.
import type { KV } from "@nats-io/kv"
import { type IRequest, type RouterType, StatusError } from "itty-router"
import { type EtaUpdated, type InvoiceGenerated, parseTime, type RouteCalculated, type Stop } from "../contracts/mod.ts"
import { cookie, envInt, kvKey, type Logger, presented, type Runtime, runWhenMain, secret, sessionCookie, updateJson, verifyToken, worker } from "../mesh/mod.ts"
import { csp, renderPage, signInPage } from "./portal-page.ts"

export { escapeHtml, formatCents, formatTime } from "./portal-page.ts"

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

// times in events passed the contract's parser, so they parse here
const ms = (iso: string) => parseTime(iso)!

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

/** The trucks whose current route is for `customerId`. */
export function listTrucks(m: ReadModel, customerId: string, now = Date.now()): { trucks: TruckView[]; asOf: string | null } {
  const trucks = [...m.trucks.values()]
    .map((d) => truckView(d, now))
    .filter((t): t is TruckView => !!t && t.customerId === customerId)
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

// --- HTTP -----------------------------------------------------------------------------------------------------

const COOKIE = "logiflow_portal"
const CONTROL_CHARS = /[\x00-\x1f\x7f-\x9f]/
type Signed = IRequest & { customerId: string }

const htmlResponse = (body: string, status = 200, headers: Record<string, string> = {}) =>
  csp().then((policy) => new Response(body, { status, headers: { "content-type": "text/html; charset=utf-8", "content-security-policy": policy, "x-content-type-options": "nosniff", "cache-control": "no-store", ...headers } }))

const query = (request: Request, name: string) => new URL(request.url).searchParams.get(name) ?? undefined

/** ?customerId= may only name the signed-in customer: asking for another is refused, not silently narrowed. */
function ownOnly(request: Signed) {
  const asked = query(request, "customerId")
  if (asked !== undefined && asked !== request.customerId) throw new StatusError(403, `this sign-in is for customer ${request.customerId}; other customers' data is not available`)
}

/**
 * A customer signs in with a token signed by PORTAL_SECRET (`logiflow token customer <id>`): a link to /login sets it as
 * an HttpOnly cookie, and API clients may send it as a bearer token. Every answer is about that customer only: another
 * customer's truck is "not found" like an unknown one, so ids cannot be probed.
 */
function routes(router: RouterType<IRequest>, rt: Runtime) {
  const m = modelOf(rt)
  const key = secret("PORTAL_SECRET")
  if (key !== undefined && key.length < 32) throw new Error("PORTAL_SECRET must be at least 32 characters (e.g. openssl rand -base64 32)")
  if (!key) rt.log.warn("PORTAL_SECRET is not set: no customer can sign in, the portal answers 503")
  const unconfigured = "customer sign-in is not configured: an operator must set PORTAL_SECRET (or PORTAL_SECRET_FILE)"

  const customerOf = async (request: Request) => {
    const token = presented(request) ?? cookie(request, COOKIE)
    return { token, customerId: token && key ? (await verifyToken(key, token))?.subject : undefined }
  }
  const signedIn = async (request: IRequest) => {
    if (!key) throw new StatusError(503, unconfigured)
    const { token, customerId } = await customerOf(request)
    if (!customerId) {
      const error = token ? "invalid or expired sign-in token" : "sign in first: open your portal link, or send Authorization: Bearer <token>"
      return Response.json({ status: 401, error }, { status: 401, headers: { "www-authenticate": 'Bearer realm="logiflow-portal"' } })
    }
    ;(request as Signed).customerId = customerId
  }

  router.get("/login", async (request) => {
    if (!key) return htmlResponse(signInPage(unconfigured), 503)
    const token = query(request, "token") ?? ""
    const valid = await verifyToken(key, token)
    if (!valid) return htmlResponse(signInPage("This sign-in link is not valid, or it has expired. Ask your LogiFlow contact for a new one."), 401)
    const cookieHeader = sessionCookie(request, COOKIE, token, valid.expiresAt - Date.now() / 1000)
    // no-referrer: the next page must not pass the token on in a Referer header
    return new Response(null, { status: 303, headers: { location: "/", "set-cookie": cookieHeader, "cache-control": "no-store", "referrer-policy": "no-referrer" } })
  })
  router.get("/logout", (request) => new Response(null, { status: 303, headers: { location: "/", "set-cookie": sessionCookie(request, COOKIE, "", 0) } }))
  router.get("/", async (request) => {
    if (!key) return htmlResponse(signInPage(unconfigured), 503)
    const { token, customerId } = await customerOf(request)
    if (!customerId) return htmlResponse(signInPage(token ? "Your sign-in has expired. Open a new link to sign in again." : undefined), 401)
    return htmlResponse(renderPage({ customerId, trucks: listTrucks(m, customerId), invoices: listInvoices(m, customerId), refreshSeconds: config.refreshSeconds }))
  })
  router.get("/api/trucks", signedIn, (request: Signed) => (ownOnly(request), listTrucks(m, request.customerId)))
  router.get("/api/trucks/:id", signedIn, (request: Signed) => {
    // itty-router hands over the raw path segment: "Lkw%207" must find truck "Lkw 7"
    let id: string
    try {
      id = decodeURIComponent(request.params.id!)
    } catch {
      throw new StatusError(400, "malformed truck id in the path")
    }
    if (CONTROL_CHARS.test(id)) throw new StatusError(400, "a truck id has no control characters")
    const doc = m.trucks.get(kvKey(id))
    const view = doc && truckView(doc)
    if (!view || view.customerId !== request.customerId) throw new StatusError(404, `no truck ${id} with a route`)
    return view
  })
  router.get("/api/invoices", signedIn, (request: Signed) => (ownOnly(request), listInvoices(m, request.customerId)))
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
