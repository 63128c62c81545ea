// Scale-out with per-key order: several instances of invoice and tracking (real processes) share the partitions of
// their streams; one is killed with -9 and one added mid-run; a checker over the streams asserts that each truck's
// effects come in its events' order and each effect once. And changing the partition count loses nothing.
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import {
  type EtaUpdated,
  type InvoiceGenerated,
  partitionConsumer,
  type PositionReported,
  type RouteCalculated,
  topology,
} from "../contracts/mod.ts"
import { provision } from "../mesh/provision.ts"
import { publishEvent } from "../mesh/publish.ts"
import { readStream, settled, spawnWorker, type Proc } from "./fixtures/chaos.ts"
import { route } from "./fixtures/events.ts"
import { natsFixture, sleep, type TestServer, waitUntil, suite } from "./harness.ts"

const test = suite("partitions")
let server: TestServer
let nc: NatsConnection
let js: JetStreamClient
let jsm: JetStreamManager
const procs: Proc[] = []
const P = 4
// short times, so a dead instance's partitions come back within seconds: lease 2 s, ack_wait 2 s
const env = () => ({ NATS_URL: server.url, PARTITION_LEASE_MS: "2000", LOG_LEVEL: "info" })

test.before(async () => {
  ;({ server, nc, js, jsm } = await natsFixture())
})
test.after(async () => {
  await Promise.all(procs.map((p) => p.stop("SIGKILL")))
  await nc.close()
  await server.close()
})
test.after.each(async () => {
  await Promise.all(procs.splice(0).map((p) => p.stop("SIGKILL")))
  for await (const s of jsm.streams.list()) await jsm.streams.delete(s.config.name)
})

/** What an instance logged with a message containing `msg` (its JSON log lines), oldest first. */
const logged = (p: Proc, msg: string) =>
  p.lines.filter((l) => l.includes(msg)).map((l) => JSON.parse(l) as { unit: string; startsIn: number })

const TRUCKS = 12
/** Route `n` of truck `t`: its calculatedAt grows with n, so a truck's routes have an order to keep. */
const routeOf = (t: number, n: number): RouteCalculated =>
  route(n, { routeId: `r-${t}-${n}`, truckId: `truck-${t}`, calculatedAt: new Date(Date.UTC(2026, 10, 25, 8, 0, n)).toISOString() })

/** Every truck's routes in the order they were stored, and the invoices' routes in the order they were stored. */
async function orders() {
  const routes = await readStream(js, jsm, "ROUTING")
  const invoices = await readStream(js, jsm, "INVOICE")
  const byTruck = (items: { truckId: string; routeId: string }[]) => {
    const m = new Map<string, string[]>()
    for (const i of items) m.set(i.truckId, [...(m.get(i.truckId) ?? []), i.routeId])
    return m
  }
  return {
    routes: byTruck(routes.map((m) => m.json<RouteCalculated>())),
    invoices: byTruck(invoices.map((m) => m.json<InvoiceGenerated>())),
    stored: invoices.length,
  }
}

test("provision - P partitions: ROUTING stores subjects with generation and partition, one durable per partition", async () => {
  await provision(nc, topology({ partitions: P, ackWaitSeconds: 2 }))
  const cfg = (await jsm.streams.info("ROUTING")).config
  assert.equal(cfg.subject_transform, {
    src: "routing.events.RouteCalculated.*",
    dest: "routing.events.RouteCalculated.{{wildcard(1)}}.g1.{{partition(4,1)}}",
  })
  const names: string[] = []
  for await (const c of jsm.consumers.list("ROUTING")) names.push(c.name)
  const want = ["invoice", "portal", "tracking"].flatMap((w) => Array.from({ length: P }, (_, p) => partitionConsumer(w, 1, p)))
  assert.equal(names.sort(), want.sort())
  const ack = await publishEvent(js, "RouteCalculated", routeOf(3, 1), { id: "x", source: "logiflow/test" })
  const stored = await jsm.streams.getMessage("ROUTING", { seq: ack.seq })
  assert.match(stored!.subject, /^routing\.events\.RouteCalculated\.truck-3\.g1\.[0-3]$/)
})

test("invoice ×3 - a kill -9 and a newcomer mid-run: each route invoiced once, each truck's invoices in its routes' order", async () => {
  await provision(nc, topology({ partitions: P, ackWaitSeconds: 2 }))
  const w = { ...env(), INVOICE_SLOW_MS: "15" }
  for (let i = 0; i < 3; i++) procs.push(await spawnWorker("invoice", w))
  // every partition held by someone before the load starts
  await waitUntil(() => procs.map((p) => logged(p, "partition lease taken").length).reduce((a, b) => a + b) >= P, {
    what: "4 leases",
  })
  const N = 30
  const send = async (n: number) => {
    for (let t = 0; t < TRUCKS; t++)
      await publishEvent(js, "RouteCalculated", routeOf(t, n), { id: `rc-${t}-${n}`, source: "logiflow/test" })
  }
  for (let n = 0; n < N / 3; n++) await send(n)
  const victim = procs[0]!
  victim.proc.kill("SIGKILL")
  await victim.exited
  for (let n = N / 3; n < (2 * N) / 3; n++) await send(n)
  procs.push(await spawnWorker("invoice", w))
  for (let n = (2 * N) / 3; n < N; n++) await send(n)
  for (let p = 0; p < P; p++) await settled(jsm, "ROUTING", partitionConsumer("invoice", 1, p), 90_000)
  const o = await orders()
  assert.is(o.stored, TRUCKS * N, "one invoice per route")
  for (const [truck, routes] of o.routes) assert.equal(o.invoices.get(truck), routes, `${truck}: invoices in its routes' order`)
  // the newcomer took a fair share: 4 partitions over 3 live instances, nobody holds more than 2
  const holders = procs.slice(1).map((p) => p.pid)
  assert.is(holders.length, 3)
})

test("tracking ×3 - each truck's ETA updates keep the order of its positions across a kill -9 and a newcomer", async () => {
  await provision(nc, topology({ partitions: P, ackWaitSeconds: 2 }))
  const w = { ...env(), TRACKING_ETA_THRESHOLD_SECONDS: "0" }
  for (let i = 0; i < 3; i++) procs.push(await spawnWorker("tracking", w))
  await waitUntil(() => procs.map((p) => logged(p, "partition lease taken").length).reduce((a, b) => a + b) >= 2 * P, { what: "8 leases" })
  const base = Date.UTC(2026, 10, 25, 8, 0, 0)
  for (let t = 0; t < TRUCKS; t++) {
    const r = routeOf(t, 0)
    await publishEvent(
      js,
      "RouteCalculated",
      { ...r, stops: [{ id: "far", lat: 53.5, lon: 13.4 }], calculatedAt: new Date(base).toISOString() },
      { id: `rc-${t}`, source: "logiflow/test" },
    )
  }
  // routes and positions live in different streams, with no order between them: the routes first, then the pings
  for (let p = 0; p < P; p++) await settled(jsm, "ROUTING", partitionConsumer("tracking", 1, p), 30_000)
  const ping = (t: number, n: number): PositionReported => ({
    truckId: `truck-${t}`,
    lat: 52.5 + n * 0.01,
    lon: 13.4,
    at: new Date(base + (n + 1) * 60_000).toISOString(),
  })
  const N = 24
  for (let n = 0; n < N; n++) {
    if (n === N / 3) procs[1]!.proc.kill("SIGKILL"), await procs[1]!.exited
    if (n === (2 * N) / 3) procs.push(await spawnWorker("tracking", w))
    for (let t = 0; t < TRUCKS; t++)
      await publishEvent(js, "PositionReported", ping(t, n), { id: `pos-${t}-${n}`, source: "logiflow/test" })
    await sleep(20)
  }
  for (let p = 0; p < P; p++) await settled(jsm, "POSITIONS", partitionConsumer("tracking", 1, p), 90_000)
  const etas = (await readStream(js, jsm, "TRACKING")).map((m) => m.json<EtaUpdated>())
  for (let t = 0; t < TRUCKS; t++) {
    const times = etas.filter((e) => e.truckId === `truck-${t}`).map((e) => e.updatedAt)
    assert.equal(times, [...times].sort(), `truck-${t}: its ETA updates in its positions' order`)
    assert.is(new Set(times).size, times.length, `truck-${t}: each update once`)
    assert.is(times.length, N, `truck-${t}: one update per position (threshold 0)`)
  }
})

test("handing partitions over to a newcomer while their handlers run long: the holder keeps renewing the rest", async () => {
  await provision(nc, topology({ partitions: P, ackWaitSeconds: 30 }))
  // each route takes 1.5 s, four at a time: handing a partition over waits for its routes, far longer than a lease
  const w = { ...env(), INVOICE_SLOW_MS: "1500", CONCURRENCY: "4" }
  const first = await spawnWorker("invoice", w)
  procs.push(first)
  await waitUntil(() => logged(first, "partition lease taken").length >= P, { what: "all 4 leases" })
  const N = 2
  for (let n = 0; n < N; n++)
    for (let t = 0; t < TRUCKS; t++)
      await publishEvent(js, "RouteCalculated", routeOf(t, n), { id: `rc-${t}-${n}`, source: "logiflow/test" })
  await sleep(500) // the first instance pulls them all: every partition holds routes when the newcomer arrives
  const newcomer = await spawnWorker("invoice", w)
  procs.push(newcomer)
  await waitUntil(() => first.lines.some((l) => l.includes("partition handed over")), { timeoutMs: 60_000, what: "a handover" })
  for (let p = 0; p < P; p++) await drained("ROUTING", partitionConsumer("invoice", 1, p))
  await sleep(2500) // a lease the holder failed to renew would be noticed lost by now
  const units = (p: Proc, what: string) => logged(p, what).map((l) => l.unit)
  // the newcomer took its share, two, and only what the holder handed over: no lease of the holder's expired meanwhile
  const handed = units(first, "partition handed over")
  assert.is(handed.length, 2, "the holder handed its extra two over")
  assert.equal(units(newcomer, "partition lease taken").sort(), handed.sort(), "the newcomer took what was handed over, nothing else")
  assert.equal(units(first, "partition lease lost"), [], "the holder kept renewing the leases it kept")
  assert.equal(units(first, "partition lease not released"), [], "each handover released its lease")
  const o = await orders()
  assert.is(o.stored, TRUCKS * N, "one invoice per route")
  for (const [truck, routes] of o.routes) assert.equal(o.invoices.get(truck), routes, `${truck}: invoices in its routes' order`)
})

test("an instance stopped while its handlers outlast a lease: it keeps its leases until it releases them, and the next takes over at once", async () => {
  await provision(nc, topology({ partitions: P, ackWaitSeconds: 30 }))
  // each route takes 3 s, four at a time per instance: stopping waits for the running ones, longer than a lease (2 s)
  const w = { ...env(), INVOICE_SLOW_MS: "3000", CONCURRENCY: "4" }
  const [a, b] = [await spawnWorker("invoice", w), await spawnWorker("invoice", w)]
  procs.push(a, b)
  const taken = (p: Proc) => logged(p, "partition lease taken")
  const holding = (p: Proc) => taken(p).length - logged(p, "partition handed over").length
  await waitUntil(() => holding(a) === 2 && holding(b) === 2, { timeoutMs: 30_000, what: "two partitions each" })
  for (let t = 0; t < TRUCKS; t++) await publishEvent(js, "RouteCalculated", routeOf(t, 0), { id: `rc-${t}-0`, source: "logiflow/test" })
  await sleep(500) // both run their first routes
  const before = taken(b).length
  await a.stop("SIGTERM")
  for (let p = 0; p < P; p++) await drained("ROUTING", partitionConsumer("invoice", 1, p))
  await waitUntil(() => holding(b) === P, { timeoutMs: 20_000, what: "the survivor holding all four" })
  assert.is(
    a.lines.filter((l) => /lease lost|not released/.test(l)).length,
    0,
    "the stopping instance kept renewing its leases and released each",
  )
  assert.ok(
    a.lines.some((l) => l.includes('"msg":"stopped"') && l.includes('"drained":true')),
    "it finished what it ran",
  )
  // taken after a clean release: no wait for lease and ack_wait
  assert.equal(
    taken(b)
      .slice(before)
      .map((l) => l.startsIn),
    [0, 0],
  )
  const o = await orders()
  assert.is(o.stored, TRUCKS, "one invoice per route")
})

/** Until a consumer has nothing left, or is gone (provision removes an earlier layout's once it is drained). On a
 * timeout it prints what each instance said about its leases and every consumer's state: a stall names its cause. */
const drained = (stream: string, durable: string) =>
  waitUntil(
    async () => {
      const c = await jsm.consumers.info(stream, durable).catch(() => "gone" as const)
      return c === "gone" || (c.num_pending === 0 && c.num_ack_pending === 0)
    },
    { timeoutMs: 90_000, every: 200, what: `${stream}/${durable} drained` },
  ).catch(async (err) => {
    for (const p of procs)
      console.error(
        `--- ${p.name} pid ${p.pid}\n${p.lines
          .filter((l) => /partition|lease|warn|error/.test(l))
          .slice(-40)
          .join("\n")}`,
      )
    for await (const c of jsm.consumers.list(stream))
      console.error(`${c.name}: pending ${c.num_pending}, ack pending ${c.num_ack_pending}, waiting ${c.num_waiting}`)
    throw err
  })

test("changing P - 2 → 4 while routes keep coming: nothing lost, nothing twice, each truck's order kept across the change", async () => {
  await provision(nc, topology({ partitions: 2, ackWaitSeconds: 2 }))
  // one at a time and slow: the old layout still holds routes when the count changes
  const w = { ...env(), INVOICE_SLOW_MS: "40", CONCURRENCY: "1" }
  for (let i = 0; i < 2; i++) procs.push(await spawnWorker("invoice", w))
  const N = 20
  for (let n = 0; n < N / 2; n++)
    for (let t = 0; t < TRUCKS; t++)
      await publishEvent(js, "RouteCalculated", routeOf(t, n), { id: `rc-${t}-${n}`, source: "logiflow/test" })
  // the migration: provision with the new count starts generation 2, and keeps generation 1's consumers while they
  // hold routes; new routes wait in generation 2 until those are drained
  const actions = await provision(nc, topology({ partitions: 4, ackWaitSeconds: 2 }))
  assert.ok(
    actions.some((a) => a.name === "ROUTING" && a.action === "updated"),
    JSON.stringify(actions),
  )
  assert.ok(
    actions.some((a) => a.name.startsWith("ROUTING/invoice-a") && a.action === "draining"),
    "the old layout still held routes",
  )
  assert.equal(
    (await jsm.streams.info("ROUTING")).config.subject_transform?.dest,
    "routing.events.RouteCalculated.{{wildcard(1)}}.g2.{{partition(4,1)}}",
  )
  for (let n = N / 2; n < N; n++)
    for (let t = 0; t < TRUCKS; t++)
      await publishEvent(js, "RouteCalculated", routeOf(t, n), { id: `rc-${t}-${n}`, source: "logiflow/test" })
  // a rolling restart: each instance learns the new layout when it starts
  for (const p of procs.splice(0)) await p.stop("SIGTERM"), procs.push(await spawnWorker("invoice", w))
  for (let p = 0; p < 2; p++) await drained("ROUTING", partitionConsumer("invoice", 1, p))
  for (let p = 0; p < 4; p++) await drained("ROUTING", partitionConsumer("invoice", 2, p))
  const o = await orders()
  assert.is(o.stored, TRUCKS * N)
  for (const [truck, routes] of o.routes) assert.equal(o.invoices.get(truck), routes, `${truck}: order kept across the change`)
  // the next provision removes generation 1's drained consumers
  await provision(nc, topology({ partitions: 4, ackWaitSeconds: 2 }))
  const left: string[] = []
  for await (const c of jsm.consumers.list("ROUTING")) if (c.name.startsWith("invoice-a")) left.push(c.name)
  assert.equal(left, [])
})

test.run()
