// The cascade that no longer happens: invoice is kill -9'd under load and routing does not notice; the backlog waits
// in ROUTING, and a restarted invoice drains it into exactly one invoice per route. All real processes: nats-server
// from nats.conf, routing, invoice, tracking and portal under their own users.
//
// What this suite asserts is the outcome (every route 202, nothing lost, nothing twice); the latencies it prints are
// information. How fast routing answers with invoice down, as a ratio to healthy, is measured by
// `npm run bench -- cascade`, side by side with the synchronous chain, where a shared machine's stalls do not fail CI.
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { dlqSubject, type InvoiceGenerated, topology } from "../contracts/mod.ts"
import { DLQ } from "../mesh/dlq.ts"
import { provision } from "../mesh/provision.ts"
import { type Child, connectTo, freePort, sleep, spawnTs, startServer, type TestServer, testAuth, waitUntil, suite } from "./harness.ts"
import { prng } from "../workers/fleet.ts"

const WARMUP = 50
const HEALTHY = 200
const OUTAGE = 500
const CONCURRENCY = 8
const CUSTOMERS = ["acme", "globex", "initech"] as const

const WORKERS = ["routing", "invoice", "tracking", "portal"] as const
type Name = (typeof WORKERS)[number]

const test = suite("cascade")
let server: TestServer
let admin: NatsConnection
let jsm: JetStreamManager
const ports = {} as Record<Name, number>
const children: Child[] = []
let invoice: Child

// --- load -----------------------------------------------------------------------------------------------------

// the fleet simulator's mulberry32: the same request shapes in every run and in both phases
const random = prng(3)
let requests = 0

function routeRequest(customerId: string = CUSTOMERS[Math.floor(random() * CUSTOMERS.length)]!) {
  const i = requests++
  const stops = Array.from({ length: 1 + Math.floor(random() * 4) }, (_, s) => ({
    id: `r${i}-s${s}`,
    lat: 52.4 + random() * 0.2,
    lon: 13.3 + random() * 0.2,
  }))
  return { truckId: `truck-${i % 20}`, customerId, depot: { lat: 52.52, lon: 13.405 }, stops }
}

type Answer = { status: number; routeId: string; ms: number }

async function postRoute(body: object): Promise<Answer> {
  const started = performance.now()
  const res = await fetch(`http://127.0.0.1:${ports.routing}/routes`, {
    method: "POST",
    headers: { "content-type": "application/json", ...testAuth().headers.routes },
    body: JSON.stringify(body),
  })
  const json = (await res.json()) as { routeId?: string }
  return { status: res.status, routeId: json.routeId ?? "", ms: performance.now() - started }
}

/** `count` route requests, `CONCURRENCY` in flight; answers in the order the requests were made. */
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
function percentile(answers: Answer[], q: number): number {
  const sorted = answers.map((a) => a.ms).sort((a, b) => a - b)
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)]!
}
const ms = (x: number) => `${x.toFixed(0)} ms`
const figures = (answers: Answer[]) =>
  `p50 ${ms(percentile(answers, 0.5))}, p99 ${ms(percentile(answers, 0.99))} (${answers.length} requests)`

// --- processes and streams ------------------------------------------------------------------------------------

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

/** GET from a worker; the portal is asked as the customer the query names (acme otherwise), signed in as that one. */
const get = async (name: Name, path: string) => {
  const customer = /[?&]customerId=([^&]+)/.exec(path)?.[1] ?? "acme"
  const headers: Record<string, string> = name === "portal" ? { authorization: `Bearer ${await testAuth().customerToken(customer)}` } : {}
  return fetch(`http://127.0.0.1:${ports[name]}${path}`, { headers })
}

const ready = (name: Name) =>
  waitUntil(
    () =>
      get(name, "/readyz").then(
        (r) => r.status === 200,
        () => false,
      ),
    { what: `${name} /readyz`, timeoutMs: 60_000, every: 100 },
  )

/** Routes the invoice consumer has not acked: not yet delivered, or delivered and not yet acked. */
async function invoicePending(): Promise<number> {
  const info = await jsm.consumers.info("ROUTING", "invoice")
  return info.num_pending + info.num_ack_pending
}

const invoiceIdle = (timeoutMs: number) =>
  waitUntil(async () => (await invoicePending()) === 0, { what: "the invoice consumer to have nothing pending", timeoutMs, every: 100 })

/** Every InvoiceGenerated stored, read by sequence (the stream holds nothing else). */
async function storedInvoices(): Promise<InvoiceGenerated[]> {
  const { state } = await jsm.streams.info("INVOICE")
  const out: InvoiceGenerated[] = []
  for (let seq = state.first_seq; state.messages > 0 && seq <= state.last_seq; seq++) {
    out.push((await jsm.streams.getMessage("INVOICE", { seq }))!.json<InvoiceGenerated>())
  }
  return out
}

async function portalRouteIds(): Promise<string[]> {
  const ids: string[] = []
  for (const c of CUSTOMERS) {
    // every page: the portal answers 200 at most at once
    let cursor: string | null = null
    do {
      const res = await get("portal", `/api/invoices?customerId=${c}&limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`)
      assert.is(res.status, 200)
      const body = (await res.json()) as { invoices: { routeId: string; customerId: string }[]; next: string | null }
      assert.ok(
        body.invoices.every((i) => i.customerId === c),
        `portal lists only ${c}'s invoices for ${c}`,
      )
      ids.push(...body.invoices.map((i) => i.routeId))
      cursor = body.next
    } while (cursor)
  }
  return ids
}

const sorted = (ids: Iterable<string>) => [...ids].sort()

// --- the story: each test continues from the state the previous one left -------------------------------------

/** every route routing accepted, the poison included, in the order it answered them */
const accepted: string[] = []
let poisonId = ""
let postedAfterPoison: string[] = []
let outageDone = false

test.before(async () => {
  server = await startServer({ auth: true })
  admin = await connectTo(server, { user: "admin", pass: server.env.ADMIN_PASSWORD! })
  jsm = await jetstreamManager(admin)
  await provision(admin, topology())
  for (const w of WORKERS) ports[w] = await freePort()
  invoice = spawnWorker("invoice")
  for (const w of WORKERS) if (w !== "invoice") spawnWorker(w)
  await Promise.all(WORKERS.map(ready))
})

test.after(async () => {
  // SIGTERM drains; a child that does not exit in time is killed, so a failed run leaves nothing behind
  await Promise.allSettled(children.map((c) => Promise.race([c.stop("SIGTERM"), sleep(5_000).then(() => c.stop("SIGKILL"))])))
  await admin?.close().catch(() => {})
  await server?.close()
})

test("cascade - invoice killed with -9: every route still answers 202, the portal still answers, the backlog waits in ROUTING", async () => {
  const warmup = await drive(WARMUP)
  // warm-up done and its invoices written: the healthy phase measures steady work, not first-request costs
  await invoiceIdle(30_000)
  const healthy = await drive(HEALTHY)
  for (const a of [...warmup, ...healthy]) assert.is(a.status, 202)
  accepted.push(...[...warmup, ...healthy].map((a) => a.routeId))

  // killed idle, so "pending" and "not yet invoiced" are the same routes: a kill between publish and ack would count
  // a route in both, and keep it from the next instance until ack_wait (30 s) ran out
  await invoiceIdle(30_000)
  assert.is((await jsm.streams.info("INVOICE")).state.messages, accepted.length)
  await invoice.stop("SIGKILL")

  const first = await drive(OUTAGE / 2)
  const poison = await postRoute(routeRequest("nobody"))
  assert.is(poison.status, 202, "routing knows nothing of tariffs")
  poisonId = poison.routeId
  for (const path of ["/api/trucks", "/api/invoices?customerId=acme"]) {
    assert.is((await get("portal", path)).status, 200, `portal ${path} with invoice down`)
  }
  const second = await drive(OUTAGE / 2)
  const outage = [...first, ...second]
  // p99s compared over the same number of requests either side of the kill, so that one stall of a shared machine
  // weighs the same in both; printed, not asserted (see the head of this file)
  const before = percentile(healthy, 0.99)
  const after = percentile(outage.slice(0, HEALTHY), 0.99)
  console.log(`\nhealthy:      ${figures(healthy)}`)
  console.log(
    `invoice down: ${figures(outage)}; first ${HEALTHY} after the kill: p99 ${ms(after)} = ${(after / before).toFixed(2)}× healthy`,
  )
  // a route that waited on invoice would run into routing's publish timeout and answer 503: every one is 202
  for (const a of outage) assert.is(a.status, 202)
  accepted.push(...first.map((a) => a.routeId), poisonId, ...second.map((a) => a.routeId))
  postedAfterPoison = second.map((a) => a.routeId)

  const trucks = await get("portal", "/api/trucks")
  assert.is(trucks.status, 200)
  assert.ok(((await trucks.json()) as { trucks: unknown[] }).trucks.length > 0, "portal still shows trucks")
  const acme = await get("portal", "/api/invoices?customerId=acme")
  assert.is(acme.status, 200)
  assert.ok(((await acme.json()) as { invoices: unknown[] }).invoices.length > 0, "portal still shows the invoices issued before the kill")

  const invoiced = new Set((await storedInvoices()).map((i) => i.routeId))
  const backlog = await invoicePending()
  assert.is(backlog, accepted.filter((id) => !invoiced.has(id)).length, "pending on the invoice consumer == routes not yet invoiced")
  assert.is(backlog, OUTAGE + 1)
  outageDone = true

  console.log(`backlog:      ${backlog} routes pending on the invoice consumer (${OUTAGE} + the poison)`)
})

test("cascade - a restarted invoice drains the backlog: exactly one InvoiceGenerated per accepted route, all on the portal", async () => {
  assert.ok(outageDone, "needs the outage test to have run to its end")
  const restarted = performance.now()
  invoice = spawnWorker("invoice")
  await ready("invoice")
  const readyAt = performance.now()
  await invoiceIdle(60_000)
  const drained = performance.now()
  console.log(`drain:        ${ms(drained - restarted)} from restart to nothing pending (${ms(readyAt - restarted)} of it starting up)`)

  const expected = sorted(accepted.filter((id) => id !== poisonId))
  assert.is(expected.length, WARMUP + HEALTHY + OUTAGE)
  const invoices = await storedInvoices()
  assert.is(invoices.length, expected.length, "as many InvoiceGenerated as routes")
  assert.equal(sorted(invoices.map((i) => i.routeId)), expected, "one per route: none missing, none twice")
  assert.is(new Set(invoices.map((i) => i.invoiceId)).size, invoices.length)

  let listed: string[] = []
  await waitUntil(async () => (listed = await portalRouteIds()).length >= expected.length, {
    what: "the portal to list every invoice",
    timeoutMs: 30_000,
    every: 250,
  }).catch(async (err) => {
    const c = await jsm.consumers.info("INVOICE", "portal")
    throw new Error(
      `${(err as Error).message}: it lists ${listed.length}; its INVOICE consumer has ${c.num_pending} pending, ${c.num_ack_pending} unacked`,
    )
  })
  assert.equal(sorted(listed), expected)
})

test("cascade - the poison route is dead-lettered once as no-tariff and holds up none of the routes behind it", async () => {
  assert.ok(outageDone, "needs the outage test to have run to its end")
  const subject = dlqSubject("ROUTING", "invoice")
  const dlq = await jsm.streams.info("DLQ", { subjects_filter: subject })
  assert.equal(dlq.state.subjects, { [subject]: 1 })
  const entry = (await jsm.streams.getMessage("DLQ", { last_by_subj: subject }))!
  assert.is(entry.header.get(DLQ.reason), "no-tariff")
  assert.is(entry.json<{ routeId: string }>().routeId, poisonId)

  assert.is(postedAfterPoison.length, OUTAGE / 2)
  const invoiced = new Set((await storedInvoices()).map((i) => i.routeId))
  assert.equal(
    postedAfterPoison.filter((id) => !invoiced.has(id)),
    [],
    "every route posted after the poison is invoiced",
  )
  assert.not.ok(invoiced.has(poisonId))
})

test.run()
