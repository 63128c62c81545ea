// workers/tracking.ts — takes GPS pings over HTTP as PositionReported events, and projects RouteCalculated +
// PositionReported into one record per truck (next stop, remaining distance, ETA), emitting EtaUpdated when the
// ETA customers see would move by more than a threshold. Tracking calls no other worker.
import { StatusError } from "itty-router"
import * as v from "valibot"
import { type EtaUpdated, issuesOf, parser, parseTime, PositionReported, type RouteCalculated, type Stop } from "../contracts/mod.ts"
import {
  json,
  envInt,
  type Follower,
  followRebuild,
  type Outgoing,
  readJson,
  requestTraceparent,
  requireApiKey,
  retryLater,
  type Runtime,
  runWhenMain,
  updateJson,
  withTimeout,
  worker,
} from "../mesh/mod.ts"
import { estimateEta, haversineKm, pathKm } from "./plan.ts"

export type TrackingConfig = {
  arrivalMeters: number
  avgSpeedKmh: number
  serviceMinutes: number
  etaThresholdSeconds: number
  publishTimeoutMs: number
  maxBodyBytes: number
  /** a ping further ahead of this server's clock is refused: a wrong clock must not decide the state for hours */
  maxFutureSkewSeconds: number
  /**
   * a ping rewrites the truck's record only when what it shows changes (route, next stop, the ETA customers see) or
   * its last-seen position is this much older than the ping: most pings of a moving truck write nothing
   */
  positionWriteSeconds: number
}

export const loadConfig = (): TrackingConfig => ({
  arrivalMeters: envInt("TRACKING_ARRIVAL_METERS", 150),
  avgSpeedKmh: envInt("TRACKING_AVG_SPEED_KMH", 50),
  serviceMinutes: envInt("TRACKING_SERVICE_MINUTES", 10),
  etaThresholdSeconds: envInt("TRACKING_ETA_THRESHOLD_SECONDS", 120),
  publishTimeoutMs: envInt("TRACKING_PUBLISH_TIMEOUT_MS", 5000),
  maxBodyBytes: envInt("TRACKING_MAX_BODY_BYTES", 512 * 1024),
  maxFutureSkewSeconds: envInt("TRACKING_MAX_FUTURE_SKEW_SECONDS", 300),
  positionWriteSeconds: envInt("TRACKING_POSITION_WRITE_SECONDS", 60),
})

const config = loadConfig()

export const TRUCKS_BUCKET = "tracking-trucks"
export const MAX_BATCH = 500
// below this a truck is standing (traffic light, loading): its speed says nothing about the rest of the route
const MOVING_KMH = 5

// --- the projection (pure) ------------------------------------------------------------------------------------

export type TruckTrack = {
  truckId: string
  routeId?: string
  /** calculatedAt of the route: an older RouteCalculated arriving late never replaces a newer one */
  routeAt?: string
  /** in planned order */
  stops: Stop[]
  /** index of the next stop in `stops`; `stops.length` once the last one is reached */
  nextStop: number
  plannedEta?: string
  position?: { lat: number; lon: number; speedKmh?: number; at: string }
  remainingKm?: number
  eta?: string
  /** the ETA customers last saw (planned, then each EtaUpdated): the threshold is measured against it */
  shownEta?: string
  /** the last EtaUpdated, kept so a redelivery of the ping that caused it re-emits it under the same id (deduped) */
  emitted?: EtaUpdated
}

// times in events passed the contract's parser, so they parse here
const ms = (iso: string) => parseTime(iso)!
const round3 = (x: number) => Math.round(x * 1000) / 1000

export function applyRoute(prev: TruckTrack | undefined, r: RouteCalculated): TruckTrack {
  if (prev?.routeId === r.routeId) return prev
  if (prev?.routeAt) {
    const d = ms(prev.routeAt) - ms(r.calculatedAt)
    // ties broken by routeId, so the same set of routes ends in the same state whatever order they arrive in
    if (d > 0 || (d === 0 && prev.routeId! > r.routeId)) return prev
  }
  const next: TruckTrack = {
    truckId: r.truckId,
    routeId: r.routeId,
    routeAt: r.calculatedAt,
    stops: r.stops,
    nextStop: 0,
    plannedEta: r.eta,
    shownEta: r.eta,
  }
  // a ping from before the route is kept as "last seen", but no ETA is derived from it until the next ping
  if (prev?.position) next.position = prev.position
  return next
}

export function applyPosition(
  prev: TruckTrack | undefined,
  p: PositionReported,
  cfg: Pick<TrackingConfig, "arrivalMeters" | "avgSpeedKmh" | "serviceMinutes" | "etaThresholdSeconds"> = config,
): { state: TruckTrack; emit?: EtaUpdated } {
  if (prev?.position) {
    const d = ms(p.at) - ms(prev.position.at)
    if (d < 0) return { state: prev }
    // the same ping again (redelivery, replay): same state, and the event it caused again, under the same msg id
    if (d === 0) return prev.emitted?.updatedAt === p.at ? { state: prev, emit: prev.emitted } : { state: prev }
  }
  const position = { lat: p.lat, lon: p.lon, at: p.at, ...(p.speedKmh === undefined ? {} : { speedKmh: p.speedKmh }) }
  if (!prev?.routeId) return { state: { ...(prev ?? { truckId: p.truckId, stops: [], nextStop: 0 }), position } }

  let nextStop = prev.nextStop
  while (nextStop < prev.stops.length && haversineKm(position, prev.stops[nextStop]!) * 1000 <= cfg.arrivalMeters) nextStop++
  const remaining = prev.stops.slice(nextStop)
  const remainingKm = pathKm(position, remaining)
  const speed = p.speedKmh !== undefined && p.speedKmh > MOVING_KMH ? p.speedKmh : cfg.avgSpeedKmh
  const eta = estimateEta(new Date(ms(p.at)), remainingKm, remaining.length, {
    avgSpeedKmh: speed,
    serviceMinutesPerStop: cfg.serviceMinutes,
  }).toISOString()
  const state: TruckTrack = { ...prev, position, nextStop, remainingKm: round3(remainingKm), eta }

  const shown = prev.shownEta ?? prev.plannedEta
  if (shown && Math.abs(ms(eta) - ms(shown)) <= cfg.etaThresholdSeconds * 1000) return { state }
  const emit: EtaUpdated = {
    truckId: p.truckId,
    routeId: prev.routeId,
    eta,
    previousEta: shown ?? eta,
    ...(remaining[0] ? { nextStopId: remaining[0].id } : {}),
    remainingKm: round3(remainingKm),
    updatedAt: p.at,
  }
  return { state: { ...state, shownEta: eta, emitted: emit }, emit }
}

/**
 * Whether `next` (applyPosition's state) is worth a write over `prev`. Between writes the stored record is the
 * consistent snapshot of an earlier ping (position, remaining distance and estimate together), never a mix; a ping
 * older than the stored one is still ignored, and one in between is judged against the stored one, as before.
 */
export function worthWriting(prev: TruckTrack | undefined, next: TruckTrack, writeSeconds = config.positionWriteSeconds): boolean {
  if (!prev?.position || !next.position) return next !== prev
  if (next === prev) return false
  if (next.routeId !== prev.routeId || next.nextStop !== prev.nextStop || next.shownEta !== prev.shownEta) return true
  return ms(next.position.at) - ms(prev.position.at) >= writeSeconds * 1000
}

// --- HTTP -----------------------------------------------------------------------------------------------------

export const PositionBatch = v.strictObject({
  positions: v.pipe(
    v.array(PositionReported),
    v.minLength(1, "at least 1 position"),
    v.maxLength(MAX_BATCH, `at most ${MAX_BATCH} positions per batch`),
  ),
})
const parsePositionBatch = parser(PositionBatch)

/** Positions stamped further ahead than the allowed skew, as issues naming each one (`positions.3.at`). */
export function futurePositions(positions: PositionReported[], now: number, maxSkewSeconds = config.maxFutureSkewSeconds) {
  return positions.flatMap((p, i) =>
    ms(p.at) > now + maxSkewSeconds * 1000
      ? [
          {
            path: `positions.${i}.at`,
            message: `${p.at} is more than ${maxSkewSeconds} s ahead of this server's clock (${new Date(now).toISOString()})`,
          },
        ]
      : [],
  )
}

/** Deterministic: a client retrying a batch (after a timeout, say) publishes the same ids, and the stream dedupes. */
export const positionId = (p: PositionReported) => `pos:${p.truckId}:${p.at}`

type Counter = ReturnType<Runtime["metrics"]["counter"]>

async function postPositions(request: Request, rt: Runtime, recorded: Counter): Promise<Response> {
  const body = await readJson(request, config.maxBodyBytes)
  const parsed = parsePositionBatch(body)
  if (!parsed.success) throw new StatusError(400, { error: "invalid position batch", issues: issuesOf(parsed.issues) })
  // a batch is taken whole or not at all: one bad ping refuses it, naming that ping, and records none
  const ahead = futurePositions(parsed.output.positions, Date.now())
  if (ahead.length) throw new StatusError(400, { error: "invalid position batch", issues: ahead })
  if (!rt.connected) return retryLater("not connected to NATS; no position was recorded, retry later")
  const { positions } = parsed.output
  const parent = requestTraceparent(request)
  try {
    // publishes still in flight when the timeout fires may land later; the client's retry is deduped by id
    await withTimeout(
      Promise.all(positions.map((p) => rt.publish("PositionReported", p, { id: positionId(p), traceparent: parent }))),
      config.publishTimeoutMs,
      () => new Error(`no acknowledgement within ${config.publishTimeoutMs} ms`),
    )
  } catch (err) {
    rt.log.warn("position batch not recorded", { size: positions.length, error: err })
    return retryLater(`NATS did not record the batch (${(err as Error).message}); retry it, already recorded pings are deduped`)
  }
  recorded.inc({}, positions.length)
  return json({ accepted: positions.length }, { status: 202 })
}

// --- wiring ---------------------------------------------------------------------------------------------------

/**
 * `logiflow rebuild tracking` replays ROUTING, then POSITIONS, into an emptied tracking-trucks (mesh/rebuild.ts).
 * The projection comes out as the events left it; the EtaUpdated a historical ping caused was published when it first
 * came, so a ping from before the rebuild started updates the state without publishing it again.
 */
let rebuild: Follower | undefined
const historical = (ping: PositionReported) => {
  const since = rebuild?.state?.startedAt
  return since !== undefined && ms(ping.at) < ms(since)
}

const tracking = worker({
  name: "tracking",
  consumes: {
    // Both handlers read–modify–write the truck's record with a revision check (updateJson), not just relying on
    // per-key lanes: lanes order one truck's events within one process, but two instances on the same durable can
    // hold the same truck's messages at once. Older input is recognised by its time, so order does not decide state.
    RouteCalculated: async (route, ctx) => {
      const kv = await ctx.kv(TRUCKS_BUCKET)
      await updateJson<TruckTrack>(kv, route.truckId, (prev) => applyRoute(prev, route))
    },
    PositionReported: async (ping, ctx) => {
      const kv = await ctx.kv(TRUCKS_BUCKET)
      let emit: EtaUpdated | undefined
      await updateJson<TruckTrack>(kv, ping.truckId, (prev) => {
        const r = applyPosition(prev, ping)
        emit = r.emit
        // returning prev writes nothing (updateJson)
        return worthWriting(prev, r.state) ? r.state : prev!
      })
      const out: Outgoing[] = []
      if (emit && !historical(ping)) out.push({ name: "EtaUpdated", data: emit, id: `eta:${emit.routeId}:${emit.updatedAt}` })
      return out
    },
  },
  onStart: async (rt) => void (rebuild = await followRebuild(rt, { begin() {}, end() {} })),
  onStop: () => rebuild?.stop(),
  beat: () => ({ rebuilding: rebuild?.state?.startedAt }),
  routes: (router, rt) => {
    const recorded = rt.metrics.counter("tracking_positions_total", "Pings recorded by POST /positions", [])
    router.post("/positions", requireApiKey(rt, "positions"), (request) => postPositions(request, rt, recorded))
  },
})

export default tracking
runWhenMain(import.meta, tracking)
