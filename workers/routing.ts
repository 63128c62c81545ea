// workers/routing.ts — plans a truck's route and records it as a RouteCalculated event. The HTTP answer (202) means
// "the route is in the stream", never "someone acted on it"; 503 "nothing was recorded", 504 "it may be": each says
// how to retry without making a second route (workers/route-record.ts). Routing calls no other worker.
import { StatusError } from "itty-router"
import * as v from "valibot"
import { Id, issuesOf, MAX_EVENT_BYTES, parser, parseTime, type RouteCalculated, ROUTING_REQUESTS, Stop, Time } from "../contracts/mod.ts"
import { env, envInt, json, newId, readJson, requestTraceparent, requireApiKey, type Runtime, runWhenMain, worker } from "../mesh/mod.ts"
import { estimateEta, planRoute } from "./plan.ts"
import { NotRecorded, OutcomeUnknown, recordRoute } from "./route-record.ts"

const config = {
  // a request is about the size of the route it becomes: past what ROUTING stores it cannot be recorded anyway
  maxBodyBytes: envInt("ROUTING_MAX_BODY_BYTES", MAX_EVENT_BYTES.ROUTING),
  avgSpeedKmh: envInt("ROUTING_AVG_SPEED_KMH", 50),
  serviceMinutesPerStop: envInt("ROUTING_SERVICE_MINUTES", 10),
  publishTimeoutMs: envInt("ROUTING_PUBLISH_TIMEOUT_MS", 3000),
  site: env("SITE_ID") ?? "",
}
if (!(config.avgSpeedKmh > 0)) throw new Error(`ROUTING_AVG_SPEED_KMH must be > 0, got ${config.avgSpeedKmh}`)

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
const parseRouteRequest = parser(RouteRequest)

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

export const accepted = (r: RouteCalculated): RouteAccepted => ({
  routeId: r.routeId,
  eta: r.eta,
  distanceKm: r.distanceKm,
  stops: r.stops,
})

// --- HTTP -----------------------------------------------------------------------------------------------------

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/
const DAY = 24 * 3600

/** How long a key stays bound to its request: the routing-requests bucket's TTL, read at start (default a day). */
const horizons = new WeakMap<Runtime, number>()
const horizonText = (s: number) => (s % 3600 === 0 ? `${s / 3600} h` : `${s} s`)

/** 503: nothing was recorded by this request. 504: the route may be recorded. Both say how to retry safely. */
function notDone(err: NotRecorded | OutcomeUnknown, key: string, horizonSeconds: number): Response {
  const unknown = err instanceof OutcomeUnknown
  const status = unknown ? 504 : 503
  const retry = unknown
    ? `the route may or may not be recorded: send the same request again with Idempotency-Key: ${key} within ${horizonText(horizonSeconds)}; you get this route back if it was recorded, or it is recorded once`
    : `nothing was recorded: retry later with Idempotency-Key: ${key}`
  const body = {
    status,
    error: `${err.message}; ${retry}`,
    outcome: unknown ? "unknown" : "not-recorded",
    idempotencyKey: key,
    ...(unknown ? { retryWithinSeconds: horizonSeconds } : {}),
  }
  const retryAfter = err instanceof NotRecorded ? err.retryAfterSeconds : 2
  return json(body, { status, headers: { "retry-after": String(retryAfter), "idempotency-key": key } })
}

type Counter = ReturnType<Runtime["metrics"]["counter"]>

async function postRoute(request: Request, rt: Runtime, outcomes: Counter): Promise<Response> {
  const body = await readJson(request, config.maxBodyBytes)
  const parsed = parseRouteRequest(body)
  if (!parsed.success) throw new StatusError(400, { error: "invalid route request", issues: issuesOf(parsed.issues) })
  const given = request.headers.get("idempotency-key") ?? undefined
  if (given !== undefined && !IDEMPOTENCY_KEY.test(given)) {
    throw new StatusError(400, "Idempotency-Key must be 1–255 printable ASCII characters without spaces")
  }
  // without a key of the client's, routing makes one and hands it back: the way to retry this request safely
  const key = given ?? `routing-${newId(config.site)}`
  if (!rt.connected) {
    outcomes.inc({ outcome: "not-recorded" })
    return notDone(new NotRecorded("not connected to NATS"), key, horizons.get(rt) ?? DAY)
  }
  const req = parsed.output
  try {
    const route = await recordRoute(rt, {
      request: req,
      client: (request as Request & { client?: string }).client ?? "",
      key,
      plan(routeId) {
        return calculateRoute(req, routeId, new Date())
      },
      traceparent: requestTraceparent(request),
      timeoutMs: config.publishTimeoutMs,
      site: config.site,
    })
    outcomes.inc({ outcome: "accepted" })
    return json(accepted(route), { status: 202, headers: { "idempotency-key": key } })
  } catch (err) {
    if (!(err instanceof NotRecorded || err instanceof OutcomeUnknown)) throw err
    const outcome = err instanceof OutcomeUnknown ? "unknown" : "not-recorded"
    outcomes.inc({ outcome })
    rt.log.warn(outcome === "unknown" ? "route outcome unknown" : "route not recorded", { truckId: req.truckId, error: err.message })
    return notDone(err, key, horizons.get(rt) ?? DAY)
  }
}

const routing = worker({
  name: "routing",
  onStart: async (rt) => {
    const ttlMs = await rt
      .kv(ROUTING_REQUESTS)
      .then((kv) => kv.status())
      .then(
        (st) => st.ttl,
        (err) => (rt.log.warn("retry horizon unknown; answers say a day", { bucket: ROUTING_REQUESTS, error: err }), 0),
      )
    if (ttlMs > 0) horizons.set(rt, Math.round(ttlMs / 1000))
    rt.log.info("Idempotency-Keys are bound to their request for the retry horizon", {
      bucket: ROUTING_REQUESTS,
      seconds: horizons.get(rt) ?? DAY,
    })
  },
  routes: (router, rt) => {
    const outcomes = rt.metrics.counter(
      "routing_requests_total",
      "POST /routes by outcome: accepted (202), not-recorded (503), unknown (504: the route may be recorded)",
    )
    // the key is checked before the body is read: an unknown client costs no parsing and no planning
    router.post("/routes", requireApiKey(rt, "routes"), (request) => postRoute(request, rt, outcomes))
  },
})

export default routing
runWhenMain(import.meta, routing)
