// workers/fleet.ts: the pure simulator, then a short run against a live routing worker and a stand-in tracking.
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import * as v from "valibot"
import { PositionReported, type RouteCalculated, topology } from "../contracts/mod.ts"
import { serve, type Server } from "../mesh/http.ts"
import { provision } from "../mesh/provision.ts"
import type { Running } from "../mesh/worker.ts"
import { connectTo, freePort, sleep, startServer, type TestServer, waitUntil, suite } from "./harness.ts"
import { haversineKm } from "../workers/plan.ts"

// fleet reads these at import; nothing listens on the routing port until the test starts routing there
const routingPort = await freePort()
const trackingPort = await freePort()
Object.assign(process.env, {
  FLEET_TRUCKS: "3",
  FLEET_SEED: "7",
  FLEET_ROUTE_INTERVAL_MS: "300",
  FLEET_POSITION_INTERVAL_MS: "150",
  FLEET_TIME_SCALE: "600",
  FLEET_REQUEST_TIMEOUT_MS: "2000",
  ROUTING_URL: `http://127.0.0.1:${routingPort}`,
  TRACKING_URL: `http://127.0.0.1:${trackingPort}`,
})
const {
  default: fleetWorker,
  BERLIN,
  CUSTOMERS,
  advance,
  assignRoute,
  positions,
  prng,
  routeRequest,
  simulate,
  step,
} = await import("../workers/fleet.ts")
const { default: routing, RouteRequest } = await import("../workers/routing.ts")

const pure = suite("fleet simulator")

const inBerlin = (p: { lat: number; lon: number }) =>
  p.lat >= BERLIN.south && p.lat <= BERLIN.north && p.lon >= BERLIN.west && p.lon <= BERLIN.east

pure("simulate - the same seed gives the same city and trucks; another seed another city", () => {
  const a = simulate(42, 5)
  assert.equal(simulate(42, 5), a)
  assert.is(a.stops.length, 300)
  assert.is(new Set(a.stops.map((s) => s.id)).size, 300)
  assert.ok(a.stops.every(inBerlin), "every address inside Berlin's box")
  // spread over the city, not bunched in a corner
  const lats = a.stops.map((s) => s.lat)
  const lons = a.stops.map((s) => s.lon)
  assert.ok(Math.max(...lats) - Math.min(...lats) > 0.8 * (BERLIN.north - BERLIN.south))
  assert.ok(Math.max(...lons) - Math.min(...lons) > 0.8 * (BERLIN.east - BERLIN.west))
  assert.equal(
    a.trucks.map((t) => t.id),
    ["truck-01", "truck-02", "truck-03", "truck-04", "truck-05"],
  )
  assert.equal(
    a.trucks.map((t) => t.customerId),
    ["acme", "globex", "initech", "acme", "globex"],
  )
  assert.ok(a.trucks.every((t) => inBerlin(t) && t.speedKmh >= 25 && t.speedKmh <= 55 && !t.route))
  const b = simulate(43, 5)
  assert.not.equal(
    b.stops.map((s) => [s.lat, s.lon]),
    a.stops.map((s) => [s.lat, s.lon]),
  )
})

pure("routeRequest - 3 to 8 distinct pool addresses from where the truck stands, a body routing accepts", () => {
  const f = simulate(1, 3)
  const rand = prng(9)
  const pool = new Map(f.stops.map((s) => [s.id, s]))
  for (let i = 0; i < 50; i++) {
    const truck = f.trucks[i % 3]!
    const body = routeRequest(f, truck, rand, new Date("2026-11-25T08:00:00.000Z"))
    assert.ok(body.stops.length >= 3 && body.stops.length <= 8, `${body.stops.length} stops`)
    assert.is(new Set(body.stops.map((s) => s.id)).size, body.stops.length)
    for (const s of body.stops) assert.equal(pool.get(s.id), s)
    assert.equal(body.depot, { lat: truck.lat, lon: truck.lon })
    assert.is(body.truckId, truck.id)
    assert.ok((CUSTOMERS as readonly string[]).includes(body.customerId))
    assert.ok(v.safeParse(RouteRequest, body).success)
  }
  assert.equal(routeRequest(f, f.trucks[0]!, prng(9), new Date(0)), routeRequest(f, f.trucks[0]!, prng(9), new Date(0)))
})

pure("advance - a truck closes in on its next stop by the distance driven, then takes the next one", () => {
  const f = simulate(3, 1)
  const stops = f.stops.slice(0, 3)
  let t = assignRoute(f.trucks[0]!, "r-1", stops)
  const first = haversineKm(t, stops[0]!)
  t = advance(t, 1)
  assert.is(t.route!.next, 0)
  const closer = haversineKm(t, stops[0]!)
  assert.ok(Math.abs(first - closer - 1) < 0.01, `moved ${first - closer} km toward the stop, not 1`)
  t = advance(t, closer + 0.5)
  assert.is(t.route!.next, 1, "reached the first stop and drove on")
  assert.ok(Math.abs(haversineKm(stops[0]!, stops[1]!) - haversineKm(t, stops[1]!) - 0.5) < 0.01)
  t = advance(t, 1e6)
  assert.is(t.route!.next, 3)
  assert.equal({ lat: t.lat, lon: t.lon }, { lat: stops[2]!.lat, lon: stops[2]!.lon }, "stops at the last stop")
  assert.equal(advance(t, 5), t)
  const [p] = positions({ stops: [], trucks: [t] }, new Date("2026-11-25T08:00:00.000Z"))
  assert.is(p!.speedKmh, 0, "a truck done with its route stands still")
  assert.ok(v.safeParse(PositionReported, p).success)
})

pure("step - speed × scaled time: 40 km/h for 90 real seconds at 60× is 60 km of driving", () => {
  const f = simulate(5, 1)
  const truck = { ...f.trucks[0]!, speedKmh: 40 }
  const far = [{ id: "far", lat: truck.lat + 1, lon: truck.lon }] // ~111 km north
  const moved = step({ ...f, trucks: [assignRoute(truck, "r", far)] }, 90_000, 60).trucks[0]!
  assert.ok(Math.abs(haversineKm(truck, moved) - 60) < 0.1, `${haversineKm(truck, moved)} km`)
  assert.ok(moved.lat > truck.lat)
  const [p] = positions({ stops: [], trucks: [moved] }, new Date())
  assert.is(p!.speedKmh, 40)
})

pure.run()

const live = suite("fleet live")
let server: TestServer
let nc: NatsConnection
let jsm: JetStreamManager
let tracking: Server
let fleetRunning: Running | undefined
let routingRunning: Running | undefined
const batches: { positions: unknown[] }[] = []
let trackingStatus = 404
const logged: string[] = []
const consoleLog = console.log

live.before(async () => {
  server = await startServer()
  nc = await connectTo(server)
  jsm = await jetstreamManager(nc)
  await provision(nc, topology(), { consumers: () => false })
  // tracking answers 404 (not deployed yet) until the test flips it
  tracking = await serve(
    async (req) => {
      if (trackingStatus !== 202) return Response.json({ error: "not found" }, { status: trackingStatus })
      batches.push((await req.json()) as { positions: unknown[] })
      return Response.json({ accepted: true }, { status: 202 })
    },
    { port: trackingPort, hostname: "127.0.0.1" },
  )
})
live.after(async () => {
  console.log = consoleLog
  await fleetRunning?.stop()
  await routingRunning?.stop()
  await tracking.close()
  await nc.close()
  await server.close()
})

async function routes(): Promise<RouteCalculated[]> {
  const info = await jsm.streams.info("ROUTING")
  const out = []
  for (let seq = info.state.first_seq; info.state.messages > 0 && seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage("ROUTING", { seq }).catch(() => null)
    if (m) out.push(m.json<RouteCalculated>())
  }
  return out
}

live("routing down, then up: fleet keeps going, logs the outage once, and its routes land in ROUTING", async () => {
  process.env.LOG_LEVEL = "warn"
  console.log = (...args: unknown[]) => void logged.push(args.map(String).join(" "))
  try {
    fleetRunning = await fleetWorker.start({ url: server.url, port: 0, hostname: "127.0.0.1", drainTimeoutMs: 2000 })
  } finally {
    process.env.LOG_LEVEL = "error"
  }
  // several failed rounds against a routing port nobody listens on
  await sleep(1200)
  assert.is((await fetch(`http://127.0.0.1:${fleetRunning.port}/healthz`)).status, 200)
  const fleetLines = () => logged.filter((l) => l.includes('"worker":"fleet"'))
  assert.is(fleetLines().filter((l) => l.includes("routing unreachable")).length, 1, fleetLines().join("\n"))
  assert.is(fleetLines().filter((l) => l.includes("tracking unreachable")).length, 1, fleetLines().join("\n"))
  assert.match(fleetLines().find((l) => l.includes("tracking unreachable"))!, /404/)

  routingRunning = await routing.start({ url: server.url, port: routingPort, hostname: "127.0.0.1", drainTimeoutMs: 2000 })
  const landed = await waitUntil(
    async () => {
      const r = await routes()
      return new Set(r.map((x) => x.truckId)).size === 3 && r.length >= 6 ? r : null
    },
    { timeoutMs: 15_000, what: "routes from all 3 trucks" },
  )
  for (const r of landed) {
    assert.ok(["truck-01", "truck-02", "truck-03"].includes(r.truckId))
    assert.is(r.customerId, { "truck-01": "acme", "truck-02": "globex", "truck-03": "initech" }[r.truckId])
    assert.ok(r.stops.length >= 3 && r.stops.length <= 8 && r.stops.every(inBerlin))
  }
  // retried with the same Idempotency-Key: the first attempts that failed did not turn into extra routes later
  assert.is(new Set(landed.map((r) => r.routeId)).size, landed.length)

  const state = (await (await fetch(`http://127.0.0.1:${fleetRunning.port}/fleet`)).json()) as {
    trucks: { id: string; route?: { routeId: string } }[]
  }
  const known = new Set((await routes()).map((r) => r.routeId))
  assert.ok(
    state.trucks.every((t) => t.route && known.has(t.route.routeId)),
    "each truck drives a route routing recorded",
  )
})

live("tracking back: position batches arrive in the tracking contract, moving along the routes", async () => {
  trackingStatus = 202
  await waitUntil(() => batches.length >= 4, { timeoutMs: 10_000, what: "4 position batches" })
  for (const b of batches) {
    assert.is(b.positions.length, 3)
    for (const p of b.positions) assert.ok(v.safeParse(PositionReported, p).success, JSON.stringify(p))
  }
  const track = (truckId: string) =>
    batches.map((b) => b.positions.find((p) => (p as { truckId: string }).truckId === truckId) as { lat: number; lon: number })
  const moved = ["truck-01", "truck-02", "truck-03"].filter((id) => {
    const t = track(id)
    return t.some((p) => p.lat !== t[0]!.lat || p.lon !== t[0]!.lon)
  })
  assert.equal(moved, ["truck-01", "truck-02", "truck-03"])
  assert.is(logged.filter((l) => l.includes('"worker":"fleet"') && l.includes("unreachable")).length, 2, "no new outage lines")
})

live("stop - the simulator stops with the worker: no more route requests or positions", async () => {
  await fleetRunning!.stop()
  fleetRunning = undefined
  const count = (await routes()).length
  const seen = batches.length
  await sleep(700)
  assert.is((await routes()).length, count)
  assert.is(batches.length, seen)
})

live.run()
