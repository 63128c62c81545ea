// workers/invoice.ts as its own process against a real nats-server: exact cents, one invoice per routeId through
// redeliveries, kill -9 and injected failures, and no-tariff routes dead-lettered without blocking the rest.
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import * as assert from "uvu/assert"
import { type InvoiceGenerated, type RouteCalculated, topology } from "../contracts/mod.ts"
import { DLQ } from "../mesh/dlq.ts"
import { provision } from "../mesh/provision.ts"
import { publishEvent } from "../mesh/publish.ts"
import { type Child, freePort, natsFixture, spawnTs, type TestServer, waitUntil, suite } from "./harness.ts"
import { route } from "./fixtures/events.ts"

const test = suite("invoice")
let server: TestServer
let nc: NatsConnection
let js: JetStreamClient
let jsm: JetStreamManager
let child: Child | undefined

// a short ack_wait brings back what a killed process held within seconds instead of 30
const ACK_WAIT_SECONDS = 2

async function startInvoice(env: Record<string, string> = {}): Promise<Child> {
  await child?.stop()
  child = spawnTs("workers/invoice.ts", { NATS_URL: server.url, INVOICE_PORT: String(await freePort()), ...env })
  await child.waitFor(/"msg":"ready"/)
  return child
}

test.before(async () => {
  ;({ server, nc, js, jsm } = await natsFixture())
  await provision(nc, topology({ ackWaitSeconds: ACK_WAIT_SECONDS }))
  await startInvoice()
})
test.after(async () => {
  await child?.stop()
  await nc.close()
  await server.close()
})

const publishRoute = (r: RouteCalculated, id = `routing:${r.routeId}`) =>
  publishEvent(js, "RouteCalculated", r, { id, source: "logiflow/test" })

async function all(stream: string) {
  const info = await jsm.streams.info(stream)
  const out = []
  for (let seq = info.state.first_seq; info.state.messages > 0 && seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null)
    if (m) out.push(m)
  }
  return out
}

async function invoices(prefix: string) {
  return (await all("INVOICE"))
    .map((m) => ({
      msgId: m.header.get("Nats-Msg-Id"),
      key: m.header.get("ce-subject"),
      subject: m.subject,
      data: m.json<InvoiceGenerated>(),
    }))
    .filter((i) => i.data.routeId.startsWith(prefix))
}

/** Until the invoice consumer has nothing left to deliver or ack: whatever it was going to publish, it has. */
const settled = () =>
  waitUntil(
    async () => {
      const c = await jsm.consumers.info("ROUTING", "invoice")
      return c.num_pending === 0 && c.num_ack_pending === 0 ? c : null
    },
    { timeoutMs: 25_000, what: "the invoice consumer to settle" },
  )

test("prices every route once, in exact cents, keyed by route, on the route's subject, msg id invoice:<routeId>", async () => {
  const customers = ["acme", "globex", "initech"] as const
  const routes = Array.from({ length: 30 }, (_, i) => route(i, { routeId: `price-${i}`, customerId: customers[i % 3]! }))
  for (const r of routes) await publishRoute(r)
  const got = await waitUntil(async () => ((await invoices("price-")).length >= 30 ? invoices("price-") : null), { what: "30 invoices" })
  await settled()
  assert.is((await invoices("price-")).length, 30)
  // 12.5 km and 2 stops each: acme 4500 + 1500 + 2·800; globex 6000 + 1188 (1187.5 rounded) + 2·1250; initech 3000 + 1875 + 2·500
  const expected = {
    acme: [7600, "EUR", [4500, 1500, 1600]],
    globex: [9688, "USD", [6000, 1188, 2500]],
    initech: [5875, "EUR", [3000, 1875, 1000]],
  }
  const byRoute = new Map(got.map((i) => [i.data.routeId, i]))
  assert.is(byRoute.size, 30)
  for (const r of routes) {
    const inv = byRoute.get(r.routeId)!
    const [total, currency, lines] = expected[r.customerId as keyof typeof expected]
    assert.is(inv.data.totalCents, total, r.routeId)
    assert.is(inv.data.currency, currency)
    assert.equal(
      inv.data.lines.map((l) => l.amountCents),
      lines,
    )
    assert.equal(
      inv.data.lines.map((l) => l.description),
      ["Base fee", "Distance 12.5 km", "Stops × 2"],
    )
    assert.is(inv.data.truckId, r.truckId)
    assert.is(inv.data.customerId, r.customerId)
    assert.is(inv.msgId, `invoice:${r.routeId}`)
    assert.is(inv.key, r.routeId)
    assert.is(inv.subject, `invoice.events.InvoiceGenerated.${r.routeId}`)
  }
  assert.is(new Set(got.map((i) => i.data.invoiceId)).size, 30, "invoice ids are unique")
})

test("a redelivered route (same routeId, another msg id) still yields one invoice: the first one", async () => {
  const r = route(1, { routeId: "redeliver-1" })
  await publishRoute(r)
  const [first] = await waitUntil(async () => ((await invoices("redeliver-")).length === 1 ? invoices("redeliver-") : null), {
    what: "the first invoice",
  })
  const ack = await publishRoute(r, "routing:redeliver-1:again")
  assert.is(ack.duplicate, false, "the route itself is stored twice")
  await settled()
  const got = await invoices("redeliver-")
  assert.is(got.length, 1)
  assert.equal(got[0]!.data, first!.data, "the first invoice stands: same invoiceId, same issuedAt")
})

test("past the duplicate window - a route arriving again later (a retry, a replay) is still not billed twice", async () => {
  // a 1 s window instead of 120 s: the second arrival falls outside it, where the msg id no longer dedupes
  await jsm.streams.update("INVOICE", { ...(await jsm.streams.info("INVOICE")).config, duplicate_window: 1_000_000_000 })
  await jsm.streams.update("ROUTING", { ...(await jsm.streams.info("ROUTING")).config, duplicate_window: 1_000_000_000 })
  try {
    const r = route(2, { routeId: "late-1" })
    await publishRoute(r)
    const [first] = await waitUntil(async () => ((await invoices("late-")).length === 1 ? invoices("late-") : null), {
      what: "the first invoice",
    })
    await new Promise((res) => setTimeout(res, 1500))
    // the very same event again (same msg id): outside the window the stream stores it, and invoice prices it again
    assert.is((await publishRoute(r)).duplicate, false)
    await settled()
    assert.equal(
      (await invoices("late-")).map((i) => i.data),
      [first!.data],
    )
  } finally {
    for (const s of ["INVOICE", "ROUTING"])
      await jsm.streams.update(s, { ...(await jsm.streams.info(s)).config, duplicate_window: 120_000_000_000 })
  }
})

test("customer without a tariff - one DLQ entry with reason no-tariff; the routes behind it are invoiced", async () => {
  const before = (await all("DLQ")).length
  await publishRoute(route(1, { routeId: "dlq-1", truckId: "truck-dlq" }))
  await publishRoute(route(2, { routeId: "dlq-nobody", truckId: "truck-dlq", customerId: "nobody" }))
  await publishRoute(route(3, { routeId: "dlq-3", truckId: "truck-dlq" }))
  await waitUntil(async () => (await invoices("dlq-")).length === 2, { what: "the two invoices around the dead letter" })
  await settled()
  assert.equal((await invoices("dlq-")).map((i) => i.data.routeId).sort(), ["dlq-1", "dlq-3"])
  const entries = (await all("DLQ")).slice(before)
  assert.is(entries.length, 1)
  const e = entries[0]!
  assert.is(e.subject, "dlq.ROUTING.invoice")
  assert.is(e.header.get(DLQ.reason), "no-tariff")
  assert.is(e.header.get(DLQ.error), 'no tariff for customer "nobody"')
  assert.is(e.header.get(DLQ.deliveries), "1")
  assert.is(e.json<RouteCalculated>().routeId, "dlq-nobody")
})

test("kill -9 mid-stream, then a restart - still exactly one invoice per routeId", async () => {
  const n = 300
  // slow handlers make sure many events are in flight (priced or not, published or not) when the process dies
  await startInvoice({ INVOICE_SLOW_MS: "40" })
  for (let i = 0; i < n; i++) await publishRoute(route(i, { routeId: `crash-${i}` }))
  await waitUntil(async () => (await invoices("crash-")).length >= 40, { timeoutMs: 15_000, what: "some invoices before the kill" })
  child!.proc.kill("SIGKILL")
  assert.is(await child!.exited, null, "killed, not exited")
  const atKill = (await invoices("crash-")).length
  assert.ok(atKill < n, `the kill came mid-stream (${atKill}/${n} invoiced)`)

  await startInvoice()
  await waitUntil(async () => (await invoices("crash-")).length >= n, { timeoutMs: 30_000, what: `${n} invoices after the restart` })
  await settled()
  const got = await invoices("crash-")
  assert.is(got.length, n)
  assert.is(new Set(got.map((i) => i.data.routeId)).size, n)
  assert.is(new Set(got.map((i) => i.data.invoiceId)).size, n)
})

test("INVOICE_FAIL_RATE - transient failures are retried, each route is still invoiced once", async () => {
  await startInvoice({ INVOICE_FAIL_RATE: "0.3" })
  const dlqBefore = (await all("DLQ")).length
  for (let i = 0; i < 20; i++) await publishRoute(route(i, { routeId: `flaky-${i}` }))
  await settled()
  const got = await invoices("flaky-")
  const deadLettered = (await all("DLQ")).slice(dlqBefore).map((m) => m.json<RouteCalculated>().routeId)
  // 0.3⁵ ≈ 0.2 %: a route may run out of deliveries, and then it is dead-lettered, never invoiced as well
  assert.is(got.length + deadLettered.length, 20)
  assert.is(new Set([...got.map((i) => i.data.routeId), ...deadLettered]).size, 20)
  assert.ok(
    child!.lines.some((l) => l.includes("injected transient failure")),
    "failures were injected",
  )
  await startInvoice()
})

test("INVOICE_CRASH_ON_START=1 - exits 1 before touching NATS", async () => {
  const crashing = spawnTs("workers/invoice.ts", {
    NATS_URL: server.url,
    INVOICE_PORT: String(await freePort()),
    INVOICE_CRASH_ON_START: "1",
  })
  assert.is(await crashing.exited, 1)
  assert.ok(
    crashing.lines.some((l) => l.includes("INVOICE_CRASH_ON_START=1")),
    crashing.lines.join("\n"),
  )
  assert.not.ok(crashing.lines.some((l) => l.includes("nats connected")))
})

test("a bad INVOICE_TARIFFS stops the worker at start with the field that is wrong", async () => {
  const bad = spawnTs("workers/invoice.ts", {
    NATS_URL: server.url,
    INVOICE_PORT: String(await freePort()),
    INVOICE_TARIFFS: JSON.stringify({ acme: { baseCents: 1, perKmCents: 1, perStopCents: 1, currency: "eur" } }),
  })
  assert.is.not(await bad.exited, 0)
  assert.ok(
    bad.lines.some((l) => l.includes("INVOICE_TARIFFS.acme.currency")),
    bad.lines.join("\n"),
  )
})

test.run()
