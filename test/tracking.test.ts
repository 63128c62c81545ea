// The tracking worker against a real nats-server: POST /positions → PositionReported, the per-truck projection,
// EtaUpdated only past the threshold, dedupe, and 503 (never a hang) when NATS cannot take the batch.
import type { JetStreamManager, JetStreamClient } from "@nats-io/jetstream"
import { type KV, Kvm } from "@nats-io/kv"
import type { NatsConnection } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import {
  type EtaUpdated,
  type EventName,
  type PositionReported,
  type RouteCalculated,
  eventOfSubject,
  streamOf,
  topology,
} from "../contracts/mod.ts"
import { getJson, updateJson } from "../mesh/kv.ts"
import { provision } from "../mesh/provision.ts"
import { publishEvent } from "../mesh/publish.ts"
import type { Running } from "../mesh/worker.ts"
import { connectTo, natsFixture, type TestServer, testAuth, waitUntil, suite } from "./harness.ts"

// read when the worker module loads: a short bound so the "NATS hangs" case answers quickly
process.env.TRACKING_PUBLISH_TIMEOUT_MS = "1500"
const { applyPosition, applyRoute, default: tracking } = await import("../workers/tracking.ts")
type TruckTrack = import("../workers/tracking.ts").TruckTrack

const test = suite("tracking")
let server: TestServer
let nc: NatsConnection
let js: JetStreamClient
let jsm: JetStreamManager
let kv: KV
let w: Running
let proxy: Awaited<ReturnType<typeof tcpProxy>>

/**
 * The worker reaches NATS through this, so a test can freeze the link: sockets stay open, bytes stop flowing,
 * like a hung server. (SIGSTOP on nats-server proved unreliable on these machines: in about one run in ten the
 * "stopped" server still answered within milliseconds, cause not pinned down.)
 */
async function tcpProxy(target: number) {
  const net = await import("node:net")
  let frozen = false
  const held: (() => void)[] = []
  const relay = (from: import("node:net").Socket, to: import("node:net").Socket) => {
    from.on("data", (b) => (frozen ? held.push(() => to.write(b)) : to.write(b)))
    from.on("close", () => to.destroy())
    from.on("error", () => to.destroy())
  }
  const sockets = new Set<import("node:net").Socket>()
  const srv = net.createServer((client) => {
    const upstream = net.connect(target, "127.0.0.1")
    for (const s of [client, upstream]) sockets.add(s), s.on("close", () => sockets.delete(s))
    relay(client, upstream)
    relay(upstream, client)
  })
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r))
  const port = (srv.address() as import("node:net").AddressInfo).port
  return {
    url: `nats://127.0.0.1:${port}`,
    freeze: () => void (frozen = true),
    thaw: () => {
      frozen = false
      for (const f of held.splice(0)) f()
    },
    close: () => new Promise<void>((r) => (sockets.forEach((s) => s.destroy()), srv.close(() => r()))),
  }
}

test.before(async () => {
  ;({ server, nc, js, jsm } = await natsFixture())
  await provision(nc, topology(), { consumers: () => false })
  kv = await new Kvm(nc).open("tracking-trucks")
  proxy = await tcpProxy(server.port)
  w = await tracking.start({ url: proxy.url, port: 0, drainTimeoutMs: 2000 })
})
test.after(async () => {
  await w?.stop()
  await proxy?.close()
  await nc?.close()
  await server?.close()
})

const url = (path: string) => `http://127.0.0.1:${w.port}${path}`
const post = (body: unknown, type = "application/json") =>
  fetch(url("/positions"), {
    method: "POST",
    headers: { "content-type": type, ...testAuth().headers.positions },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  })

const at = (hms: string) => `2026-11-25T${hms}.000Z`
const ping = (truckId: string, lat: number, lon: number, hms: string, speedKmh?: number): PositionReported => ({
  truckId,
  lat,
  lon,
  at: at(hms),
  ...(speedKmh === undefined ? {} : { speedKmh }),
})

/** Every stored event of `name` (optionally of one truck), in stream order. */
async function stored<N extends EventName>(name: N, truckId?: string): Promise<{ id: string; data: unknown }[]> {
  const info = await jsm.streams.info(streamOf(name))
  const out = []
  for (let seq = info.state.first_seq; info.state.messages > 0 && seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(streamOf(name), { seq }).catch(() => null)
    if (!m || eventOfSubject(m.subject) !== name) continue
    if (truckId !== undefined && m.header.get("ce-subject") !== truckId) continue
    out.push({ id: m.header.get("ce-id"), data: m.json() })
  }
  return out
}

/** Both tracking consumers have nothing pending: every handler ran and published before its ack. */
const settled = () =>
  waitUntil(
    async () => {
      const infos = await Promise.all([jsm.consumers.info("ROUTING", "tracking"), jsm.consumers.info("POSITIONS", "tracking")])
      return infos.every((i) => i.num_pending === 0 && i.num_ack_pending === 0)
    },
    { what: "tracking consumers idle" },
  )

const track = (truckId: string) => getJson<TruckTrack>(kv, truckId)

// three stops on the equator, 0.1° (11.12 km) apart
const route = (truckId: string, over: Partial<RouteCalculated> = {}): RouteCalculated => ({
  routeId: `route-${truckId}`,
  truckId,
  customerId: "acme",
  stops: [
    { id: "A", lat: 0, lon: 0.1 },
    { id: "B", lat: 0, lon: 0.2 },
    { id: "C", lat: 0, lon: 0.3 },
  ],
  distanceKm: 33.359,
  eta: at("09:10:00"),
  calculatedAt: at("07:55:00"),
  ...over,
})

const cfg = { arrivalMeters: 150, avgSpeedKmh: 50, serviceMinutes: 10, etaThresholdSeconds: 120 }
const KM_PER_DEGREE = (6371.0088 * Math.PI) / 180

test("projection - arrival radius, speed rule and ETA arithmetic", () => {
  const r = applyRoute(undefined, route("u"))
  // 0.00126° ≈ 140 m before A: arrived; 0.00144° ≈ 160 m: not yet
  assert.is(applyPosition(r, ping("u", 0, 0.1 - 0.00126, "08:00:00"), cfg).state.nextStop, 1)
  assert.is(applyPosition(r, ping("u", 0, 0.1 - 0.00144, "08:00:00"), cfg).state.nextStop, 0)
  // standing (≤ 5 km/h) falls back to the average speed; moving uses its own
  const standing = applyPosition(r, ping("u", 0, 0, "08:00:00", 4), cfg).state
  const fast = applyPosition(r, ping("u", 0, 0, "08:00:00", 100), cfg).state
  const km = 0.3 * KM_PER_DEGREE
  assert.ok(Math.abs(standing.remainingKm! - km) < 0.001)
  const eta = (speed: number) => Date.parse(at("08:00:00")) + Math.round((km / speed) * 3_600_000 + 3 * 600_000)
  assert.ok(Math.abs(Date.parse(standing.eta!) - eta(50)) <= 1)
  assert.ok(Math.abs(Date.parse(fast.eta!) - eta(100)) <= 1)
  // past the last stop: nothing left, the ETA is the ping's time
  const done = applyPosition({ ...r, nextStop: 2 }, ping("u", 0, 0.3, "10:00:00"), cfg)
  assert.is(done.state.nextStop, 3)
  assert.is(done.state.remainingKm, 0)
  assert.is(done.state.eta, at("10:00:00"))
  assert.is(done.emit?.nextStopId, undefined)
})

test("projection - idempotent: the same route again, an older ping, the same ping again", () => {
  const r = applyRoute(undefined, route("u"))
  assert.is(applyRoute(r, route("u")), r)
  assert.is(applyRoute(r, route("u", { routeId: "older", calculatedAt: at("07:00:00") })), r)
  const { state, emit } = applyPosition(r, ping("u", 0, 0.0991, "08:12:00"), cfg)
  assert.ok(emit)
  const older = applyPosition(state, ping("u", 0, 0, "08:11:00"), cfg)
  assert.is(older.state, state)
  assert.is(older.emit, undefined)
  // a redelivery of the ping that emitted hands back the very same event (same id → deduped by the stream)
  const again = applyPosition(state, ping("u", 0, 0.0991, "08:12:00"), cfg)
  assert.is(again.state, state)
  assert.equal(again.emit, emit)
  // a newer route starts over from its first stop and keeps the last seen position
  const newer = applyRoute(state, route("u", { routeId: "r2", calculatedAt: at("08:30:00") }))
  assert.is(newer.nextStop, 0)
  assert.equal(newer.position, state.position)
  assert.is(newer.eta, undefined)
})

test("updateJson - concurrent read–modify–writes from two connections lose no update", async () => {
  const other = await connectTo(server)
  try {
    const kv2 = await new Kvm(other).open("tracking-trucks")
    const bump = (k: KV) => updateJson<{ n: number }>(k, "cas-probe", (prev) => ({ n: (prev?.n ?? 0) + 1 }))
    await Promise.all(Array.from({ length: 20 }, (_, i) => bump(i % 2 ? kv : kv2)))
    assert.equal(await getJson(kv, "cas-probe"), { n: 20 })
    // returning prev itself writes nothing
    const rev = (await kv.get("cas-probe"))!.revision
    await updateJson<{ n: number }>(kv, "cas-probe", (prev) => prev!)
    assert.is((await kv.get("cas-probe"))!.revision, rev)
  } finally {
    await other.close()
  }
})

test("POST /positions - 202 with the count, one PositionReported per ping, stored without ETA while no route", async () => {
  const pings = [
    ping("t-noroute", 52.5, 13.4, "08:00:00"),
    ping("t-noroute", 52.51, 13.41, "08:01:00", 30),
    ping("t-other", 48.1, 11.5, "08:00:30"),
  ]
  const res = await post({ positions: pings })
  assert.is(res.status, 202)
  assert.equal(await res.json(), { accepted: 3 })
  const events = await stored("PositionReported")
  assert.equal(
    events.map((e) => e.id),
    ["pos:t-noroute:2026-11-25T08:00:00.000Z", "pos:t-noroute:2026-11-25T08:01:00.000Z", "pos:t-other:2026-11-25T08:00:30.000Z"],
  )
  assert.equal(
    events.map((e) => e.data),
    pings,
  )
  await settled()
  const t = await track("t-noroute")
  assert.equal(t, { truckId: "t-noroute", stops: [], nextStop: 0, position: { lat: 52.51, lon: 13.41, at: at("08:01:00"), speedKmh: 30 } })
  assert.equal(await stored("EtaUpdated"), [])
})

test("POST /positions - 400 names the exact path of each wrong field; nothing is published", async () => {
  const before = (await stored("PositionReported")).length
  const ok = ping("t-bad", 1, 1, "08:00:00")
  const cases: [unknown, string[]][] = [
    [{ positions: [ok, { ...ok, lat: 91 }] }, ["positions.1.lat"]],
    [{ positions: [{ lat: 1, lon: 1, at: ok.at }] }, ["positions.0.truckId"]],
    [{ positions: [] }, ["positions"]],
    [
      { positions: Array.from({ length: 501 }, (_, i) => ({ ...ok, at: new Date(Date.parse(ok.at) + i * 1000).toISOString() })) },
      ["positions"],
    ],
    [{ positions: [{ ...ok, speedKmh: -1 }] }, ["positions.0.speedKmh"]],
    [{ positions: [ok], extra: 1 }, ["extra"]],
    // a day that does not exist (Date.parse would roll it over to March 2), and ids with control characters
    [{ positions: [ok, { ...ok, at: "2026-02-30T08:00:00Z" }] }, ["positions.1.at"]],
    [{ positions: [{ ...ok, at: "2026-11-25T08:00:00" }] }, ["positions.0.at"]],
    [{ positions: [{ ...ok, truckId: "t\r\nX-Injected: 1" }] }, ["positions.0.truckId"]],
    [{ positions: [{ ...ok, truckId: "t\u0000" }] }, ["positions.0.truckId"]],
    // more than TRACKING_MAX_FUTURE_SKEW_SECONDS (300) ahead: the one ping is named, the batch refused whole
    [
      {
        positions: [
          ok,
          { ...ok, at: at("08:00:01") },
          { ...ok, at: at("08:00:02") },
          { ...ok, at: new Date(Date.now() + 3600_000).toISOString() },
        ],
      },
      ["positions.3.at"],
    ],
  ]
  for (const [body, paths] of cases) {
    const res = await post(body)
    assert.is(res.status, 400, JSON.stringify(body).slice(0, 80))
    const json = (await res.json()) as { status: number; error: string; issues: { path: string; message: string }[] }
    assert.is(json.status, 400)
    assert.is(json.error, "invalid position batch")
    assert.equal(
      json.issues.map((i) => i.path),
      paths,
    )
    assert.ok(json.issues.every((i) => i.message.length > 0))
  }
  assert.is((await post({ positions: [ok] }, "text/plain")).status, 415)
  const big = await fetch(url("/positions"), {
    method: "POST",
    headers: { "content-type": "application/json", ...testAuth().headers.positions },
    body: "x".repeat(600 * 1024),
  })
  assert.is(big.status, 413)
  assert.is((await stored("PositionReported")).length, before)
  // within the skew: a gateway clock a little ahead is no reason to refuse
  const soon = { ...ok, truckId: "t-skew", at: new Date(Date.now() + 240_000).toISOString() }
  assert.is((await post({ positions: [soon] })).status, 202)
})

test("route then pings - the next stop advances and EtaUpdated is emitted only past the threshold", async () => {
  const T = "t-route"
  await publishEvent(js, "RouteCalculated", route(T), { id: `rc:${T}`, source: "logiflow/test" })
  await waitUntil(async () => (await track(T))?.routeId === `route-${T}`, { what: "route projected" })
  // planned ETA 09:10:00 (50 km/h over 33.36 km + 3 × 10 min from 08:00); the threshold is 120 s
  const script = [
    ping(T, 0, 0, "08:00:00"), // on plan (+2 s): nothing
    ping(T, 0, 0.05, "08:06:00"), // 38 s early: nothing
    ping(T, 0, 0.0991, "08:12:00"), // 100 m from A: arrived, next B; 11 min early → EtaUpdated 1
    ping(T, 0, 0.1, "08:22:00"), // left A after its service: 10 min later again → EtaUpdated 2
    ping(T, 0, 0.15, "08:28:40", 3), // standing: average speed, −1 s: nothing
    ping(T, 0, 0.15, "08:29:00", 100), // 100 km/h: 9.7 min earlier → EtaUpdated 3
  ]
  assert.is((await post({ positions: script })).status, 202)
  await waitUntil(async () => (await track(T))?.position?.at === at("08:29:00"), { what: "last ping projected" })
  await settled()
  const etas = (await stored("EtaUpdated", T)).map((e) => e as { id: string; data: EtaUpdated })
  assert.equal(
    etas.map((e) => e.id),
    [`eta:route-${T}:${at("08:12:00")}`, `eta:route-${T}:${at("08:22:00")}`, `eta:route-${T}:${at("08:29:00")}`],
  )
  assert.equal(
    etas.map((e) => e.data.nextStopId),
    ["B", "B", "B"],
  )
  assert.is(etas[0]!.data.previousEta, at("09:10:00"))
  assert.is(etas[1]!.data.previousEta, etas[0]!.data.eta)
  assert.is(etas[2]!.data.previousEta, etas[1]!.data.eta)
  const t = (await track(T))!
  assert.is(t.nextStop, 1)
  assert.is(t.eta, etas[2]!.data.eta)
  const km = 0.15 * KM_PER_DEGREE
  assert.ok(Math.abs(t.remainingKm! - km) < 0.001, `remaining ${t.remainingKm}`)
  assert.ok(Math.abs(Date.parse(t.eta!) - (Date.parse(at("08:29:00")) + (km / 100) * 3_600_000 + 2 * 600_000)) <= 1)

  // a late ping from before the last one: stored nowhere in the projection, no event
  assert.is((await post({ positions: [ping(T, 0, 0, "08:20:00")] })).status, 202)
  await settled()
  assert.equal(await track(T), t)
  assert.is((await stored("EtaUpdated", T)).length, 3)

  // arriving at B, then C, far from plan: two more events, the last one with no next stop
  assert.is((await post({ positions: [ping(T, 0, 0.2, "08:40:00"), ping(T, 0, 0.3, "09:30:00")] })).status, 202)
  await waitUntil(async () => (await track(T))?.position?.at === at("09:30:00"), { what: "arrival projected" })
  await settled()
  const all = (await stored("EtaUpdated", T)).map((e) => e.data as EtaUpdated)
  assert.is(all.length, 5)
  assert.is(all[3]!.nextStopId, "C")
  assert.is(all[4]!.nextStopId, undefined)
  assert.is(all[4]!.remainingKm, 0)
  assert.is((await track(T))!.nextStop, 3)
})

test("duplicate batch - a retried batch is stored once and projected once", async () => {
  const T = "t-dup"
  const batch = { positions: [ping(T, 10, 10, "08:00:00"), ping(T, 10, 10.01, "08:01:00")] }
  for (let i = 0; i < 3; i++) {
    const res = await post(batch)
    assert.is(res.status, 202)
    assert.equal(await res.json(), { accepted: 2 })
  }
  assert.is((await stored("PositionReported", T)).length, 2)
  await settled()
  assert.is((await track(T))!.position!.at, at("08:01:00"))
})

test("KV writes - a moving truck's pings rewrite its record about once a minute, not once per ping", async () => {
  const T = "t-writes"
  await publishEvent(js, "RouteCalculated", route(T, { stops: [{ id: "far", lat: 0, lon: 5 }] }), {
    id: `rc:${T}`,
    source: "logiflow/test",
  })
  await waitUntil(async () => (await track(T))?.routeId === `route-${T}`, { what: "route projected" })
  await settled()
  // every write to the bucket (a put, a create, an update) is one stored message: its last sequence counts them
  const writes = async () => (await jsm.streams.info("KV_tracking-trucks")).state.last_seq
  const before = await writes()
  // 10 minutes of a truck on plan, a ping every 10 s (60 pings), moving toward its one far stop
  const start = Date.parse(at("08:00:00"))
  const pings = Array.from({ length: 60 }, (_, i) => ({
    truckId: T,
    lat: 0,
    lon: (i * 10 * 50) / 3600 / KM_PER_DEGREE,
    speedKmh: 50,
    at: new Date(start + i * 10_000).toISOString(),
  }))
  assert.is((await post({ positions: pings })).status, 202)
  await settled()
  const t = (await track(T))!
  const written = (await writes()) - before
  const emitted = (await stored("EtaUpdated", T)).length
  // the first ping moves the shown ETA from the plan (09:10) to the real one, hours later: one EtaUpdated; on plan
  // from then on, nothing more to show. Writes: that first ping, then one a minute (9 more in 590 s) — not 60
  assert.is(emitted, 1)
  assert.is(written, 10, `${written} writes for 60 pings`)
  assert.is(t.position!.at, new Date(start + 540_000).toISOString())
})

test("NATS unavailable - 503 with Retry-After, bounded when the server hangs; 202 again once it is back", async () => {
  const batch = (hms: string) => ({ positions: [ping("t-outage", 5, 5, hms)] })
  // a frozen server: the socket stays open and acks never come; the publish bound answers instead
  proxy.freeze()
  let frozen: Response
  try {
    frozen = await post(batch("08:00:00"))
  } finally {
    proxy.thaw()
  }
  const body = (await frozen.json()) as { error: string }
  assert.is(frozen.status, 503, JSON.stringify(body))
  assert.is(frozen.headers.get("retry-after"), "2")
  assert.match(body.error, /no acknowledgement within 1500 ms/)

  await server.stop()
  const down = await post(batch("08:01:00"))
  assert.is(down.status, 503)
  assert.ok(Number(down.headers.get("retry-after")) > 0)

  await server.restart()
  await waitUntil(async () => (await post(batch("08:02:00"))).status === 202, { what: "202 after reconnect", every: 250 })
  // the frozen batch was acked late or retried: either way each ping at most once
  const ids = (await stored("PositionReported", "t-outage")).map((e) => e.id)
  assert.equal(
    ids.filter((id) => id.endsWith("08:02:00.000Z")),
    ["pos:t-outage:2026-11-25T08:02:00.000Z"],
  )
  assert.is(new Set(ids).size, ids.length)
})

test.run()
