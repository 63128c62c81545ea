// workers/routing.ts — plans a truck's route and records it as a RouteCalculated event. The HTTP answer (202) means
// "the route is in the stream", never "someone acted on it". Routing calls no other worker.
import type { KV } from "@nats-io/kv"
import { StatusError } from "itty-router"
import * as v from "valibot"
import { ContractError, Id, issuesOf, parseTime, type RouteCalculated, Stop, Time } from "../contracts/mod.ts"
import {
  ApiCode,
  apiCode,
  env,
  envInt,
  getJson,
  hex,
  isNoResponders,
  isNotFound,
  kvKey,
  newId,
  readJson,
  requestTraceparent,
  requireApiKey,
  retryLater,
  type Runtime,
  runWhenMain,
  withTimeout,
  worker,
} from "../mesh/mod.ts"
import { estimateEta, planRoute } from "./plan.ts"

const config = {
  maxBodyBytes: envInt("ROUTING_MAX_BODY_BYTES", 256 * 1024),
  avgSpeedKmh: envInt("ROUTING_AVG_SPEED_KMH", 50),
  serviceMinutesPerStop: envInt("ROUTING_SERVICE_MINUTES", 10),
  publishTimeoutMs: envInt("ROUTING_PUBLISH_TIMEOUT_MS", 3000),
  site: env("SITE_ID") ?? "",
}
if (!(config.avgSpeedKmh > 0)) throw new Error(`ROUTING_AVG_SPEED_KMH must be > 0, got ${config.avgSpeedKmh}`)

export const REQUESTS_BUCKET = "routing-requests"

// --- the request ----------------------------------------------------------------------------------------------

const Point = v.strictObject({
  lat: v.pipe(v.number(), v.finite(), v.minValue(-90), v.maxValue(90)),
  lon: v.pipe(v.number(), v.finite(), v.minValue(-180), v.maxValue(180)),
})

const uniqueIds = v.rawCheck<Stop[]>(({ dataset, addIssue }) => {
  if (!dataset.typed) return
  const seen = new Set<string>()
  dataset.value.forEach((stop, i) => {
    if (!seen.has(stop.id)) return void seen.add(stop.id)
    addIssue({
      message: `duplicate stop id "${stop.id}"`,
      path: [
        { type: "array", origin: "value", input: dataset.value, key: i, value: stop },
        { type: "object", origin: "value", input: stop, key: "id", value: stop.id },
      ],
    })
  })
})

export const RouteRequest = v.strictObject({
  truckId: Id,
  customerId: Id,
  depot: Point,
  stops: v.pipe(v.array(Stop), v.minLength(1, "at least 1 stop"), v.maxLength(200, "at most 200 stops"), uniqueIds),
  departAt: v.optional(Time),
})
export type RouteRequest = v.InferOutput<typeof RouteRequest>

export type RouteAccepted = Pick<RouteCalculated, "routeId" | "eta" | "distanceKm" | "stops">

// --- handlers (pure) ------------------------------------------------------------------------------------------

export function calculateRoute(req: RouteRequest, routeId: string, now: Date, opts = config): RouteCalculated {
  const { stops, distanceKm } = planRoute(req.depot, req.stops)
  const departAt = req.departAt ? new Date(parseTime(req.departAt)!) : now
  const eta = estimateEta(departAt, distanceKm, stops.length, opts)
  return {
    routeId,
    truckId: req.truckId,
    customerId: req.customerId,
    stops,
    distanceKm,
    eta: eta.toISOString(),
    calculatedAt: now.toISOString(),
  }
}

export const accepted = (r: RouteCalculated): RouteAccepted => ({ routeId: r.routeId, eta: r.eta, distanceKm: r.distanceKm, stops: r.stops })

const bytes = (s: string) => new TextEncoder().encode(s)

// fixed namespace for routing's name-based ids; changing it changes every idempotent routeId
const NAMESPACE = "6f1c2a4e-3b7d-5e8f-9a0b-1c2d3e4f5a6b"

/** UUIDv5 (RFC 9562) of `name` in routing's namespace: the same retry always gets the same id. */
export async function uuidv5(name: string): Promise<string> {
  const ns = Uint8Array.from(NAMESPACE.replace(/-/g, "").match(/../g)!, (h) => parseInt(h, 16))
  const input = new Uint8Array([...ns, ...bytes(name)])
  const b = new Uint8Array(await crypto.subtle.digest("SHA-1", input)).slice(0, 16)
  b[6] = (b[6]! & 0x0f) | 0x50
  b[8] = (b[8]! & 0x3f) | 0x80
  const h = hex(b)
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

/** The routeId an Idempotency-Key maps to; JSON keeps ("a:b","c") and ("a","b:c") apart. The site keeps edges apart. */
export async function idempotentRouteId(truckId: string, key: string, site = config.site): Promise<string> {
  const id = await uuidv5(JSON.stringify([truckId, key]))
  return site ? `${site}-${id}` : id
}

const fingerprint = async (req: RouteRequest) => hex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes(JSON.stringify(req)))))

// --- recording the route --------------------------------------------------------------------------------------

/** What the routing-requests bucket keeps per Idempotency-Key for a day. */
type Recorded = { fingerprint: string; route: RouteCalculated; published: boolean }

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/

class Unavailable extends Error {
  constructor(message: string, readonly retryAfterSeconds = 2) {
    super(message)
  }
}

function unavailable(err: unknown): Unavailable {
  if (err instanceof Unavailable) return err
  const message = (err as Error)?.message ?? String(err)
  if (apiCode(err) === ApiCode.StoreFull) {
    return new Unavailable(`the routing log is full (${message}); routes cannot be recorded until an operator raises its limits`, 60)
  }
  if (isNoResponders(err) || isNotFound(err)) {
    return new Unavailable(`the routing stream or the ${REQUESTS_BUCKET} bucket is missing (${message}); run \`logiflow provision\``, 30)
  }
  return new Unavailable(`NATS did not record the route: ${message}; retry later`)
}


async function publish(rt: Runtime, route: RouteCalculated, traceparent: string | undefined) {
  // the msg id is derived from the routeId, so a retried publish of the same route is stored once
  await rt.publish("RouteCalculated", route, { id: `routing:${route.routeId}`, traceparent })
}

/** KV create, first writer wins: a concurrent retry that got there first has the answer. */
async function create(kv: KV, key: string, mine: Recorded): Promise<Recorded> {
  try {
    await kv.create(kvKey(key), JSON.stringify(mine))
    return mine
  } catch (err) {
    const theirs = await getJson<Recorded>(kv, key)
    if (!theirs) throw err
    return theirs
  }
}

/**
 * With an Idempotency-Key, the route is written to KV (first writer wins) before it is published, and marked
 * published after: a retry finds it and republishes only if the mark is missing (deduped by msg id), so a crash
 * between the two steps cannot lose the event, and a retry a day later still gets the same answer.
 */
async function record(rt: Runtime, req: RouteRequest, key: string | undefined, traceparent: string | undefined): Promise<RouteCalculated> {
  if (!key) {
    const route = calculateRoute(req, newId(config.site), new Date())
    await publish(rt, route, traceparent)
    return route
  }
  const kv = await rt.kv(REQUESTS_BUCKET)
  const routeId = await idempotentRouteId(req.truckId, key)
  const print = await fingerprint(req)
  const rec =
    (await getJson<Recorded>(kv, routeId)) ??
    (await create(kv, routeId, { fingerprint: print, route: calculateRoute(req, routeId, new Date()), published: false }))
  if (rec.fingerprint !== print) {
    throw new StatusError(422, `Idempotency-Key "${key}" was already used for a different request by truck ${req.truckId}`)
  }
  if (!rec.published) {
    await publish(rt, rec.route, traceparent)
    await kv.put(kvKey(routeId), JSON.stringify({ ...rec, published: true }))
  }
  return rec.route
}

// --- HTTP -----------------------------------------------------------------------------------------------------

const unavailableResponse = (err: Unavailable) => retryLater(err.message, err.retryAfterSeconds)

type Counter = ReturnType<Runtime["metrics"]["counter"]>

async function postRoute(request: Request, rt: Runtime, outcomes: Counter): Promise<Response> {
  const body = await readJson(request, config.maxBodyBytes)
  const parsed = v.safeParse(RouteRequest, body)
  if (!parsed.success) throw new StatusError(400, { error: "invalid route request", issues: issuesOf(parsed.issues) })
  const key = request.headers.get("idempotency-key") ?? undefined
  if (key !== undefined && !IDEMPOTENCY_KEY.test(key)) {
    throw new StatusError(400, "Idempotency-Key must be 1–255 printable ASCII characters without spaces")
  }
  if (!rt.connected) {
    outcomes.inc({ outcome: "unavailable" })
    return unavailableResponse(new Unavailable("not connected to NATS; the route was not recorded, retry later"))
  }
  const traceparent = requestTraceparent(request)
  try {
    const route = await withTimeout(record(rt, parsed.output, key, traceparent), config.publishTimeoutMs, () => new Unavailable(`NATS did not acknowledge the route within ${config.publishTimeoutMs} ms; retry later`))
    outcomes.inc({ outcome: "accepted" })
    return Response.json(accepted(route), { status: 202 })
  } catch (err) {
    if (err instanceof StatusError || err instanceof ContractError) throw err
    const u = unavailable(err)
    outcomes.inc({ outcome: "unavailable" })
    rt.log.warn("route not recorded", { truckId: parsed.output.truckId, error: u.message })
    return unavailableResponse(u)
  }
}

const routing = worker({
  name: "routing",
  routes: (router, rt) => {
    const outcomes = rt.metrics.counter("routing_requests_total", "POST /routes answered with 202 (accepted) or 503 (unavailable)")
    // the key is checked before the body is read: an unknown client costs no parsing and no planning
    router.post("/routes", requireApiKey(rt, "routes"), (request) => postRoute(request, rt, outcomes))
  },
})

export default routing
runWhenMain(import.meta, routing)
