// workers/portal.ts — the customer portal: its own read model of trucks (RouteCalculated + EtaUpdated) and invoices
// (InvoiceGenerated), kept in KV and served as JSON and one small HTML page to each signed-in customer, about that
// customer only. It never calls another worker, so with routing, invoice or tracking down it still answers, from
// what it last applied, and says how old that is.
import { type IRequest, type RouterType, StatusError } from "itty-router"
import { cookie, kvKey, presented, type Runtime, runWhenMain, secret, sessionCookie, updateJson, verifyToken, worker } from "../mesh/mod.ts"
import { INVOICES_BUCKET, storeInvoice } from "./portal-invoices.ts"
import { modelOf, startFollowing, TRUCKS_BUCKET, unload } from "./portal-memory.ts"
import {
  applyEta,
  applyRoute,
  config,
  limitOf,
  listInvoices,
  listTrucks,
  mapTrucks,
  positionAge,
  type TruckDoc,
  truckView,
} from "./portal-model.ts"
import { csp, rebuildingPage, renderPage, signInPage } from "./portal-page.ts"

export { escapeHtml, formatCents, formatTime } from "./portal-page.ts"

export { INVOICES_BUCKET, TRUCKS_BUCKET } from "./portal-memory.ts"
export { invoiceKey } from "./portal-invoices.ts"
export * from "./portal-model.ts"

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
    // the invoices' bucket may be out of reach (NATS away, no page cached): the page still shows the trucks
    const invoices = await listInvoices(m, customerId).catch(() => undefined)
    return htmlResponse(
      renderPage({
        customerId,
        trucks: listTrucks(m, customerId),
        invoices,
        refreshSeconds: config.refreshSeconds,
      }),
    )
  })
  router.get("/api/trucks", signedIn, serving, (request: Signed) => (ownOnly(request), mapTrucks(m, request.customerId)))
  router.get("/api/trucks/:id", signedIn, serving, async (request: Signed) => {
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
    const position = (await m.positions.of([view.truckId])).get(view.truckId) ?? null
    return { ...view, position, positionAge: positionAge(position) }
  })
  router.get("/api/invoices", signedIn, serving, (request: Signed) => {
    ownOnly(request)
    return listInvoices(m, request.customerId, limitOf(query(request, "limit")), query(request, "cursor"))
  })
}

// --- wiring ---------------------------------------------------------------------------------------------------

// Each truck handler is a revision-checked read–modify–write keyed by truck whose apply* function ignores what it
// has already seen; an invoice is created once under its customer and id. A redelivery or replay writes the same
// state, or nothing.
const portal = worker({
  name: "portal",
  consumes: {
    RouteCalculated: async (r, ctx) =>
      void (await updateJson<TruckDoc>(await ctx.kv(TRUCKS_BUCKET), r.truckId, (prev) => applyRoute(prev, r))),
    EtaUpdated: async (e, ctx) => void (await updateJson<TruckDoc>(await ctx.kv(TRUCKS_BUCKET), e.truckId, (prev) => applyEta(prev, e))),
    InvoiceGenerated: async (inv, ctx) => storeInvoice(await ctx.kv(INVOICES_BUCKET), inv),
  },
  routes,
  onStart: startFollowing,
  onStop: (rt) => (modelOf(rt).rebuild?.stop(), unload(modelOf(rt))),
  beat: (rt) => ({ rebuilding: modelOf(rt).rebuild?.state?.startedAt }),
})

export default portal
runWhenMain(import.meta, portal)
