// workers/portal.ts — the customer portal: its own read model of trucks (RouteCalculated + EtaUpdated) and invoices
// (InvoiceGenerated), kept in KV and served as JSON and one small HTML page to each signed-in customer, about that
// customer only. It never calls another worker, so with routing, invoice or tracking down it still answers, from
// what it last applied, and says how old that is.
import { type IRequest, type RouterType, StatusError } from "itty-router"
import { type EtaUpdated, type InvoiceGenerated, parseTime, type RouteCalculated, type Stop } from "../contracts/mod.ts"
import {
  cookie,
  envInt,
  kvKey,
  presented,
  type Runtime,
  runWhenMain,
  secret,
  sessionCookie,
  updateJson,
  verifyToken,
  worker,
} from "../mesh/mod.ts"
import { INVOICES_BUCKET, modelOf, type ReadModel, startFollowing, TRUCKS_BUCKET, unload } from "./portal-memory.ts"
import { csp, rebuildingPage, renderPage, signInPage } from "./portal-page.ts"

export { escapeHtml, formatCents, formatTime } from "./portal-page.ts"

const config = {
  staleSeconds: envInt("PORTAL_STALE_SECONDS", 300),
  refreshSeconds: envInt("PORTAL_REFRESH_SECONDS", 5),
}

export { INVOICES_BUCKET, TRUCKS_BUCKET } from "./portal-memory.ts"

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
  return {
    truckId: r.truckId,
    route: { routeId, customerId, stops, distanceKm, eta, calculatedAt },
    ...(prev?.tracked ? { tracked: prev.tracked } : {}),
  }
}

export function applyEta(prev: TruckDoc | undefined, e: EtaUpdated): TruckDoc {
  // the same or an older update (redelivery, replay, a late instance) never overwrites a newer one
  if (prev?.tracked && ms(e.updatedAt) <= ms(prev.tracked.at)) return prev
  const tracked = {
    routeId: e.routeId,
    eta: e.eta,
    remainingKm: e.remainingKm,
    at: e.updatedAt,
    ...(e.nextStopId ? { nextStopId: e.nextStopId } : {}),
  }
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
  csp().then(
    (policy) =>
      new Response(body, {
        status,
        headers: {
          "content-type": "text/html; charset=utf-8",
          "content-security-policy": policy,
          "x-content-type-options": "nosniff",
          "cache-control": "no-store",
          ...headers,
        },
      }),
  )

const query = (request: Request, name: string) => new URL(request.url).searchParams.get(name) ?? undefined

/** ?customerId= may only name the signed-in customer: asking for another is refused, not silently narrowed. */
function ownOnly(request: Signed) {
  const asked = query(request, "customerId")
  if (asked !== undefined && asked !== request.customerId)
    throw new StatusError(403, `this sign-in is for customer ${request.customerId}; other customers' data is not available`)
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
      const error = token
        ? "invalid or expired sign-in token"
        : "sign in first: open your portal link, or send Authorization: Bearer <token>"
      return Response.json({ status: 401, error }, { status: 401, headers: { "www-authenticate": 'Bearer realm="logiflow-portal"' } })
    }
    ;(request as Signed).customerId = customerId
  }

  router.get("/login", async (request) => {
    if (!key) return htmlResponse(signInPage(unconfigured), 503)
    const token = query(request, "token") ?? ""
    const valid = await verifyToken(key, token)
    if (!valid)
      return htmlResponse(signInPage("This sign-in link is not valid, or it has expired. Ask your LogiFlow contact for a new one."), 401)
    const cookieHeader = sessionCookie(request, COOKIE, token, valid.expiresAt - Date.now() / 1000)
    // no-referrer: the next page must not pass the token on in a Referer header
    return new Response(null, {
      status: 303,
      headers: { location: "/", "set-cookie": cookieHeader, "cache-control": "no-store", "referrer-policy": "no-referrer" },
    })
  })
  router.get(
    "/logout",
    (request) => new Response(null, { status: 303, headers: { location: "/", "set-cookie": sessionCookie(request, COOKIE, "", 0) } }),
  )
  // while the model is rebuilt nothing is served from it: a partial list would read as the whole one
  const rebuilding = () => m.rebuild?.state
  const serving = () => {
    const r = rebuilding()
    if (r)
      return Response.json(
        {
          status: 503,
          error: "the portal is rebuilding its data from the streams; try again shortly",
          rebuilding: true,
          progress: r.progress,
        },
        { status: 503, headers: { "retry-after": "2" } },
      )
  }

  router.get("/", async (request) => {
    if (!key) return htmlResponse(signInPage(unconfigured), 503)
    const { token, customerId } = await customerOf(request)
    if (!customerId) return htmlResponse(signInPage(token ? "Your sign-in has expired. Open a new link to sign in again." : undefined), 401)
    const r = rebuilding()
    if (r) return htmlResponse(rebuildingPage(r.progress, config.refreshSeconds), 503, { "retry-after": "2" })
    return htmlResponse(
      renderPage({
        customerId,
        trucks: listTrucks(m, customerId),
        invoices: listInvoices(m, customerId),
        refreshSeconds: config.refreshSeconds,
      }),
    )
  })
  router.get("/api/trucks", signedIn, serving, (request: Signed) => (ownOnly(request), listTrucks(m, request.customerId)))
  router.get("/api/trucks/:id", signedIn, serving, (request: Signed) => {
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
  router.get("/api/invoices", signedIn, serving, (request: Signed) => (ownOnly(request), listInvoices(m, request.customerId)))
}

// --- wiring ---------------------------------------------------------------------------------------------------

// Each handler is a revision-checked read–modify–write keyed by business id (truckId, invoiceId) whose apply*
// function ignores what it has already seen, so a redelivery or replay writes the same state, or nothing.
const portal = worker({
  name: "portal",
  consumes: {
    RouteCalculated: async (r, ctx) =>
      void (await updateJson<TruckDoc>(await ctx.kv(TRUCKS_BUCKET), r.truckId, (prev) => applyRoute(prev, r))),
    EtaUpdated: async (e, ctx) => void (await updateJson<TruckDoc>(await ctx.kv(TRUCKS_BUCKET), e.truckId, (prev) => applyEta(prev, e))),
    InvoiceGenerated: async (inv, ctx) =>
      void (await updateJson<InvoiceGenerated>(await ctx.kv(INVOICES_BUCKET), inv.invoiceId, (prev) => applyInvoice(prev, inv))),
  },
  routes,
  onStart: startFollowing,
  onStop: (rt) => (modelOf(rt).rebuild?.stop(), unload(modelOf(rt))),
  beat: (rt) => ({ rebuilding: modelOf(rt).rebuild?.state?.startedAt }),
})

export default portal
runWhenMain(import.meta, portal)
