// Issue 3, "the cascade that no longer happens": invoice is kill -9'd under load and routing does not notice; the
// backlog waits in ROUTING, and a restarted invoice drains it into exactly one invoice per route. All real processes:
// nats-server from nats.conf, routing, invoice, tracking and portal under their own users.
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import { suite } from "uvu"
import * as assert from "uvu/assert"
import { dlqSubject, type InvoiceGenerated, topology } from "../contracts/mod.ts"
import { DLQ } from "../mesh/dlq.ts"
import { provision } from "../mesh/provision.ts"
import { type Child, connectTo, freePort, spawnTs, startServer, type TestServer, waitUntil } from "./harness.ts"

const WARMUP = 50
const HEALTHY = 200
const OUTAGE = 500
const CONCURRENCY = 8
const CUSTOMERS = ["acme", "globex", "initech"] as const
// the bound: loose on purpose, it catches routing waiting on invoice (seconds), not jitter
const P99_BOUND = 1.5

const test = suite("cascade")
let server: TestServer
let admin: NatsConnection
let jsm: JetStreamManager
const children: Child[] = []
let invoice: Child
const WORKERS = ["routing", "invoice", "tracking", "portal"] as const
type Name = (typeof WORKERS)[number]
const ports = {} as Record<Name, number>

/** mulberry32: the same request shapes every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const random = rng(3)
const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!

let n = 0
function routeRequest(customerId: string = pick(CUSTOMERS)) {
  const i = n++
  const stops = Array.from({ length: 1 + Math.floor(random() * 4) }, (_, s) => ({
    id: `r${i}-s${s}`,
    lat: 52.4 + random() * 0.2,
    lon: 13.3 + random() * 0.2,
  }))
  return { truckId: `truck-${i % 20}`, customerId, depot: { lat: 52.52, lon: 13.405 }, stops }
}

type Answer = { status: number; routeId?: string; ms: number }

async function postRoute(body: object): Promise<Answer> {
  const started = performance.now()
  const res = await fetch(`http://127.0.0.1:${ports.routing}/routes`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  })
  const json = (await res.json()) as { routeId?: string }
  return { status: res.status, routeId: json.routeId, ms: performance.now() - started }
}

/** `count` route requests, `CONCURRENCY` at a time; answers in the order they were sent. */
async function drive(count: number): Promise<Answer[]> {
  const bodies = Array.from({ length: count }, () => routeRequest())
  const answers: Answer[] = new Array(count)
  let next = 0
  const lane = async () => {
    while (next < count) {
      const i = next++
      answers[i] = await postRoute(bodies[i]!)
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, lane))
  return answers
}

/** nearest rank */
function percentile(xs: number[], q: number): number {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)]!
}
const figures = (answers: Answer[]) => {
  const ms = answers.map((a) => a.ms)
  return { p50: percentile(ms, 0.5), p99: percentile(ms, 0.99), max: Math.max(...ms) }
}
const fmt = (x: number) => `${x.toFixed(1)} ms`

const get = (port: number, path: string) => fetch(`http://127.0.0.1:${port}${path}`)

function spawnWorker(name: Name): Child {
  const child = spawnTs(`workers/${name}.ts`, {
    NATS_URL: server.url,
    NATS_USER: name,
    NATS_PASSWORD: server.env[`${name.toUpperCase()}_PASSWORD`],
    [`${name.toUpperCase()}_PORT`]: String(ports[name]),
    LOG_LEVEL: "warn",
  })
  children.push(child)
  return child
}

const ready = (name: Name) =>
  waitUntil(() => get(ports[name], "/readyz").then((r) => r.status === 200, () => false), { what: `${name} /readyz`, timeoutMs: 60_000 })

async function invoicePending(): Promise<number> {
  const info = await jsm.consumers.info("ROUTING", "invoice")
  return info.num_pending + info.num_ack_pending
}

/** Every InvoiceGenerated stored, read by sequence (the stream holds nothing else). */
async function storedInvoices(): Promise<InvoiceGenerated[]> {
  const { state } = await jsm.streams.info("INVOICE")
  const out: InvoiceGenerated[] = []
  for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
    out.push((await jsm.streams.getMessage("INVOICE", { seq }))!.json<InvoiceGenerated>())
  }
  return out
}

async function portalRouteIds(): Promise<string[]> {
  const ids: string[] = []
  for (const c of CUSTOMERS) {
    const res = await get(ports.portal, `/api/invoices?customerId=${c}`)
    const body = (await res.json()) as { invoices: { routeId: string; customerId: string }[] }
    assert.ok(body.invoices.every((i) => i.customerId === c), `portal lists only ${c}'s invoices`)
    ids.push(...body.invoices.map((i) => i.routeId))
  }
  return ids
}

const sameSet = (a: Iterable<string>, b: Iterable<string>) => assert.equal([...new Set(a)].sort(), [...new Set(b)].sort())

// shared by the tests below, which run in order, each on the state the previous one left
const answered: string[] = []
let healthy: Answer[] = []
let outage: Answer[] = []
let poisonId = ""
let afterPoison: string[] = []

test.before(async () => {
  server = await startServer({ auth: true })
  admin = await connectTo(server, { user: "admin", pass: server.env.ADMIN_PASSWORD! })
  jsm = await jetstreamManager(admin)
  await provision(admin, topology())
  for (const w of WORKERS) ports[w] = await freePort()
  invoice = spawnWorker("invoice")
  for (const w of ["routing", "tracking", "portal"] as const) spawnWorker(w)
  await Promise.all(WORKERS.map(ready))
})

test.after(async () => {
  await Promise.allSettled(children.map((c) => c.stop("SIGKILL")))
  await admin?.close().catch(() => {})
  await server?.close()
})

test("cascade - invoice killed with -9: routing answers every request with 202, as fast as when healthy; the backlog waits in ROUTING", async () => {
  const warmup = await drive(WARMUP)
  healthy = await drive(HEALTHY)
  for (const a of [...warmup, ...healthy]) assert.is(a.status, 202)
  answered.push(...[...warmup, ...healthy].map((a) => a.routeId!))
  // killed idle, so "pending" and "not yet invoiced" are the same routes (a kill between publish and ack would
  // count one route in both, and leave it for ack_wait before the new invoice gets it)
  await waitUntil(async () => (await invoicePending()) === 0, { what: "invoice caught up before the kill", timeoutMs: 30_000 })
  assert.is((await jsm.streams.info("INVOICE")).state.messages, answered.length)
  await invoice.stop("SIGKILL")

  const first = await drive(OUTAGE / 2)
  const poison = await postRoute(routeRequest("nobody"))
  assert.is(poison.status, 202, "routing does not know about tariffs")
  poisonId = poison.routeId!
  for (const path of ["/api/trucks", "/api/invoices?customerId=acme"]) assert.is((await get(ports.portal, path)).status, 200, `portal ${path} during the outage`)
  const second = await drive(OUTAGE / 2)
  outage = [...first, ...second]
  for (const a of outage) assert.is(a.status, 202)
  answered.push(...first.map((a) => a.routeId!), poisonId, ...second.map((a) => a.routeId!))
  afterPoison = second.map((a) => a.routeId!)

  const trucks = await get(ports.portal, "/api/trucks")
  assert.is(trucks.status, 200)
  assert.ok(((await trucks.json()) as { trucks: unknown[] }).trucks.length > 0, "portal still shows trucks")
  const acme = await get(ports.portal, "/api/invoices?customerId=acme")
  assert.is(acme.status, 200)

  const invoiced = (await storedInvoices()).length
  const backlog = await invoicePending()
  assert.is(backlog, answered.length - invoiced, "pending on the invoice consumer == routes not yet invoiced")
  assert.is(backlog, OUTAGE + 1)

  const h = figures(healthy)
  const o = figures(outage)
  console.log(`healthy (${HEALTHY} req, c=${CONCURRENCY}): p50 ${fmt(h.p50)}, p99 ${fmt(h.p99)}, max ${fmt(h.max)}`)
  console.log(`invoice down (${OUTAGE} req, c=${CONCURRENCY}): p50 ${fmt(o.p50)}, p99 ${fmt(o.p99)}, max ${fmt(o.max)} (${(o.p99 / h.p99).toFixed(2)}× healthy p99)`)
  console.log(`backlog at the end of the outage: ${backlog} routes`)
  assert.ok(o.p99 <= P99_BOUND * h.p99, `p99 with invoice down ${fmt(o.p99)} within ${P99_BOUND}× healthy ${fmt(h.p99)}`)
})

test("cascade - a restarted invoice drains the backlog: exactly one InvoiceGenerated per route, all on the portal", async () => {
  const started = performance.now()
  invoice = spawnWorker("invoice")
  await ready("invoice")
  await waitUntil(async () => (await invoicePending()) === 0, { what: "the backlog drained", timeoutMs: 60_000 })
  console.log(`backlog drained ${fmt(performance.now() - started)} after the restart (start-up included)`)

  const expected = answered.filter((id) => id !== poisonId)
  const invoices = await storedInvoices()
  assert.is(invoices.length, expected.length, "one InvoiceGenerated per route, none twice")
  assert.is(new Set(invoices.map((i) => i.routeId)).size, expected.length, "no route invoiced twice")
  sameSet(invoices.map((i) => i.routeId), expected)
  assert.is(new Set(invoices.map((i) => i.invoiceId)).size, invoices.length)

  let seen = 0
  const listed = await waitUntil(async () => {
    const ids = await portalRouteIds()
    seen = ids.length
    return ids.length >= expected.length ? ids : null
  }, { what: "portal lists every invoice", timeoutMs: 30_000, every: 250 }).catch(async (err) => {
    const c = await jsm.consumers.info("INVOICE", "portal")
    throw new Error(`${(err as Error).message}; portal lists ${seen}, its INVOICE consumer: pending ${c.num_pending}, ack pending ${c.num_ack_pending}, redelivered ${c.num_redelivered}`)
  })
  assert.is(listed.length, expected.length)
  sameSet(listed, expected)
})

test("cascade - the poison route is dead-lettered once as no-tariff and blocks none behind it", async () => {
  const dlq = await jsm.streams.info("DLQ", { subjects_filter: dlqSubject("ROUTING", "invoice") })
  assert.equal(dlq.state.subjects, { [dlqSubject("ROUTING", "invoice")]: 1 })
  const entry = (await jsm.streams.getMessage("DLQ", { last_by_subj: dlqSubject("ROUTING", "invoice") }))!
  assert.is(entry.header.get(DLQ.reason), "no-tariff")
  assert.is(entry.json<{ routeId: string }>().routeId, poisonId)
  assert.is(afterPoison.length, OUTAGE / 2)
  const invoiced = new Set((await storedInvoices()).map((i) => i.routeId))
  assert.ok(afterPoison.every((id) => invoiced.has(id)), "every route posted after the poison is invoiced")
  assert.not.ok(invoiced.has(poisonId))
})

test.run()
