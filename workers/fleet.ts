// workers/fleet.ts — a truck simulator for demos and benches: trucks around Berlin ask routing for routes over HTTP
// and report their positions to tracking, like real trucks would. The simulation is pure; only the loop does I/O.
import type { PositionReported, Stop } from "../contracts/mod.ts"
import { env, envInt, type Logger, newId, type Runtime, runWhenMain, secret, worker } from "../mesh/mod.ts"
import { haversineKm, type Point } from "./plan.ts"

const config = {
  trucks: envInt("FLEET_TRUCKS", 5),
  seed: envInt("FLEET_SEED", 1),
  routeIntervalMs: envInt("FLEET_ROUTE_INTERVAL_MS", 5000),
  positionIntervalMs: envInt("FLEET_POSITION_INTERVAL_MS", 2000),
  // simulated seconds per real second: at 1 a truck would take an hour to cross the city
  timeScale: envInt("FLEET_TIME_SCALE", 60),
  routingUrl: env("ROUTING_URL") ?? "http://127.0.0.1:8081",
  trackingUrl: env("TRACKING_URL") ?? "http://127.0.0.1:8082",
  requestTimeoutMs: envInt("FLEET_REQUEST_TIMEOUT_MS", 5000),
}

// --- the simulation (pure) ------------------------------------------------------------------------------------

/** Berlin's bounding box (administrative boundary), degrees. */
export const BERLIN = { south: 52.3383, north: 52.6755, west: 13.0884, east: 13.7611 } as const
export const CUSTOMERS = ["acme", "globex", "initech"] as const
const DEPOTS: Point[] = [
  { lat: 52.5365, lon: 13.3436 }, // Westhafen
  { lat: 52.4733, lon: 13.4015 }, // Tempelhof
  { lat: 52.5434, lon: 13.5632 }, // Marzahn
]
const POOL_SIZE = 300

/** mulberry32: small, fast, and the same sequence for the same seed on every runtime. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export type Leg = { routeId: string; stops: Stop[] /** index of the stop driven to; = stops.length when done */; next: number }
export type Truck = { id: string; customerId: string; lat: number; lon: number; speedKmh: number; route?: Leg }
export type Fleet = { stops: Stop[]; trucks: Truck[] }

const round6 = (x: number) => Math.round(x * 1e6) / 1e6

/** `n` trucks and a pool of delivery addresses inside Berlin, all derived from `seed`. */
export function simulate(seed: number, n: number, poolSize = POOL_SIZE): Fleet {
  const rand = prng(seed)
  const inBerlin = (): Point => ({
    lat: round6(BERLIN.south + rand() * (BERLIN.north - BERLIN.south)),
    lon: round6(BERLIN.west + rand() * (BERLIN.east - BERLIN.west)),
  })
  const stops = Array.from({ length: poolSize }, (_, i) => ({ id: `berlin-${seed}-${i}`, ...inBerlin() }))
  const trucks = Array.from({ length: n }, (_, i) => ({
    id: `truck-${String(i + 1).padStart(2, "0")}`,
    customerId: CUSTOMERS[i % CUSTOMERS.length]!,
    ...DEPOTS[i % DEPOTS.length]!,
    speedKmh: 25 + Math.round(rand() * 30),
  }))
  return { stops, trucks }
}

/** The body of a POST /routes for `truck`: 3–8 distinct addresses from the pool, starting where the truck is. */
export function routeRequest(fleet: Fleet, truck: Truck, rand: () => number, now: Date) {
  const count = Math.min(fleet.stops.length, 3 + Math.floor(rand() * 6))
  const picked = new Set<number>()
  while (picked.size < count) picked.add(Math.floor(rand() * fleet.stops.length))
  return {
    truckId: truck.id,
    customerId: truck.customerId,
    depot: { lat: truck.lat, lon: truck.lon },
    stops: [...picked].map((i) => fleet.stops[i]!),
    departAt: now.toISOString(),
  }
}

export const assignRoute = (truck: Truck, routeId: string, stops: Stop[]): Truck => ({ ...truck, route: { routeId, stops, next: 0 } })

/** Drives `km` along the truck's route, stop after stop; a truck without a route, or done with it, stays put. */
export function advance(truck: Truck, km: number): Truck {
  let { lat, lon } = truck
  const route = truck.route
  if (!route) return truck
  let next = route.next
  let left = km
  while (left > 0 && next < route.stops.length) {
    const to = route.stops[next]!
    const d = haversineKm({ lat, lon }, to)
    if (d <= left) {
      ;({ lat, lon } = to)
      left -= d
      next++
    } else {
      // straight-line interpolation: over a few km inside one city the error against the great circle is negligible
      const f = left / d
      lat += (to.lat - lat) * f
      lon += (to.lon - lon) * f
      left = 0
    }
  }
  return { ...truck, lat, lon, route: { ...route, next } }
}

export const driving = (t: Truck): boolean => !!t.route && t.route.next < t.route.stops.length

/** Moves every truck by `elapsedMs` of real time, `timeScale` times faster. */
export function step(fleet: Fleet, elapsedMs: number, timeScale: number): Fleet {
  const hours = (elapsedMs * timeScale) / 3_600_000
  return { ...fleet, trucks: fleet.trucks.map((t) => advance(t, t.speedKmh * hours)) }
}

export function positions(fleet: Fleet, at: Date): PositionReported[] {
  return fleet.trucks.map((t) => ({
    truckId: t.id,
    lat: round6(t.lat),
    lon: round6(t.lon),
    speedKmh: driving(t) ? t.speedKmh : 0,
    at: at.toISOString(),
  }))
}

// --- the loop -------------------------------------------------------------------------------------------------

/** Logs a link's failures once when it goes down and once when it comes back, not on every retry. */
function link(log: Logger, name: string) {
  let up: boolean | undefined
  return {
    ok() {
      if (up === false) log.info(`${name} reachable again`)
      up = true
    },
    fail(error: string) {
      if (up !== false) log.warn(`${name} unreachable; retrying quietly until it answers`, { error })
      up = false
    },
  }
}

const describe = (err: unknown) => {
  const e = err as Error & { cause?: { code?: string; message?: string } }
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err)
}

type Pending = { key: string; body: ReturnType<typeof routeRequest> }

function simulator(rt: Runtime) {
  let fleet = simulate(config.seed, config.trucks)
  const rand = prng(config.seed ^ 0x5bd1e995)
  // keys must not repeat across runs, or a restarted fleet would get yesterday's routes back from routing's store
  const run = newId()
  const pending = new Map<string, Pending>()
  let requests = 0
  const routing = link(rt.log, "routing")
  const tracking = link(rt.log, "tracking")
  const routeOutcomes = rt.metrics.counter("fleet_route_requests_total", "Route requests by outcome")
  const positionOutcomes = rt.metrics.counter("fleet_position_posts_total", "Position batches posted by outcome")
  const abort = new AbortController()
  const signal = () => AbortSignal.any([abort.signal, AbortSignal.timeout(config.requestTimeoutMs)])
  // like a real dispatcher and truck gateway, the simulator needs an API key with both scopes (routes+positions)
  const apiKey = secret("FLEET_API_KEY")
  if (!apiKey) rt.log.warn("FLEET_API_KEY is not set: routing and tracking will refuse the simulator's requests with 401")
  const auth: Record<string, string> = apiKey ? { authorization: `Bearer ${apiKey}` } : {}
  const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...auth, ...headers },
      body: JSON.stringify(body),
      signal: signal(),
    })

  async function requestRoute(truckId: string): Promise<void> {
    const truck = fleet.trucks.find((t) => t.id === truckId)!
    // a failed attempt is retried with the same key and body, so a route routing did record is not recorded twice
    const p = pending.get(truckId) ?? { key: `fleet-${run}-${++requests}`, body: routeRequest(fleet, truck, rand, new Date()) }
    pending.set(truckId, p)
    try {
      const res = await post(`${config.routingUrl}/routes`, p.body, { "idempotency-key": p.key })
      const answer = (await res.json().catch(() => ({}))) as { routeId?: string; stops?: Stop[]; error?: string }
      if (res.status === 202 && answer.routeId && answer.stops) {
        routing.ok()
        pending.delete(truckId)
        fleet = { ...fleet, trucks: fleet.trucks.map((t) => (t.id === truckId ? assignRoute(t, answer.routeId!, answer.stops!) : t)) }
        return routeOutcomes.inc({ outcome: "accepted" })
      }
      routeOutcomes.inc({ outcome: String(res.status) })
      // unavailable, over the key's rate, or the key refused: retried quietly, and the outage logged once
      if (res.status >= 500 || res.status === 429 || res.status === 401 || res.status === 403)
        return routing.fail(`${res.status}: ${answer.error ?? res.statusText}`)
      // routing refused this request for good (400, 422): retrying it would fail forever
      pending.delete(truckId)
      rt.log.warn("routing refused a route request", { truckId, status: res.status, error: answer.error })
    } catch (err) {
      routeOutcomes.inc({ outcome: "unreachable" })
      if (!abort.signal.aborted) routing.fail(describe(err))
    }
  }

  async function reportPositions(elapsedMs: number): Promise<void> {
    fleet = step(fleet, elapsedMs, config.timeScale)
    try {
      const res = await post(`${config.trackingUrl}/positions`, { positions: positions(fleet, new Date()) })
      await res.body?.cancel()
      positionOutcomes.inc({ outcome: String(res.status) })
      if (res.ok) tracking.ok()
      else tracking.fail(`${res.status} ${res.statusText}`)
    } catch (err) {
      positionOutcomes.inc({ outcome: "unreachable" })
      if (!abort.signal.aborted) tracking.fail(describe(err))
    }
  }

  // a tick still running when the next is due is skipped, so a slow peer never piles up requests
  const every = (ms: number, tick: (elapsedMs: number) => Promise<unknown>) => {
    let busy: Promise<unknown> | undefined
    let last = Date.now()
    const fire = () => {
      if (busy) return
      const now = Date.now()
      busy = tick(now - last).finally(() => (busy = undefined))
      last = now
    }
    const timer = setInterval(fire, ms)
    fire()
    return { stop: () => (clearInterval(timer), busy) }
  }

  let loops: { stop(): Promise<unknown> | undefined }[] = []
  return {
    get fleet() {
      return fleet
    },
    start() {
      loops = [
        every(config.routeIntervalMs, () => Promise.all(fleet.trucks.map((t) => requestRoute(t.id)))),
        every(config.positionIntervalMs, reportPositions),
      ]
      rt.log.info("fleet driving", { trucks: fleet.trucks.length, routing: config.routingUrl, tracking: config.trackingUrl })
    },
    async stop() {
      const inflight = loops.map((l) => l.stop())
      abort.abort()
      await Promise.allSettled(inflight)
    },
  }
}

// --- wiring ---------------------------------------------------------------------------------------------------

const running = new WeakMap<Runtime, ReturnType<typeof simulator>>()

const fleet = worker({
  name: "fleet",
  routes: (router, rt) => {
    router.get("/fleet", () => ({ trucks: running.get(rt)?.fleet.trucks ?? [] }))
  },
  onStart: (rt) => {
    const sim = simulator(rt)
    running.set(rt, sim)
    sim.start()
  },
  onStop: async (rt) => {
    await running.get(rt)?.stop()
    running.delete(rt)
  },
})

export default fleet
runWhenMain(import.meta, fleet)
